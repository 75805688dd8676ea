#!/bin/busybox sh
# /sbin/poweroff of the recording guest; the kernel runs it when dom0 writes
# control/shutdown = poweroff. Waits so dom0 can record the tree, then powers
# off for real (which also closes the PV frontends).
exec > /dev/console 2>&1      # run by the kernel without stdio
echo "CXREC-GUEST-SHUTDOWN-REQUESTED"
sleep "$(cat /etc/poweroff-delay 2>/dev/null || echo 30)"
echo "CXREC-GUEST-POWEROFF"
exec /bin/busybox poweroff -f
