/* templates.c — the built-in VM templates a fresh host carries.
 *
 * On a real host these come from the guest-templates package, imported at
 * first boot; here they are a table that seed.c turns into VM rows.  The names
 * are the real ones (clients and scripts look templates up by name); the
 * UUIDs are our own fixed constants, so a template keeps its UUID across
 * installs as the original's do.  Values follow the guest-templates
 * conventions: Linux guests boot "cdn" with std VGA, Windows guests boot "dc"
 * with 2 vCPUs, Viridian and the vendor device.
 */
#include "xapi/seed.h"

#define LINUX_DESC "Template for installing a Linux distribution from CD or a network " \
	"repository (set other-config:install-repository to http://<server>/<path> or " \
	"nfs:<server>:/<path>)."
#define WINDOWS_DESC "Template for installing Windows from install media; new VMs get the " \
	"recommended platform settings."
#define NETINST "cdrom,nfs,http,ftp"

const struct seed_template seed_templates[] = {
	/* uuid, name, description, reference_label,
	 * linux, windows, uefi, secureboot, supports_uefi, supports_secure_boot,
	 * min_memory_mib, max_memory_gib, vcpus, vcpus_min, vcpus_max, disk_gib,
	 * install_methods, user_version */
	{"bd871e43-db4b-4e96-b036-14e1277e8e25", "Other install media",
	 "Template for installing any operating system from install media", "other-install-media",
	 false, false, false, "false", false, false,
	 128, 128, 1, 0, 32, 0, "cdrom", 2},
	{"3f6a795e-5b7c-4b52-822f-7239061a88ee", "Debian Bookworm 12", LINUX_DESC, "debian-12",
	 true, false, true, "auto", true, true,
	 1024, 1536, 1, 0, 32, 10, NETINST, 1},
	{"257c6b3f-a529-4142-9599-af440ce7f7ad", "Debian Bullseye 11", LINUX_DESC, "debian-11",
	 true, false, true, "auto", true, true,
	 512, 1536, 1, 0, 32, 10, NETINST, 1},
	{"0a283171-dda0-40d7-97ec-e8904ff02aaa", "Ubuntu Jammy Jellyfish 22.04", LINUX_DESC, "ubuntu-22.04",
	 true, false, true, "auto", true, true,
	 1024, 1536, 1, 0, 32, 10, "cdrom,http,ftp", 1},
	{"152560f0-b4dd-4f15-9cdb-36513a6910ad", "Ubuntu Noble Numbat 24.04", LINUX_DESC, "ubuntu-24.04",
	 true, false, true, "auto", true, true,
	 1024, 1536, 1, 0, 32, 10, "cdrom,http,ftp", 1},
	{"ed04477b-e2e3-442f-8da6-5175a7f0ddd3", "CentOS Stream 9", LINUX_DESC, "centos-stream-9",
	 true, false, true, "auto", true, true,
	 1024, 1536, 1, 0, 32, 10, NETINST, 1},
	{"3cce9ea5-7f85-4009-a10e-68c9d7a8037b", "AlmaLinux 9", LINUX_DESC, "almalinux-9",
	 true, false, true, "auto", true, true,
	 1024, 1536, 1, 0, 32, 10, NETINST, 1},
	{"2aa90f01-2e7a-4561-b1de-56d4f138f894", "Rocky Linux 9", LINUX_DESC, "rockylinux-9",
	 true, false, true, "auto", true, true,
	 1024, 1536, 1, 0, 32, 10, NETINST, 1},
	{"1913a5f0-a8c9-4a2b-aafb-2ae3fbcb7096", "Red Hat Enterprise Linux 9", LINUX_DESC, "rhel-9",
	 true, false, true, "auto", true, true,
	 1024, 1536, 1, 0, 32, 10, NETINST, 1},
	{"5ed22bbb-5327-484b-93a4-8978b84e4db5", "Oracle Linux 8", LINUX_DESC, "oracle-8",
	 true, false, true, "auto", true, true,
	 1024, 1536, 1, 0, 32, 10, NETINST, 1},
	{"d0977984-c056-4c07-bf9b-1a3e6424ce29", "SUSE Linux Enterprise 15 (64-bit)", LINUX_DESC, "sle-15",
	 true, false, true, "auto", true, true,
	 1024, 1536, 1, 0, 32, 10, NETINST, 1},
	{"7dc7214d-1331-43b3-b30a-5e09c6a2312f", "Windows 10 (64-bit)", WINDOWS_DESC, "windows-10",
	 false, true, false, "false", true, true,
	 2048, 1536, 2, 0, 32, 32, "cdrom", 1},
	{"1ddc3a05-d8d0-44c1-9ddd-8c3a300495f9", "Windows 11", WINDOWS_DESC, "windows-11",
	 false, true, true, "true", true, true,
	 2048, 1536, 2, 2, 32, 64, "cdrom", 1},
	{"696ef3eb-24a7-4a55-be3d-3b4ce4741be8", "Windows Server 2019 (64-bit)", WINDOWS_DESC,
	 "windows-server-2019",
	 false, true, false, "false", true, true,
	 2048, 1536, 2, 0, 32, 32, "cdrom", 1},
	{"2040d942-9429-4bb2-9960-2923714183a5", "Windows Server 2022 (64-bit)", WINDOWS_DESC,
	 "windows-server-2022",
	 false, true, true, "true", true, true,
	 2048, 1536, 2, 2, 32, 32, "cdrom", 1},
	{"0eeb0917-4da4-4f46-a77f-aa5e659c36e6", "Windows Server 2025", WINDOWS_DESC,
	 "windows-server-2025",
	 false, true, true, "true", true, true,
	 2048, 1536, 2, 2, 32, 32, "cdrom", 1},
};

const int seed_ntemplates = (int)(sizeof(seed_templates) / sizeof(seed_templates[0]));
