#!/bin/bash
# tests/xen/record-tree.sh [FIXTURE_DIR]
#
# Records, from a real Xen 4.17 host, the xenstore tree that xl/libxl write
# for a small PV guest (one disk, one NIC, 2 vCPUs, 64/128 MiB, PV console)
# and stores it as the fixture tests/fixtures/xen-4.17/ (or FIXTURE_DIR).
# Run by hand, once: NOT part of `make test` (it needs network access to the
# Debian archive and takes a few minutes of CPU under emulation).
#
# How: everything is taken from Debian 12 packages fetched with
# `apt-get download` and unpacked with `dpkg -x` into a scratch directory
# (nothing is installed on this machine). From them we assemble
#   - xen         the hypervisor (multiboot ELF, loaded by QEMU -kernel)
#   - vmlinux     the Debian kernel uncompressed: dom0 kernel, and (gzip'd)
#                 the guest kernel
#   - dom0.cpio.gz   busybox + bash + xl/libxl/xenstored/xenconsoled, the
#                 hotplug scripts of xen-utils-common, backend modules
#                 (blkback, netback, loop, bridge) and the guest's files
# and boot it in QEMU (TCG; the emulated CPU must offer SVM+NPT for Xen to
# enable HVM, not needed for PV but harmless). dom0's /init
# (dom0-init.sh) starts xenstored, xen-init-dom0 and xenconsoled, then runs
# record-in-dom0.sh, which writes its results into a host directory shared
# over virtio-9p. This script then copies them into FIXTURE_DIR.
#
# Needs on the host: apt (with Debian bookworm lists), dpkg-deb, cpio, gzip,
# xz, lz4, python3, ldd, qemu-system-x86_64 (apt-get install qemu-system-x86 cpio xz-utils).
# Environment:
#   CXREC_WORK     scratch directory (default /tmp/cxapi-xen-record; ~500 MB
#                  while building, the .debs are kept there as a cache)
#   CXREC_KERNEL   dom0 kernel package (default: what linux-image-amd64
#                  depends on)
#   CXREC_GUEST_KERNEL  guest kernel package (default: the cloud flavour of
#                  the same version)
#   CXREC_TIMEOUT  seconds before QEMU is killed (default 900)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
FIX=$(realpath -m "${1:-$HERE/../fixtures/xen-4.17}")
WORK=$(realpath -m "${CXREC_WORK:-/tmp/cxapi-xen-record}")
TIMEOUT=${CXREC_TIMEOUT:-900}
XV=4.17
case $WORK in *,*) echo "record-tree: CXREC_WORK must not contain a comma" >&2; exit 2 ;; esac
note() { echo "record-tree: $*" >&2; }

