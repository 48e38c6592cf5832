#!/bin/bash
# Builds what tests/xen/run.sh boots under qemu-system-x86_64 (TCG): Debian's
# Xen 4.17 hypervisors, Debian's 6.1 kernel (dom0 and domU), and a dom0
# initramfs carrying xl, sshd, the p2bmig programs and a small domU whose
# disk holds the files its workload reads. Adapted from the measured recipe
# in the xen-in-qemu lab notes.
#
#   build-images.sh --helper P [--trackd P] [--xl-wrapper P] [--blkback-builder SCRIPT]
#                   [--patched-xl P]
#
#   --helper           p2bmig-save-helper (required)
#   --trackd           p2bmig-trackd, the dom0 daemon that keeps the p2b maps
#   --xl-wrapper       tools/xl-wrapper/p2bmig-xl.in, installed as p2bmig-xl
#   --blkback-builder  scripts/build-blkback-tap.sh: called as
#                      `SCRIPT --kernel-abi <ABI> <OUTDIR>` for the exact
#                      kernel the image boots; must leave OUTDIR/xen-blkback.ko
#   --patched-xl       xl built with xen-patches/xl-4.17-shared-storage.patch
#                      (scripts/check-xen-patches.sh --out), installed as
#                      /usr/local/lib/p2bmig/xl-patched/xl beside the stock xl
#
# Output in $W (default /tmp/p2bmig-xen/build):
#   xen-current.elf   the archive's current xen-hypervisor-4.17-amd64
#   xen-shadow.elf    a 4.17 build with CONFIG_SHADOW_PAGING=y (PV live
#                     migration needs shadow log-dirty mode), see below
#   hypervisors.env   what was chosen and why (read by run.sh)
#   vmlinuz, dom0.cpio
#
# Why two hypervisors: Debian's bookworm-security build (4.17.7+13) is built
# without shadow paging ("x86 shadow paging is deprecated, XSA-495"), so
# `xl migrate` of a PV guest fails with "Failed to enable logdirty". The
# bookworm point-release build $XEN_SHADOW_VERSION still has it. If that
# version has left the archive and the current one lacks shadow paging too,
# hypervisors.env says so and run.sh skips PV live migration loudly (PV
# save/restore and the PVH runs do not need it).
#
# Needs root and the Debian archive. The debootstrap tree and the packages are
# kept in $W between runs; the dom0 configuration, the domU and the cpio are
# rebuilt every time (seconds). Delete $W to start over.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
HELPER="" TRACKD="" XL_WRAPPER="" BLKBACK_BUILDER="" PATCHED_XL=""
while [ $# -gt 0 ]; do
  case $1 in
    --helper) HELPER=$(readlink -f "$2"); shift 2 ;;
    --trackd) TRACKD=$(readlink -f "$2"); shift 2 ;;
    --xl-wrapper) XL_WRAPPER=$(readlink -f "$2"); shift 2 ;;
    --blkback-builder) BLKBACK_BUILDER=$(readlink -f "$2"); shift 2 ;;
    --patched-xl) PATCHED_XL=$(readlink -f "$2"); shift 2 ;;
    *) echo "build-images.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$HELPER" ] || { echo "build-images.sh: --helper <p2bmig-save-helper> is required" >&2; exit 2; }
W=${W:-/tmp/p2bmig-xen/build}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
XEN_SHADOW_VERSION=${XEN_SHADOW_VERSION:-4.17.5+72-g01140da4e8-1}
# The domU: memory (MiB) and the files its workload reads into page cache.
DOMU_MEM=${DOMU_MEM:-192}
DOMU_FILES=${DOMU_FILES:-8}       # files of DOMU_FILE_MIB MiB each
DOMU_FILE_MIB=${DOMU_FILE_MIB:-8}
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
  [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v -e lock -e partial)" ] || apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
fi
lap host-tools

