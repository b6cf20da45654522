#!/usr/bin/env bash
# Build a bootable ISO of Debian's own installer (text mode) from Debian packages, for the test that drives an
# ISO install from the browser's graphical console:
#
#   OUTDIR/debian-installer.iso   the installer's kernel and initrd (debian-installer-12-netboot-amd64, fetched
#                                 with `apt-get download`), booted by isolinux (BIOS, El Torito)
#
# Usage: scripts/build-installer-iso.sh [OUTDIR]   (default: <project>/.cache/installer)
#        FORCE=1 scripts/build-installer-iso.sh    (rebuild even if up to date)
# Needs xorriso, isolinux and syslinux-common (scripts/setup.sh system test installs them).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRIPT="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
PROJECT_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OUTDIR="${1:-$PROJECT_ROOT/.cache/installer}"
PACKAGE=debian-installer-12-netboot-amd64
IMAGES=usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64

log() { echo "build-installer-iso: $*" >&2; }

if [[ -z "${FORCE:-}" && -s "$OUTDIR/debian-installer.iso" && "$OUTDIR/debian-installer.iso" -nt "$SCRIPT" ]]; then
    exit 0
fi
for tool in xorriso /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32; do
    command -v "$tool" >/dev/null || [[ -e "$tool" ]] || { log "error: $tool is missing (scripts/setup.sh system test)"; exit 1; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "downloading $PACKAGE"
(cd "$work" && apt-get download -q "$PACKAGE" >/dev/null)
dpkg-deb -x "$work"/"$PACKAGE"_*.deb "$work/deb"
mkdir -p "$work/iso/isolinux" "$work/iso/install" "$OUTDIR"
cp "$work/deb/$IMAGES/linux" "$work/deb/$IMAGES/initrd.gz" "$work/iso/install/"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$work/iso/isolinux/"
cat > "$work/iso/isolinux/isolinux.cfg" <<'CFG'
default install
prompt 0
timeout 0
label install
  kernel /install/linux
  append initrd=/install/initrd.gz vga=788 --- quiet
CFG
xorriso -as mkisofs -quiet -o "$OUTDIR/debian-installer.iso.part" -V DEBIAN_INSTALLER \
    -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table "$work/iso"
mv "$OUTDIR/debian-installer.iso.part" "$OUTDIR/debian-installer.iso"
log "built $OUTDIR/debian-installer.iso ($(du -h "$OUTDIR/debian-installer.iso" | cut -f1))"