# ---------------------------------------------------------------- packages
KPKG=${CXREC_KERNEL:-$(apt-cache depends linux-image-amd64 2>/dev/null |
                       awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')}
[ -n "$KPKG" ] || { note "no kernel package found (apt-get update first?)"; exit 1; }
# The guest runs Debian's cloud kernel flavour of the same version: the
# generic kernel's image spans 58 MiB and does not fit a 64 MiB guest.
GPKG=${CXREC_GUEST_KERNEL:-${KPKG%-amd64}-cloud-amd64}
PKGS=(xen-hypervisor-$XV-amd64 xen-utils-$XV xen-utils-common xenstore-utils
      libxenmisc$XV libxenstore4 libxencall1 libxenevtchn1 libxenforeignmemory1
      libxengnttab1 libxentoollog1 libxentoolcore1 libxendevicemodel1
      libxenhypfs1 libyajl2 busybox-static "$KPKG" "$GPKG")
mkdir -p "$WORK/debs"
for p in "${PKGS[@]}"; do
    compgen -G "$WORK/debs/${p}_*.deb" >/dev/null && continue
    note "downloading $p"
    (cd "$WORK/debs" && apt-get download -q "$p" >/dev/null 2>&1) || true
    compgen -G "$WORK/debs/${p}_*.deb" >/dev/null || { note "cannot download $p"; exit 1; }
done

EX=$WORK/unpacked
rm -rf "$EX"; mkdir -p "$EX"
: > "$WORK/versions.txt"
for p in "${PKGS[@]}"; do
    deb=$(ls "$WORK/debs/${p}_"*.deb | sort -V | tail -n 1)
    dpkg-deb -x "$deb" "$EX"
    printf '%s %s\n' "$p" "$(dpkg-deb -f "$deb" Version)" >> "$WORK/versions.txt"
done
KVER=${KPKG#linux-image-}
GKVER=${GPKG#linux-image-}
MODDIR=$EX/lib/modules/$KVER
[ -d "$MODDIR" ] && [ -d "$EX/lib/modules/$GKVER" ] || { note "kernel module trees missing"; exit 1; }
BB=$EX/bin/busybox

# ----------------------------------------------------- hypervisor, kernel
zcat "$EX/boot/xen-$XV-amd64.gz" > "$WORK/xen"
# unbz BZIMAGE OUT: the uncompressed ELF kernel inside a bzImage. Its header
# says where the compressed kernel is: setup_sects at 0x1f1 (setup size =
# (setup_sects + 1) * 512), then payload_offset (0x248) and payload_length
# (0x24c), counted from the end of the setup code.
unbz() {
    python3 - "$1" > "$WORK/payload" <<'PY'
import struct, sys
img = open(sys.argv[1], 'rb').read()
setup = (img[0x1f1] or 4) + 1
off, length = struct.unpack_from('<II', img, 0x248)
sys.stdout.buffer.write(img[setup * 512 + off:][:length])
PY
    case $(head -c 4 "$WORK/payload" | od -An -tx1 | tr -d ' ') in
        fd377a58) xz -dc --single-stream < "$WORK/payload" > "$2" ;;
        1f8b*)    gzip -dc < "$WORK/payload" > "$2" ;;
        02214c18) lz4 -dc < "$WORK/payload" > "$2" || true ;;   # trailing size word: rc 1
        28b52ffd) zstd -dcq < "$WORK/payload" > "$2" ;;
        *) note "unknown compression in $1"; exit 1 ;;
    esac
    rm -f "$WORK/payload"
    [ "$(head -c 4 "$2")" = $'\x7fELF' ] || { note "no ELF kernel in $1"; exit 1; }
}
unbz "$EX/boot/vmlinuz-$KVER" "$WORK/vmlinux"          # dom0 kernel
unbz "$EX/boot/vmlinuz-$GKVER" "$WORK/guest-vmlinux"   # guest kernel

