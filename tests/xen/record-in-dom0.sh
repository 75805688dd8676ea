#!/bin/sh
# Runs inside dom0 (started by dom0-init.sh). Records the xenstore tree
# around the life of one PV guest into directory $1:
#   dom0-before.txt            whole tree, no guest yet
#   pv-guest-running.txt       whole tree, guest up, both frontends Connected
#   pv-guest-shutdown-acked.txt whole tree after `xl shutdown`, once the guest
#                              has acknowledged control/shutdown (still alive)
#   after-destroy.txt          whole tree once the guest is gone
#   xenstored-trace.log        xenstored's own trace (-T) of every request
#                              and watch event; phases are marked by reads of
#                              the absent path /cxrec-phase/<name>
#   plus logs: xl-create.log, xl-daemon.log, hotplug.log, guest-console.log,
#   xl-info.txt, xl-list-l.json, meta.txt
out=$1
name=cxapi-pv
cfg=/etc/xen/$name.cfg
con=/var/log/xen/console/guest-$name.log
now() { cut -d' ' -f1 /proc/uptime; }
say() { echo "[$(now)] $*"; echo "CXREC [$(now)] $*" > /dev/console; }
dump() { xenstore-ls -fp / > "$out/$1"; say "dumped $1 ($(wc -l < "$out/$1") lines)"; }
# a read of an absent node: shows up in the xenstored trace, changes nothing
phase() { xenstore-read "/cxrec-phase/$1" > /dev/null 2>&1; say "phase $1"; }
# wait_for SECONDS COMMAND...: poll every 0.5 s until COMMAND succeeds
wait_for() {
    t=$1; shift; n=0
    while ! "$@" > /dev/null 2>&1; do
        n=$((n + 1)); [ $n -lt $((t * 2)) ] || return 1; sleep 0.5
    done
}
is() { [ "$(xenstore-read "$1" 2>/dev/null)" = "$2" ]; }

{
    echo "xen_version $(xl info | sed -n 's/^xen_version *: //p')"
    echo "xen_caps $(xl info | sed -n 's/^xen_caps *: //p')"
    echo "dom0_kernel $(uname -r) $(uname -v)"
    echo "xenstored C xenstored ($(readlink -f "$(which xenstored)"))"
} > "$out/meta.txt"
xl info > "$out/xl-info.txt" 2>&1

# network bridge for the vif, and the disk image file
brctl addbr xenbr0 && ip link set xenbr0 up || say "bridge setup failed"
dd if=/dev/zero of=/var/lib/xen/images/$name.img bs=1M count=16 2>/dev/null

dump dom0-before.txt

phase create
t0=$(now)
xl -vvv create "$cfg" > "$out/xl-create.log" 2>&1
rc=$?
say "xl create rc=$rc after $(echo "$(now) $t0" | awk '{print $1 - $2}')s"
domid=$(xl domid $name 2>/dev/null)
if [ $rc != 0 ] || [ -z "$domid" ]; then
    dump after-failed-create.txt
    cp /var/log/xen/*.log "$out/" 2>/dev/null
    exit 1
fi
uuid=$(xenstore-read /local/domain/$domid/vm | sed 's|^/vm/||')
echo "domid $domid" >> "$out/meta.txt"
echo "uuid $uuid" >> "$out/meta.txt"
dp=/local/domain/$domid/device

wait_for 180 grep -q CXREC-GUEST-UP "$con" || say "guest did not report up"
wait_for 60 is $dp/vbd/51712/state 4 || say "vbd frontend not Connected"
wait_for 60 is $dp/vif/0/state 4 || say "vif frontend not Connected"
sleep 2
phase running
dump pv-guest-running.txt
xl list -l $name > "$out/xl-list-l.json" 2>&1
xl list > "$out/xl-list.txt" 2>&1

phase shutdown
xl shutdown $name > "$out/xl-shutdown.log" 2>&1
echo "xl shutdown rc=$?" >> "$out/xl-shutdown.log"
# the guest kernel acknowledges by writing "" over "poweroff", then runs
# /sbin/poweroff, which waits 20 s before powering off
wait_for 30 is /local/domain/$domid/control/shutdown "" \
    || say "guest did not acknowledge the shutdown request"
sleep 1
phase shutdown-acked
dump pv-guest-shutdown-acked.txt

wait_for 180 sh -c "! xl domid $name" || say "guest still there"
phase gone
wait_for 30 sh -c "! xenstore-exists /local/domain/0/backend/vbd/$domid" \
    || say "vbd backend dir still there"
wait_for 30 sh -c "! xenstore-exists /local/domain/0/backend/vif/$domid" \
    || say "vif backend dir still there"
sleep 3
phase after-destroy
dump after-destroy.txt

cp /var/log/xen/xenstored-trace.log "$out/xenstored-trace.log"
cp "$con" "$out/guest-console.log"
cp /var/log/xen/xl-$name.log "$out/xl-daemon.log" 2>/dev/null
[ -s /var/log/xen/xen-hotplug.log ] && cp /var/log/xen/xen-hotplug.log "$out/hotplug.log"
ls -l /var/log/xen >> "$out/record.log"
say "done"
