#!/bin/bash
# Builds what tests/xen/run.sh boots under qemu-system-x86_64 (TCG): Debian's
# Xen 4.17 hypervisor, Debian's 6.1 kernel (dom0 and domU), and a dom0
# initramfs carrying xl, a small PV domU and p2bmig-save-helper.
# Adapted from the measured recipe in the xen-in-qemu lab notes.
#
#   build-images.sh <p2bmig-save-helper>
#
# Output in $W (default /tmp/p2bmig-xen/build): xen.elf, vmlinuz, dom0.cpio.
# Needs root and the Debian archive. The debootstrap tree and the packages are
# kept in $W between runs; only the dom0 configuration and the cpio are
# rebuilt (a second run takes seconds). Delete $W to start over.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
HELPER=$(readlink -f "${1:?usage: build-images.sh <p2bmig-save-helper>}")
W=${W:-/tmp/p2bmig-xen/build}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$W"
cd "$W"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

t_start=$(date +%s.%N)
lap() { awk -v a="$t_start" -v b="$(date +%s.%N)" -v n="$1" 'BEGIN{printf "BUILD-TIMING %-20s %7.1f s (cumulative)\n", n, b-a}'; }

# ---- host tools
need=""
for p in qemu-system-x86 debootstrap busybox-static cpio e2fsprogs kmod; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
fi
lap host-tools

# ---- hypervisor and kernel (the archive's current ones)
if [ ! -f xen.elf ] || [ ! -f vmlinuz ]; then
  KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  rm -rf debs extract
  mkdir -p debs extract
  (cd debs && apt-get download xen-hypervisor-4.17-amd64 "$KPKG")
  for f in debs/*.deb; do dpkg-deb -x "$f" extract; done
  zcat extract/boot/xen-4.17-amd64.gz > xen.elf  # QEMU's multiboot loader needs the ELF
  cp extract/boot/vmlinuz-*-amd64 vmlinuz
fi
KVER=$(ls extract/lib/modules)
[ -f "extract/lib/modules/$KVER/modules.dep" ] || depmod -b extract "$KVER"
lap xen-kernel

copy_modules() {  # root module...: copies modules and dependencies, prints them in load order
  local root=$1 m f rel
  shift
  for m in "$@"; do
    modprobe -d extract -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}' |
      while read -r f; do
        rel=${f#"$W"/extract}
        mkdir -p "$root$(dirname "$rel")"
        cp -n "$f" "$root$rel"
        echo "$rel"
      done
  done
}

# ---- domU: busybox initramfs and a 32 MiB ext4 disk
rm -rf domu-root domu-disk
mkdir -p domu-root/{bin,dev,proc,sys,mnt,etc} domu-disk
cp /bin/busybox domu-root/bin/busybox
copy_modules domu-root xen-blkfront crc32c_generic ext4 | awk '!s[$0]++' > domu-root/etc/modules.order
cp "$HERE/domu-init.sh" domu-root/init
chmod +x domu-root/init
(cd domu-root && find . | cpio -o -H newc --quiet) > domu-initrd.cpio
echo 0 > domu-disk/bootcount
echo "hello from the domU disk image" > domu-disk/hello
rm -f domu-disk.img
mkfs.ext4 -q -F -L domudisk -d domu-disk domu-disk.img 32M
lap domU

# ---- dom0 root
if [ ! -f dom0-root/.debootstrap-done ]; then
  rm -rf dom0-root
  debootstrap --variant=minbase bookworm dom0-root "$MIRROR" > debootstrap.log 2>&1
  touch dom0-root/.debootstrap-done
fi
if [ ! -f dom0-root/.packages-done ]; then
  cat > dom0-root/etc/apt/sources.list <<EOS
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOS
  printf '#!/bin/sh\nexit 101\n' > dom0-root/usr/sbin/policy-rc.d
  chmod +x dom0-root/usr/sbin/policy-rc.d
  chroot dom0-root /bin/sh -c '
    export DEBIAN_FRONTEND=noninteractive
    mount -t proc proc /proc
    apt-get update -q && apt-get -y dist-upgrade --no-install-recommends &&
    apt-get install -y --no-install-recommends xen-utils-4.17 xen-utils-common xenstore-utils \
        kmod mount iproute2 procps busybox-static
    rc=$?; umount /proc; exit $rc' > chroot-install.log 2>&1
  touch dom0-root/.packages-done
fi
lap dom0-packages
rm -rf dom0-root/var/cache/apt/*.bin dom0-root/var/cache/apt/archives/*.deb \
  dom0-root/var/lib/apt/lists/* dom0-root/usr/share/doc/* dom0-root/usr/share/man/* \
  dom0-root/usr/share/locale/* dom0-root/usr/share/info/* dom0-root/lib/modules
copy_modules dom0-root xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback loop \
  crc32c_generic ext4 > /dev/null
cp "extract/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "dom0-root/lib/modules/$KVER/"
depmod -b dom0-root "$KVER"
sed -i '/^XENCONSOLED_ARGS=/d' dom0-root/etc/default/xen
echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"' >> dom0-root/etc/default/xen
echo dom0 > dom0-root/etc/hostname

# ---- p2bmig-save-helper and the shared libraries it needs that dom0 lacks
# (both are Debian 12, so the host's copies fit).
install -m 755 "$HELPER" dom0-root/usr/local/bin/p2bmig-save-helper
mkdir -p dom0-root/usr/local/lib
ldd "$HELPER" | awk '$3 ~ /^\//{print $3}' | while read -r lib; do
  name=$(basename "$lib")
  if ! ls dom0-root/lib/x86_64-linux-gnu/"$name" dom0-root/usr/lib/x86_64-linux-gnu/"$name" \
       >/dev/null 2>&1; then
    cp -L "$lib" dom0-root/usr/local/lib/
    echo "copied $name into dom0"
  fi
done
ldconfig -r dom0-root

# ---- domU files and the test
mkdir -p dom0-root/root/domu
cp vmlinuz dom0-root/root/domu/vmlinuz
cp domu-initrd.cpio dom0-root/root/domu/initrd.cpio
cp domu-disk.img dom0-root/root/domu/disk.img
cp "$HERE/domu.cfg" dom0-root/root/domu/domu.cfg
cp "$HERE/xen-test.sh" dom0-root/root/xen-test.sh
cp "$HERE/dom0-init.sh" dom0-root/init
chmod +x dom0-root/init dom0-root/root/xen-test.sh
lap dom0-config
(cd dom0-root && find . | cpio -o -H newc --quiet) > dom0.cpio
lap dom0-cpio
ls -la xen.elf vmlinuz dom0.cpio
