#!/usr/bin/env bash
# Start/stop/inspect a local libvirtd for CloudPanel development (Debian 12,
# root, no systemd).
#
#   scripts/libvirtd.sh start    # idempotent; waits until the socket answers
#   scripts/libvirtd.sh stop     # kills libvirtd, virtlogd and the subreaper
#   scripts/libvirtd.sh status   # exit 0 if qemu:///system answers, 3 if not
#
# libvirtd runs inside the network namespace "cloudpanel" (bridges, dnsmasq
# and firewall rules stay in there) under scripts/libvirt-subreaper.py, which
# reaps QEMU processes at once (PID 1 here reaps orphans ~1.8 s late, which
# would make `virsh destroy` slow). The unix sockets live in /var/run/libvirt
# as usual, so `virsh -c qemu:///system`, `lxc:///` and
# `test+unix:///default` work from the host namespace.
#
# Environment: CLOUDPANEL_NETNS (default cloudpanel),
#              LIBVIRTD_START_TIMEOUT (seconds, default 20).
set -euo pipefail

NETNS="${CLOUDPANEL_NETNS:-cloudpanel}"
TIMEOUT="${LIBVIRTD_START_TIMEOUT:-20}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
REAPER="$SCRIPT_DIR/libvirt-subreaper.py"
REAPER_PIDFILE=/var/run/cloudpanel-libvirt-subreaper.pid
LIBVIRTD_PIDFILE=/var/run/libvirtd.pid
VIRTLOGD_PIDFILE=/var/run/virtlogd.pid
LOG=/var/log/libvirt/cloudpanel-libvirtd.log
PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-lxc
          libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base iptables
          iproute2 python3)