# ------------------------------------------------------------- helpers
# put_libs ROOT ELF: copy the shared libraries ELF needs into ROOT
put_libs() {
    LD_LIBRARY_PATH=$EX/usr/lib/x86_64-linux-gnu:$EX/lib/x86_64-linux-gnu ldd "$2" |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/lib64\// {print $1}' |
    while read -r lib; do
        dest=$1/lib/x86_64-linux-gnu/${lib##*/}
        [ "${lib#/lib64/}" != "$lib" ] && dest=$1$lib
        [ -e "$dest" ] || { mkdir -p "${dest%/*}"; cp -L "$lib" "$dest"; }
    done
}
# mod_list NAME...: module files (relative to MODDIR) in load order, deps first
declare -A KO DONE_MOD
while IFS= read -r f; do
    n=${f##*/}; n=${n%.ko}; KO[${n//-/_}]=${f#"$MODDIR"/}
done < <(find "$MODDIR/kernel" -name '*.ko')
MOD_ORDER=()
mod_add() {
    local n=${1//-/_} d
    [ -z "${DONE_MOD[$n]:-}" ] || return 0
    DONE_MOD[$n]=1
    [ -n "${KO[$n]:-}" ] || return 0              # built into the kernel
    for d in $(tr '\0' '\n' < "$MODDIR/${KO[$n]}" | sed -n 's/^depends=//p' | tr , ' '); do
        mod_add "$d"
    done
    MOD_ORDER+=("${KO[$n]}")
}
busybox_root() {
    mkdir -p "$1"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc,root,var/log,var/lib,mnt}
    cp "$BB" "$1/bin/busybox"
    local a
    for a in $("$BB" --list-full); do
        [ -e "$1/$a" ] || ln -s /bin/busybox "$1/$a"
    done
    ln -sfn ../run "$1/var/run"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$1/etc/passwd"
    echo 'root:x:0:' > "$1/etc/group"
}
pack() { (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 > "$2"; }

# ------------------------------------------------------ guest initramfs
G=$WORK/guest-root
rm -rf "$G"; mkdir -p "$G/bin" "$G/sbin" "$G/lib/modules" "$G/etc"
cp "$BB" "$G/bin/busybox"; ln -s busybox "$G/bin/sh"
install -m 755 "$HERE/guest-init.sh" "$G/init"
install -m 755 "$HERE/guest-poweroff.sh" "$G/sbin/poweroff"
echo 20 > "$G/etc/poweroff-delay"
for m in xen-blkfront xen-netfront; do
    cp "$(find "$EX/lib/modules/$GKVER" -name "$m.ko")" "$G/lib/modules/"
done
pack "$G" "$WORK/guest-initrd.gz"

# -------------------------------------------------------- dom0 initramfs
R=$WORK/dom0-root
rm -rf "$R"; busybox_root "$R"
XB=usr/lib/xen-$XV
mkdir -p "$R/$XB" "$R/usr/lib/x86_64-linux-gnu" "$R/etc/xen" "$R/etc/cxrec" "$R/guest" "$R/rec"
cp -a "$EX/$XB/bin" "$R/$XB/"
rm -f "$R/$XB/bin/pygrub" "$R/$XB/bin/xenpvnetboot"     # python, not needed
ln -s "xen-$XV" "$R/usr/lib/xen"
cp -a "$EX"/usr/bin/xenstore* "$R/usr/bin/"
cp -a "$EX"/usr/lib/x86_64-linux-gnu/lib*.so* "$R/usr/lib/x86_64-linux-gnu/"
cp -a "$EX/etc/xen/." "$R/etc/xen/"
for t in xl xenstored xenconsoled xen-init-dom0 xenconsole; do ln -sf "/$XB/bin/$t" "$R/usr/sbin/$t"; done
# the hotplug scripts are bash and take locks with flock(1)
cp /bin/bash "$R/bin/bash"; put_libs "$R" /bin/bash
cp "$(command -v flock)" "$R/usr/bin/flock"; put_libs "$R" "$R/usr/bin/flock"
for f in "$R/$XB"/bin/* "$R"/usr/bin/xenstore*; do
    [ -f "$f" ] && [ "$(head -c 4 "$f")" = $'\x7fELF' ] && put_libs "$R" "$f"
done
# xl aborts without libgcc_s (glibc dlopen()s it for pthread_cancel)
cp -L "$(ldconfig -p | awk '$1 == "libgcc_s.so.1" && /x86-64/ {print $NF; exit}')" \
    "$R/lib/x86_64-linux-gnu/libgcc_s.so.1"
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-blkback \
         xen-netback loop bridge virtio_pci 9pnet_virtio 9p; do
    mod_add "$m"
done
: > "$R/etc/cxrec/modules"
for p in "${MOD_ORDER[@]}"; do
    mkdir -p "$R/lib/modules/$KVER/${p%/*}"
    cp "$MODDIR/$p" "$R/lib/modules/$KVER/$p"
    echo "$p" >> "$R/etc/cxrec/modules"
done
gzip -6 -c "$WORK/guest-vmlinux" > "$R/guest/vmlinux.gz"
cp "$WORK/guest-initrd.gz" "$R/guest/initrd.gz"
cp "$HERE/pv-guest.cfg" "$R/etc/xen/cxapi-pv.cfg"
install -m 755 "$HERE/dom0-init.sh" "$R/init"
install -m 755 "$HERE/record-in-dom0.sh" "$R/rec/record-in-dom0.sh"
pack "$R" "$WORK/dom0.cpio.gz"
rm -rf "$EX" "$R" "$G"
note "image ready: xen $(sed -n 's/^xen-hypervisor[^ ]* //p' "$WORK/versions.txt"), dom0 kernel $KVER, guest kernel $GKVER"

# ----------------------------------------------------------------- boot
OUT=$WORK/out
rm -rf "$OUT"; mkdir -p "$OUT"
SERIAL=$WORK/serial.log
: > "$SERIAL"
qemu-system-x86_64 -accel tcg -cpu qemu64,+svm,+npt -m 1024 -smp 1 \
    -display none -vga none -nic none -no-reboot -monitor none \
    -serial "file:$SERIAL" \
    -kernel "$WORK/xen" \
    -append "console=com1 com1=115200,8n1 dom0_mem=512M,max:512M dom0_max_vcpus=1 bootscrub=false" \
    -initrd "$WORK/vmlinux console=hvc0 earlyprintk=xen rdinit=/init loglevel=4,$WORK/dom0.cpio.gz" \
    -virtfs "local,path=$OUT,mount_tag=cxrec,security_model=none,id=cxrec" \
    </dev/null > "$WORK/qemu.out" 2>&1 &
QPID=$!
stop_qemu() {
    if kill -0 "$QPID" 2>/dev/null; then kill "$QPID"; sleep 1; kill -9 "$QPID" 2>/dev/null || true; fi
}
trap stop_qemu EXIT
note "qemu pid $QPID; serial log $SERIAL"
start=$SECONDS result=timeout
while [ $((SECONDS - start)) -lt "$TIMEOUT" ]; do
    if grep -aq 'CXREC-DOM0-DONE' "$SERIAL"; then result=done; break; fi
    if grep -aqE 'CXREC-DOM0-FAILED|Panic on CPU|Hardware Dom0 crashed' "$SERIAL"; then result=failed; break; fi
    kill -0 "$QPID" 2>/dev/null || { result=exited; break; }
    sleep 1
done
for _ in $(seq 20); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.5; done   # own poweroff
stop_qemu; wait "$QPID" 2>/dev/null || true
trap - EXIT
tr -d '\r' < "$SERIAL" | grep -a '^CXREC' >&2 || true
note "$result after $((SECONDS - start)) s"
[ "$result" = done ] || { tr -d '\r' < "$SERIAL" | tail -n 30 >&2; exit 1; }

# ------------------------------------------------------------- results
mkdir -p "$FIX/logs"
for f in dom0-before.txt pv-guest-running.txt pv-guest-shutdown-acked.txt after-destroy.txt; do
    [ -f "$OUT/$f" ] && cp "$OUT/$f" "$FIX/$f" || note "missing $f"
done
cp "$HERE/pv-guest.cfg" "$FIX/pv-guest.cfg"
cp "$WORK/versions.txt" "$FIX/logs/package-versions.txt"
for f in meta.txt xl-create.log xl-daemon.log xl-shutdown.log hotplug.log \
         guest-console.log xl-info.txt xl-list.txt xl-list-l.json record.log; do
    [ -f "$OUT/$f" ] && cp "$OUT/$f" "$FIX/logs/$f"
done
# the raw xenstored trace is ~1.3 MB (mostly reads): keep only the writes
python3 "$HERE/trace-writes.py" "$OUT/xenstored-trace.log" > "$FIX/logs/xenstore-writes.txt"
note "results in $FIX (raw xenstored trace: $OUT/xenstored-trace.log)"
