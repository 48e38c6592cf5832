#!/bin/sh
# /init of the dom0 initramfs (no systemd). Brings up just what xl needs:
# xenfs, evtchn/gntdev/privcmd, loop, xenstored, xenconsoled, sshd on
# 127.0.0.1 (for `xl migrate <guest> localhost`). xen-blkback is loaded here
# only when the image carries no patched one: xen-test.sh loads that itself,
# with its parameters.
# Kernel cmdline flags:  xentest=1  -> run /root/xen-test.sh, then power off
#                        (default)  -> root shell on the console (hvc0)
#   (xen-test.sh reads domutype=pv|pvh and migrate=0|1 from the cmdline too)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs tmpfs /dev/shm
# the initramfs rootfs is size-limited; give xl save its own tmpfs
mkdir -p /var/lib/xen/save
mount -t tmpfs -o size=512M tmpfs /var/lib/xen/save
mkdir -p /run/lock /var/log/xen/console
# udev normally makes these; the hotplug scripts' locking (locking.sh) loops forever without /dev/stdin
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
echo "DOM0-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"
hostname dom0
ip link set lo up
mods="xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd loop ext4"
[ -f /root/p2bmig/xen-blkback.ko ] || mods="$mods xen-blkback"
for m in $mods; do
  modprobe "$m" || echo "modprobe $m failed"
done
mount -t xenfs xenfs /proc/xen
/etc/init.d/xen start
mkdir -p /run/sshd
/usr/sbin/sshd || echo "sshd failed to start"
echo "DOM0-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
if grep -qw xentest=1 /proc/cmdline; then
  /root/xen-test.sh
  echo "XEN-TEST-EXIT rc=$?"
  sync
  busybox poweroff -f
fi
# interactive: job-control shell on the Xen console
while true; do
  setsid sh -c 'exec bash -i </dev/hvc0 >/dev/hvc0 2>&1'
done