log() { echo "libvirtd.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

python_bin() {
    # Prefer the system interpreter (the reaper only needs the stdlib).
    if [[ -x /usr/bin/python3 ]]; then echo /usr/bin/python3; else command -v python3; fi
}


ensure_config() {
    mkdir -p /var/log/libvirt /var/run/libvirt /etc/libvirt
    # The QEMU driver resolves its compiled-in default user/group
    # (libvirt-qemu) before reading qemu.conf, so they must exist even though
    # QEMU then runs as root (below). Debian's libvirt-daemon-system would
    # normally create them.
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    getent passwd libvirt-qemu >/dev/null \
        || useradd --system -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin \
                   -c "Libvirt Qemu" libvirt-qemu
    local conf=/etc/libvirt/qemu.conf key
    touch "$conf"
    for key in user group; do
        if grep -qE "^[[:space:]]*${key}[[:space:]]*=" "$conf"; then
            sed -i -E "s/^[[:space:]]*${key}[[:space:]]*=.*/${key} = \"root\"/" "$conf"
        else
            echo "${key} = \"root\"" >>"$conf"
        fi
    done
}

ensure_cgroups() {
    # Host side: the LXC driver wants the hugetlb controller mounted.
    if ! awk '$2 == "/sys/fs/cgroup/hugetlb" {f=1} END {exit !f}' /proc/mounts; then
        mkdir -p /sys/fs/cgroup/hugetlb
        mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
    fi
}

ensure_netns() {
    ip netns list | awk '{print $1}' | grep -qx "$NETNS" || ip netns add "$NETNS"
    ip -n "$NETNS" link set lo up
}

pid_alive() { # pidfile
    local pid
    [[ -s "$1" ]] && pid="$(cat "$1" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] \
        && kill -0 "$pid" 2>/dev/null
}

answers() { # uri
    timeout 5 virsh -q -c "$1" version >/dev/null 2>&1
}

inner() {
    # Runs via `ip netns exec`, which gives us a private mount namespace with
    # a fresh /sys: re-mount the host's cgroup hierarchies there (LXC and the
    # QEMU cgroup code need them). Then become the subreaper.
    if ! awk '$2 ~ "^/sys/fs/cgroup/" {f=1} END {exit !f}' /proc/self/mounts; then
        mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
        local type dir opts
        while read -r type dir opts; do
            mkdir -p "$dir"
            mount -t "$type" -o "$opts" "$type" "$dir" || log "warning: could not mount $dir"
        done < <(awk '$2 ~ "^/sys/fs/cgroup/" && ($3 == "cgroup" || $3 == "cgroup2") {print $3, $2, $4}' /proc/1/mounts)
    fi
    local cmd='libvirtd -d'
    pid_alive "$VIRTLOGD_PIDFILE" || cmd="virtlogd -d && $cmd"
    cd /
    exec "$(python_bin)" "$REAPER" "$REAPER_PIDFILE" /bin/sh -c "$cmd"
}

start() {
    if answers qemu:///system; then
        log "libvirtd already running (qemu:///system answers)"
        ensure_pool
        return 0
    fi
    [[ $EUID -eq 0 ]] || die "must run as root"
    ensure_packages "${PACKAGES[@]}"
    ensure_config
    ensure_cgroups
    ensure_netns
    if pid_alive "$LIBVIRTD_PIDFILE"; then
        log "libvirtd (pid $(cat "$LIBVIRTD_PIDFILE")) is running but not answering; waiting"
    else
        log "starting libvirtd in netns $NETNS (log: $LOG)"
        # Clean environment: libvirtd passes its PATH etc. on to QEMU/LXC.
        setsid nohup env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            LANG=C.UTF-8 HOME=/root ip netns exec "$NETNS" "$SELF" __inner \
            </dev/null >>"$LOG" 2>&1 &
        disown || true
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until answers qemu:///system; do
        if ((SECONDS >= deadline)); then
            log "error: libvirtd did not answer on /var/run/libvirt/libvirt-sock within ${TIMEOUT}s"
            log "last lines of $LOG and /var/log/libvirt/libvirtd.log:"
            tail -n 15 "$LOG" /var/log/libvirt/libvirtd.log >&2 2>/dev/null || true
            exit 1
        fi
        sleep 0.2
    done
    log "libvirtd is up"
    ensure_pool
    report_uris
}

ensure_pool() {
    # Instance disks go to the "default" directory pool, as on a stock libvirt install.
    virsh -q -c qemu:///system pool-info default >/dev/null 2>&1 || {
        mkdir -p /var/lib/libvirt/images
        virsh -q -c qemu:///system pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
        virsh -q -c qemu:///system pool-autostart default >/dev/null
    }
    local active
    active=$(virsh -q -c qemu:///system pool-list --name)
    grep -qE '^ *default *$' <<<"$active" || virsh -q -c qemu:///system pool-start default >/dev/null
}

report_uris() {
    local uri
    for uri in qemu:///system lxc:/// test+unix:///default; do
        if answers "$uri"; then echo "$uri: ok"; else echo "$uri: NOT working"; fi
    done
}

kill_pidfile() { # name pidfile
    local name="$1" pidfile="$2" pid i
    pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid="$(cat "$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    log "$name did not exit after 10s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop() {
    kill_pidfile libvirtd "$LIBVIRTD_PIDFILE"
    kill_pidfile virtlogd "$VIRTLOGD_PIDFILE"
    kill_pidfile subreaper "$REAPER_PIDFILE"
    log "stopped"
}

status() {
    local rc=0
    if answers qemu:///system; then
        echo "libvirtd: running (pid $(cat "$LIBVIRTD_PIDFILE" 2>/dev/null || echo '?'), netns $NETNS)"
    else
        echo "libvirtd: not answering"
        rc=3
    fi
    if pid_alive "$VIRTLOGD_PIDFILE"; then echo "virtlogd: running (pid $(cat "$VIRTLOGD_PIDFILE"))"; else echo "virtlogd: not running"; fi
    if pid_alive "$REAPER_PIDFILE"; then echo "subreaper: running (pid $(cat "$REAPER_PIDFILE"))"; else echo "subreaper: not running"; fi
    ((rc)) || report_uris
    return "$rc"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    __inner) inner ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