# ---- hypervisors
# xen_elf VERSION OUT: downloads that build of xen-hypervisor-4.17-amd64,
# writes its hypervisor as OUT (QEMU's multiboot loader needs the plain ELF)
# and OUT.config; fails if the archive does not have it.
xen_elf() {
  local v=$1 out=$2 d=xenver/$1
  if [ ! -f "$d/x/boot/xen-4.17-amd64.gz" ]; then
    rm -rf "$d"
    mkdir -p "$d"
    (cd "$d" && apt-get download "xen-hypervisor-4.17-amd64=$v" >/dev/null 2>&1) || return 1
    dpkg-deb -x "$d"/*.deb "$d/x"
  fi
  zcat "$d/x/boot/xen-4.17-amd64.gz" > "$out"
  cp "$d/x/boot/xen-4.17-amd64.config" "$out.config"
}
has_shadow() { grep -q '^CONFIG_SHADOW_PAGING=y' "$1.config"; }
current=$(apt-cache policy xen-hypervisor-4.17-amd64 | awk '/Candidate:/{print $2}')
[ -n "$current" ] && [ "$current" != "(none)" ] ||
  { echo "build-images.sh: apt knows no xen-hypervisor-4.17-amd64 (apt-get update?)" >&2; exit 1; }
xen_elf "$current" xen-current.elf ||
  { echo "build-images.sh: cannot download xen-hypervisor-4.17-amd64=$current" >&2; exit 1; }
shadow_note=""
rm -f xen-shadow.elf xen-shadow.elf.config
if xen_elf "$XEN_SHADOW_VERSION" xen-shadow.elf && has_shadow xen-shadow.elf; then
  shadow_version=$XEN_SHADOW_VERSION
elif has_shadow xen-current.elf; then
  cp xen-current.elf xen-shadow.elf
  cp xen-current.elf.config xen-shadow.elf.config
  shadow_version=$current
else
  rm -f xen-shadow.elf xen-shadow.elf.config
  shadow_version=""
  shadow_note="neither xen-hypervisor-4.17-amd64=$XEN_SHADOW_VERSION (no longer in the archive) nor the current $current (built without CONFIG_SHADOW_PAGING) can live-migrate a PV guest"
fi
cat > hypervisors.env <<EOF
XEN_CURRENT_VERSION='$current'
XEN_SHADOW_VERSION='$shadow_version'
XEN_SHADOW_MISSING='$shadow_note'
EOF
echo "hypervisors: current $current (shadow paging: $(has_shadow xen-current.elf && echo yes || echo no)), for PV migration: ${shadow_version:-NONE: $shadow_note}"

# ---- kernel (dom0 and domU)
if [ ! -f vmlinuz ] || [ ! -d extract/lib/modules ]; then
  KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  rm -rf debs extract
  mkdir -p debs extract
  (cd debs && apt-get download "$KPKG")
  for f in debs/*.deb; do dpkg-deb -x "$f" extract; done
  cp extract/boot/vmlinuz-*-amd64 vmlinuz
fi
KVER=$(ls extract/lib/modules)
[ -f "extract/lib/modules/$KVER/modules.dep" ] || depmod -b extract "$KVER"
echo "kernel: $KVER"
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

# ---- the patched xen-blkback (the I/O tap), for exactly this kernel
rm -rf blkback
if [ -n "$BLKBACK_BUILDER" ]; then
  bash "$BLKBACK_BUILDER" --kernel-abi "$KVER" "$W/blkback" > blkback-build.log 2>&1 ||
    { tail -30 blkback-build.log; echo "build-images.sh: $BLKBACK_BUILDER failed (log: $W/blkback-build.log)" >&2; exit 1; }
  [ -f blkback/xen-blkback.ko ] ||
    { echo "build-images.sh: $BLKBACK_BUILDER left no $W/blkback/xen-blkback.ko" >&2; exit 1; }
  vermagic=$(modinfo -F vermagic blkback/xen-blkback.ko | awk '{print $1}')
  [ "$vermagic" = "$KVER" ] ||
    { echo "build-images.sh: xen-blkback.ko is for kernel $vermagic, the image boots $KVER" >&2; exit 1; }
fi
lap blkback

# ---- domU: busybox initramfs, and an ext4 disk (4 KiB blocks, so that each
# page of a file is one 4 KiB block of the image) holding random files
rm -rf domu-root domu-disk
mkdir -p domu-root/{bin,dev,proc,sys,mnt,mem,etc} domu-disk/data
cp /bin/busybox domu-root/bin/busybox
copy_modules domu-root xen-blkfront crc32c_generic ext4 | awk '!s[$0]++' > domu-root/etc/modules.order
cp "$HERE/domu-init.sh" domu-root/init
chmod +x domu-root/init
(cd domu-root && find . | cpio -o -H newc --quiet) > domu-initrd.cpio
echo 0 > domu-disk/bootcount
echo "hello from the domU disk image" > domu-disk/hello
for i in $(seq -w 1 "$DOMU_FILES"); do
  head -c $((DOMU_FILE_MIB << 20)) /dev/urandom > "domu-disk/data/f$i"
done
# the guest prints `md5sum data/* | md5sum` of what it reads; this is what it must be
(cd domu-disk && md5sum data/* | md5sum | cut -d' ' -f1) > domu-files.md5
disk_mib=$((DOMU_FILES * DOMU_FILE_MIB + 16))
rm -f domu-disk.img
mkfs.ext4 -q -F -b 4096 -L domudisk -d domu-disk domu-disk.img "${disk_mib}M"
lap domU

# ---- dom0 root
if [ ! -f dom0-root/.debootstrap-done ]; then
  rm -rf dom0-root
  debootstrap --variant=minbase bookworm dom0-root "$MIRROR" > debootstrap.log 2>&1
  touch dom0-root/.debootstrap-done
fi
if [ ! -f dom0-root/.packages-v2-done ]; then
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
        openssh-server openssh-client kmod mount iproute2 procps busybox-static e2fsprogs
    rc=$?; umount /proc; exit $rc' > chroot-install.log 2>&1
  touch dom0-root/.packages-v2-done
fi
lap dom0-packages
rm -rf dom0-root/var/cache/apt/*.bin dom0-root/var/cache/apt/archives/*.deb \
  dom0-root/var/lib/apt/lists/* dom0-root/usr/share/doc/* dom0-root/usr/share/man/* \
  dom0-root/usr/share/locale/* dom0-root/usr/share/info/* dom0-root/lib/modules \
  dom0-root/root/p2bmig dom0-root/root/domu
copy_modules dom0-root xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback loop \
  crc32c_generic ext4 > /dev/null
cp "extract/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "dom0-root/lib/modules/$KVER/"
depmod -b dom0-root "$KVER"
sed -i '/^XENCONSOLED_ARGS=/d' dom0-root/etc/default/xen
echo 'XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"' >> dom0-root/etc/default/xen
echo dom0 > dom0-root/etc/hostname
echo '127.0.0.1 localhost dom0' > dom0-root/etc/hosts

# ssh to localhost, for `xl migrate <guest> localhost`
mkdir -p dom0-root/root/.ssh
chmod 700 dom0-root/root/.ssh
[ -f dom0-root/root/.ssh/id_ed25519 ] || chroot dom0-root ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
cp dom0-root/root/.ssh/id_ed25519.pub dom0-root/root/.ssh/authorized_keys
cat > dom0-root/root/.ssh/config <<EOF
Host *
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
EOF
sed -i -e '/^ListenAddress/d' -e '/^UseDNS/d' dom0-root/etc/ssh/sshd_config
printf 'ListenAddress 127.0.0.1\nUseDNS no\n' >> dom0-root/etc/ssh/sshd_config

# ---- the p2bmig programs, and the shared libraries they need that dom0
# lacks (both are Debian 12, so the host's copies fit)
mkdir -p dom0-root/usr/local/lib dom0-root/root/p2bmig
install_program() {
  local prog=$1 lib name
  install -m 755 -s "$prog" dom0-root/usr/local/bin/  # no debug info: the initramfs stays small
  ldd "$prog" | awk '$3 ~ /^\//{print $3}' | while read -r lib; do
    name=$(basename "$lib")
    if [ ! -e dom0-root/usr/lib/x86_64-linux-gnu/"$name" ] && [ ! -e dom0-root/usr/local/lib/"$name" ]; then
      cp -L "$lib" dom0-root/usr/local/lib/
      echo "copied $name into dom0"
    fi
  done
}
rm -f dom0-root/usr/local/bin/p2bmig-* dom0-root/usr/local/lib/*.so*
install_program "$HELPER"
[ -z "$TRACKD" ] || install_program "$TRACKD"
if [ -n "$XL_WRAPPER" ]; then
  sed 's|@P2BMIG_SAVE_HELPER_PATH@|/usr/local/bin/p2bmig-save-helper|g' "$XL_WRAPPER" \
    > dom0-root/usr/local/bin/p2bmig-xl
  chmod 755 dom0-root/usr/local/bin/p2bmig-xl
fi
rm -rf dom0-root/usr/local/lib/p2bmig
if [ -n "$PATCHED_XL" ]; then
  mkdir -p dom0-root/usr/local/lib/p2bmig/xl-patched
  install -m 755 "$PATCHED_XL" dom0-root/usr/local/lib/p2bmig/xl-patched/xl
fi
ldconfig -r dom0-root
[ ! -f blkback/xen-blkback.ko ] || cp blkback/xen-blkback.ko dom0-root/root/p2bmig/xen-blkback.ko

# ---- domU files and the test
mkdir -p dom0-root/root/domu
cp vmlinuz dom0-root/root/domu/vmlinuz
cp domu-initrd.cpio dom0-root/root/domu/initrd.cpio
cp domu-disk.img dom0-root/root/domu/disk.img
cp domu-files.md5 dom0-root/root/domu/files.md5
for t in pv pvh; do
  sed -e "s/@TYPE@/$t/" -e "s/@MEMORY@/$DOMU_MEM/" "$HERE/domu.cfg" > dom0-root/root/domu/domu-$t.cfg
done
cat > dom0-root/root/domu/workload.env <<EOF
DOMU_MEM=$DOMU_MEM
DOMU_FILE_PAGES=$((DOMU_FILES * DOMU_FILE_MIB * 256))
EOF
cp "$HERE/xen-test.sh" dom0-root/root/xen-test.sh
cp "$HERE/dom0-init.sh" dom0-root/init
chmod +x dom0-root/init dom0-root/root/xen-test.sh
lap dom0-config
(cd dom0-root && find . | cpio -o -H newc --quiet) > dom0.cpio
lap dom0-cpio
ls -la xen-*.elf vmlinuz dom0.cpio
