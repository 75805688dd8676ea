#!/bin/busybox sh
# PID 1 of the recording guest (PV domU). Loads the PV block and network
# frontends so that both devices reach XenbusStateConnected, reports on the
# console, then idles. The guest kernel itself answers control/shutdown
# (drivers/xen/manage.c): it clears the key and runs /sbin/poweroff, which
# here is /sbin/slow-poweroff (below) so the tree can be recorded in the
# window between "guest acknowledged" and "guest gone".
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in /lib/modules/*.ko; do insmod "$m" || echo "CXREC-GUEST insmod $m failed"; done
n=0
while [ ! -b /dev/xvda ] && [ $n -lt 100 ]; do sleep 0.2; n=$((n + 1)); done
ip link set eth0 up 2>/dev/null
read -r up _ < /proc/uptime
echo "CXREC-GUEST-UP uptime=${up}s xvda=$(cat /sys/block/xvda/size 2>/dev/null)sectors eth0=$(cat /sys/class/net/eth0/address 2>/dev/null)"
while :; do sleep 3600; done
