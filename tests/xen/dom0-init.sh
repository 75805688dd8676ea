#!/bin/sh
# PID 1 of the dom0 initramfs built by record-tree.sh (busybox sh in a Linux
# PV dom0). Starts the Xen control plane, mounts the host's output directory
# (virtio 9p, tag "cxrec") on /mnt/out, runs /rec/record-in-dom0.sh and
# powers the emulated machine off. Progress goes to hvc0, which Xen relays to
# the serial port that record-tree.sh watches.
PATH=/usr/local/bin:/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
# no udev here: the hotplug scripts' locking (locking.sh) stats /dev/stdin
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo 1 > /proc/sys/kernel/printk

die() { echo "CXREC-DOM0-FAILED $*"; poweroff -f; sleep 30; }

kv=$(uname -r)
while read -r ko; do
    insmod "/lib/modules/$kv/$ko" 2>/dev/null || echo "CXREC insmod $ko failed"
done < /etc/cxrec/modules

mount -t xenfs xenfs /proc/xen || die "xenfs"
mkdir -p /run/xen /run/xenstored /var/lib/xen/images /var/lib/xenstored \
    /var/log/xen/console /run/lock /var/run/xen-hotplug
# -T: xenstored logs every request and watch event (the write sequence)
xenstored --pid-file /run/xenstored.pid -T /var/log/xen/xenstored-trace.log \
    || die "xenstored"
xen-init-dom0 > /var/log/xen/xen-init-dom0.log 2>&1 || die "xen-init-dom0"
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest \
    --log-dir=/var/log/xen/console || die "xenconsoled"

mkdir -p /mnt/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 cxrec /mnt/out \
    || die "9p mount of the output directory"

echo "CXREC-DOM0-UP $(cut -d' ' -f1 /proc/uptime)s"
sh /rec/record-in-dom0.sh /mnt/out > /mnt/out/record.log 2>&1
echo "CXREC-DOM0-DONE rc=$?"
sync
umount /mnt/out
poweroff -f
sleep 30
