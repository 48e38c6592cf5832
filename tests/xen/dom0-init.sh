#!/bin/sh
# /init of the dom0 initramfs (no systemd). Brings up just what xl needs:
# xenfs, evtchn/gntdev/privcmd, blkback + loop, xenstored, xenconsoled.
# Kernel cmdline flags:  xentest=1  -> run /root/xen-test.sh, then power off
#                        (default)  -> root shell on the console (hvc0)
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
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback loop ext4; do
  modprobe "$m" || echo "modprobe $m failed"
done
mount -t xenfs xenfs /proc/xen
/etc/init.d/xen start
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
