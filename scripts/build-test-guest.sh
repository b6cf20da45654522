#!/usr/bin/env bash
# Build a tiny test guest for CloudPanel development from Debian packages:
#
#   OUTDIR/vmlinuz      kernel from linux-image-cloud-amd64 (fetched with
#                       `apt-get download`, independent of /boot)
#   OUTDIR/initrd.img   gzip'd newc cpio: busybox-static + a few modules and
#                       an /init that boots to a root shell on ttyS0
#
# Usage: scripts/build-test-guest.sh [OUTDIR]     (default: <project>/.cache/guest)
#        FORCE=1 scripts/build-test-guest.sh      (rebuild even if up to date)
#        GUEST_ARCH=arm64 scripts/build-test-guest.sh OUTDIR
#                                                 (an aarch64 guest, console ttyAMA0: its kernel and busybox are
#                                                 fetched for arm64 through a private apt state, leaving the
#                                                 machine's own dpkg architectures and package lists alone)
#
# Boot it with direct kernel boot (<kernel>/<initrd>, cmdline "console=ttyS0")
# in a <domain type='qemu'>. The guest console shows:
#   cloudpanel-guest hostname=X    if a filesystem labelled "cidata" (CD-ROM or
#                                  disk, iso9660/vfat) has "local-hostname: X"
#                                  in meta-data; it stays mounted at /mnt/seed
#   cloudpanel-guest ready         then a root shell on ttyS0 (respawned), and
#                                  another on tty1 (the VGA display, for VNC)
#   cloudpanel-guest ip=A.B.C.D    (asynchronously) if eth0 got a DHCP lease
# The ACPI power button (`virsh shutdown`) powers the guest off at once.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRIPT="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
PROJECT_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OUTDIR="${1:-$PROJECT_ROOT/.cache/guest}"
GUEST_ARCH="${GUEST_ARCH:-$(dpkg --print-architecture)}"
KERNEL_META=linux-image-cloud-$GUEST_ARCH
# Modules to load, in this order (dependencies resolved from modules.dep and
# loaded first). Builtin or missing ones are skipped.
MODULES=(virtio_pci virtio_net virtio_blk virtio_scsi virtio_console
         ata_piix sd_mod sr_mod isofs vfat nls_cp437 nls_ascii nls_utf8
         button evdev)

log() { echo "build-test-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

if [[ -z "${FORCE:-}" && -s "$OUTDIR/vmlinuz" && -s "$OUTDIR/initrd.img" \
      && "$OUTDIR/vmlinuz" -nt "$SCRIPT" && "$OUTDIR/initrd.img" -nt "$SCRIPT" \
      && "$(cat "$OUTDIR/arch" 2>/dev/null || echo amd64)" == "$GUEST_ARCH" ]]; then
    log "up to date: $OUTDIR/vmlinuz $OUTDIR/initrd.img"
    exit 0
fi

ensure_packages busybox-static cpio gzip kmod

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
KROOT="$TMP/kernel"
ROOT="$TMP/initramfs"
mkdir -p "$KROOT" "$ROOT"

# --- kernel + modules -------------------------------------------------------
APT=(-o Debug::NoLocking=1)
busybox_pkg=""
if [[ "$GUEST_ARCH" != "$(dpkg --print-architecture)" ]]; then
    # Another architecture's packages: apt with a state of its own (lists, cache, an empty dpkg status).
    state="$PROJECT_ROOT/.cache/apt-$GUEST_ARCH"
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
    : >"$state/status"
    APT+=(-o "APT::Architecture=$GUEST_ARCH" -o "APT::Architectures=$GUEST_ARCH" -o "Dir::State=$state"
          -o "Dir::State::lists=$state/lists" -o "Dir::State::status=$state/status" -o "Dir::Cache=$state/cache")
    getent passwd _apt >/dev/null && chown -R _apt "$state/lists" 2>/dev/null || true
    log "reading the $GUEST_ARCH package lists"
    apt-get "${APT[@]}" update -qq || die "apt-get update for $GUEST_ARCH failed"
    busybox_pkg=busybox-static
fi
kpkg="$(apt-cache "${APT[@]}" depends --important "$KERNEL_META" 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}')"
[[ -n "$kpkg" ]] || die "cannot resolve the kernel package behind $KERNEL_META (apt-get update?)"
log "downloading $kpkg $busybox_pkg ($GUEST_ARCH)"
mkdir -p "$TMP/deb" "$TMP/bb"
chmod 755 "$TMP"
getent passwd _apt >/dev/null && chown _apt "$TMP/deb" "$TMP/bb" 2>/dev/null || true
(cd "$TMP/deb" && apt-get "${APT[@]}" download -q "$kpkg" >/dev/null) \
    || die "apt-get download $kpkg failed"
dpkg-deb -x "$TMP"/deb/*.deb "$KROOT"
vmlinuz="$(ls "$KROOT"/boot/vmlinuz-* | head -n1)"
kver="${vmlinuz##*/vmlinuz-}"
# Debian generates modules.dep in postinst; do it for the extracted tree.
moddir=lib/modules/$kver
[[ -d "$KROOT/$moddir" ]] || moddir=usr/lib/modules/$kver
depmod -b "$KROOT" "$kver" 2>/dev/null || depmod -b "$KROOT/usr" "$kver"
[[ -s "$KROOT/$moddir/modules.dep" ]] || die "depmod produced no modules.dep"

