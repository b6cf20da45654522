#!/usr/bin/env bash
# Build a tiny LXC system container root filesystem for CloudPanel development
# from Debian's busybox-static package:
#
#   OUTDIR/rootfs.tar.gz   gzip'd GNU tar (reproducible: owner 0:0 numeric,
#                          sorted names, mtime 0; relative member names; no
#                          device nodes, fifos, sockets or hardlinks). Contains
#                          /bin/busybox, a symlink per applet (-> /bin/busybox,
#                          including /sbin/init), dev proc sys tmp root run etc
#                          var/log, and etc/{passwd,group,hostname,profile,
#                          inittab}. No etc/shadow.
#
# Usage: scripts/build-container-image.sh [OUTDIR]   (default: <project>/.cache/container)
#        FORCE=1 scripts/build-container-image.sh    (rebuild even if up to date)
#
# Run it as a <domain type='lxc'> with <os><type>exe</type><init>/sbin/init</init>
# and a <filesystem type='mount'> whose source is the unpacked tree (with an
# <idmap>, chown the tree to the mapped root first, e.g. 100000:100000). The
# container console (/dev/console, a pty from libvirt) shows:
#   cloudpanel-container ready     then a root shell (respawned)
# SIGTERM to init (`virsh destroy`, `virsh shutdown --mode signal`, `reboot`
# inside) powers the container off at once. Note: libvirt 9.0's default
# `virsh shutdown` (initctl mode) does nothing here; there is no initctl fifo.
set -euo pipefail
umask 022

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRIPT="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
PROJECT_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OUTDIR="${1:-$PROJECT_ROOT/.cache/container}"
HOSTNAME_=cloudpanel-container

log() { echo "build-container-image: $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

if [[ -z "${FORCE:-}" && -s "$OUTDIR/rootfs.tar.gz" && "$OUTDIR/rootfs.tar.gz" -nt "$SCRIPT" ]]; then
    log "up to date: $OUTDIR/rootfs.tar.gz"
    exit 0
fi

ensure_packages busybox-static tar gzip

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP" "$OUTDIR/rootfs.tar.gz.tmp"' EXIT
ROOT="$TMP/rootfs"
mkdir -p "$ROOT"
chmod 755 "$ROOT"

# --- tree -------------------------------------------------------------------
busybox="$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)"
[[ -x "$busybox" ]] || die "busybox-static binary not found"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,run,etc,var/log}
chmod 1777 "$ROOT/tmp"
chmod 700 "$ROOT/root"
cp "$busybox" "$ROOT/bin/busybox"
chmod 755 "$ROOT/bin/busybox"
n=0
for a in $("$busybox" --list-full); do
    a="${a#/}"
    [[ "$a" == bin/busybox || -e "$ROOT/$a" || -L "$ROOT/$a" ]] && continue
    mkdir -p "$ROOT/$(dirname "$a")"
    ln -s /bin/busybox "$ROOT/$a"
    n=$((n + 1))
done
[[ -L "$ROOT/sbin/init" ]] || ln -s /bin/busybox "$ROOT/sbin/init"

echo "$HOSTNAME_" >"$ROOT/etc/hostname"
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"
cat >"$ROOT/etc/profile" <<'EOF'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
PS1='\h:\w# '
EOF
# busybox init: no tty field = init's own stdio, i.e. the container console.
# busybox init treats SIGTERM as "reboot" and then sleeps ~2 s (TERM, sleep 1,
# KILL, sleep 1) before calling reboot(2). libvirt's LXC `destroy` sends
# SIGTERM and SIGKILLs after 1.6 s, and `shutdown --mode signal` sends SIGTERM,
# so without the last line destroy takes ~1.8 s and a shutdown turns into a
# reboot. `poweroff -f` (reboot(2) in the container's PID namespace) ends init
# at once with "power off" status: destroy ~0.25 s, shutdown -> shut off.
# Side effect: `reboot` inside the container powers it off too.
cat >"$ROOT/etc/inittab" <<EOF
::sysinit:/bin/hostname -F /etc/hostname
::sysinit:/bin/echo $HOSTNAME_ ready
::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/true
::shutdown:/sbin/poweroff -f
EOF
chmod 644 "$ROOT"/etc/{hostname,passwd,group,profile,inittab}

# Paranoia: the archive must hold only directories, regular files and symlinks.
bad="$(find "$ROOT" ! -type d ! -type f ! -type l -print -quit)"
[[ -z "$bad" ]] || die "unexpected special file in the tree: ${bad#"$ROOT"/}"

# --- output -----------------------------------------------------------------
mkdir -p "$OUTDIR"
tar -C "$ROOT" --format=gnu --owner=0 --group=0 --numeric-owner --sort=name \
    --mtime=@0 --hard-dereference -cf - . \
    | gzip -9n >"$OUTDIR/rootfs.tar.gz.tmp"
mv -f "$OUTDIR/rootfs.tar.gz.tmp" "$OUTDIR/rootfs.tar.gz"
log "busybox $("$busybox" | head -n1 | awk '{print $2}'), $n applet links"
log "built $OUTDIR/rootfs.tar.gz ($(du -h "$OUTDIR/rootfs.tar.gz" | cut -f1))"
