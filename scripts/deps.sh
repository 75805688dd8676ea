#!/bin/sh
# Install the Debian 12 packages cxapi needs to build, run and test, if missing.
set -e
PKGS="meson ninja-build gcc pkg-config libuv1-dev libssl-dev openssl libexpat1-dev
 libjansson-dev libsqlite3-dev sqlite3 libpam0g-dev libpam-pwdfile uuid-dev libcrypt-dev
 libcmocka-dev libhttp-parser-dev python3 python3-pytest python3-os-xenapi
 clang libclang-rt-14-dev wrk curl
 xenstore-utils xen-utils-4.17 libxen-dev
 qemu-utils python3-libvhdi"
# qemu-utils (qemu-img, format "vpc") and python3-libvhdi (pyvhdi): the
# independent VHD readers of tests/integration/test_vhd_tools.py.
# xenstore-utils, xen-utils-4.17, libxen-dev: Debian's xenstore clients,
# daemons (the reference peers, run through tests/xs/peer.sh) and libxenstore,
# for tests/integration/test_xenstored.py and bench/.  xen-utils-4.17 pulls in
# the hypervisor package; its postinst's "Can't find hypervisor information in
# sysfs" error is harmless, and nothing is started.
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Node.js and npm for the tests that drive cxapi with Xen Orchestra's client
# (tests/xo; xen-api 4.7.6 needs node >= 18.17, Debian 12's nodejs is 18.20).
# Checked by command, not by package: a node from elsewhere (e.g. nodesource's
# nodejs, which bundles npm) must not be replaced by Debian's.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
	echo "installing:$missing"
	SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