declare -A seen=()
ORDER=()
visit() { # path relative to the modules dir, e.g. kernel/drivers/virtio/virtio.ko
    local p="$1" d
    [[ -n "${seen[$p]:-}" ]] && return 0
    seen[$p]=1
    for d in $(awk -v m="$p:" '$1 == m {$1 = ""; print; exit}' "$KROOT/$moddir/modules.dep"); do
        visit "$d"
    done
    ORDER+=("$p")
}
for m in "${MODULES[@]}"; do
    pat="${m//[-_]/[-_]}"
    if grep -qE "/${pat}\.ko(\.[a-z]+)?$" "$KROOT/$moddir/modules.builtin"; then
        continue
    fi
    p="$(grep -oE "^[^:]*/${pat}\.ko(\.[a-z]+)?:" "$KROOT/$moddir/modules.dep" | head -n1 || true)"
    [[ -n "$p" ]] || { log "warning: module $m not found in $kpkg, skipped"; continue; }
    visit "${p%:}"
done
mkdir -p "$ROOT/lib/modules" "$ROOT/etc"
: >"$ROOT/etc/modules"
for p in "${ORDER[@]}"; do
    f="${p##*/}"
    case "$f" in
        *.ko) cp "$KROOT/$moddir/$p" "$ROOT/lib/modules/$f" ;;
        *.ko.xz) xz -dc "$KROOT/$moddir/$p" >"$ROOT/lib/modules/${f%.xz}"; f="${f%.xz}" ;;
        *.ko.zst) zstd -qdc "$KROOT/$moddir/$p" >"$ROOT/lib/modules/${f%.zst}"; f="${f%.zst}" ;;
        *.ko.gz) gzip -dc "$KROOT/$moddir/$p" >"$ROOT/lib/modules/${f%.gz}"; f="${f%.gz}" ;;
    esac
    echo "$f" >>"$ROOT/etc/modules"
done
log "kernel $kver, modules: $(tr '\n' ' ' <"$ROOT/etc/modules")"

# --- initramfs --------------------------------------------------------------
busybox="$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)"
[[ -x "$busybox" ]] || die "busybox-static binary not found"
guest_busybox="$busybox"
if [[ -n "$busybox_pkg" ]]; then  # the guest's own; the applets are listed by the machine's (same Debian release)
    (cd "$TMP/bb" && apt-get "${APT[@]}" download -q "$busybox_pkg" >/dev/null) \
        || die "apt-get download $busybox_pkg ($GUEST_ARCH) failed"
    dpkg-deb -x "$TMP"/bb/*.deb "$TMP/bb/root"
    guest_busybox="$TMP/bb/root/bin/busybox"
    [[ -s "$guest_busybox" ]] || die "no busybox in the $GUEST_ARCH busybox-static package"
fi
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc/acpi/PWRF,proc,sys,dev,mnt/seed,tmp,root,run,var/log}
ln -s /run "$ROOT/var/run"
cp "$guest_busybox" "$ROOT/bin/busybox"
for a in $("$busybox" --list-full); do
    [[ -e "$ROOT/$a" || "$a" == bin/busybox ]] || ln -s /bin/busybox "$ROOT/$a"
done

cat >"$ROOT/init" <<'EOF'
#!/bin/sh
# CloudPanel test guest init (generated by scripts/build-test-guest.sh)
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
exec </dev/console >/dev/console 2>&1
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </etc/modules
hostname cloudpanel-guest
ip link set lo up
# ACPI power button (virsh shutdown) -> /etc/acpi/PWRF/00000080 -> poweroff
acpid -c /etc/acpi -l /dev/null
# cloud-init style seed: filesystem labelled "cidata" (FAT labels: "CIDATA")
seed=
for i in 1 2 3; do  # block devices are normally probed by the time insmod returns
    seed="$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null)" && break
    ls /sys/block | grep -qvE '^(loop|ram)' || break  # no block devices at all
    sleep 0.2
done
if [ -n "$seed" ] && mount -o ro "$seed" /mnt/seed; then
    h="$(sed -n 's/^[[:space:]]*local-hostname:[[:space:]]*//p' /mnt/seed/meta-data 2>/dev/null \
         | head -n1 | tr -d "\"' \r\t")"
    if [ -n "$h" ]; then
        hostname "$h"
        echo "cloudpanel-guest hostname=$h"
    fi
fi
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    udhcpc -i eth0 -n -q -t 5 -s /etc/udhcpc.script >/dev/null 2>&1 &
fi
dmesg -n 1
# a second root shell on the first virtual terminal: the VGA display a VNC viewer sees
( while :; do setsid -c sh -l <>/dev/tty1 >&0 2>&0; sleep 0.2; done ) &
echo "cloudpanel-guest ready"
while :; do
    setsid cttyhack sh -l
    sleep 0.2
done
EOF

cat >"$ROOT/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# minimal busybox udhcpc script: apply the lease, report it on the console
case "$1" in
    deconfig) ip -4 addr flush dev "$interface" ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        : >/etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
        echo "cloudpanel-guest ip=$ip" >/dev/console
        ;;
esac
exit 0
EOF

cat >"$ROOT/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "cloudpanel-guest power button: powering off" >/dev/console
sync
umount /mnt/seed 2>/dev/null
poweroff -f
EOF

cat >"$ROOT/etc/profile" <<'EOF'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
PS1='\h:\w# '
EOF
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"
chmod 755 "$ROOT/init" "$ROOT/etc/udhcpc.script" "$ROOT/etc/acpi/PWRF/00000080"

# --- outputs ----------------------------------------------------------------
mkdir -p "$OUTDIR"
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) \
    | gzip -9n >"$OUTDIR/initrd.img.tmp"
cp "$vmlinuz" "$OUTDIR/vmlinuz.tmp"
mv -f "$OUTDIR/vmlinuz.tmp" "$OUTDIR/vmlinuz"
mv -f "$OUTDIR/initrd.img.tmp" "$OUTDIR/initrd.img"
echo "$kpkg $kver" >"$OUTDIR/kernel-version"
echo "$GUEST_ARCH" >"$OUTDIR/arch"
log "built $OUTDIR/vmlinuz ($(du -h "$OUTDIR/vmlinuz" | cut -f1)) and $OUTDIR/initrd.img ($(du -h "$OUTDIR/initrd.img" | cut -f1))"
