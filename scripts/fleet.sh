#!/usr/bin/env bash
# Start/stop extra libvirt hosts on this machine: a fleet for tests and the demo, with real
# live migration between its hosts (Debian 12, root, no systemd).
#
#   scripts/fleet.sh start [N]   # idempotent; N hosts (default 2, at most 9); prints their URIs
#   scripts/fleet.sh stop        # stops every fleet host and removes the namespaces and links it made
#   scripts/fleet.sh status      # exit 0 if every started host answers, 3 if not
#   scripts/fleet.sh uris        # one qemu+tcp:// URI per started host
#   scripts/fleet.sh local-uris  # per started host, "tcp-uri=>unix-socket-uri": how a process of that host's own
#                                # (its worker, its listener) reaches it locally (CLOUDPANEL_LOCAL_URIS)
#
# Host i is a libvirtd (with its virtlogd) in a network namespace of its own, cp-host<i>, and
# a mount namespace in which private directories under $FLEET_DIR/host<i> cover
# /etc/libvirt, /var/lib/libvirt, /run/libvirt, /var/log/libvirt and /var/cache/libvirt: its
# own host UUID, definitions, storage pool, sockets and logs. Its eth0 (10.213.77.1<i>) is one
# end of a veth pair whose other end is on the bridge of the namespace cp-fabric; one more
# veth pair gives this machine's root namespace 10.213.77.1 on that bridge, so the panel
# reaches host i as qemu+tcp://10.213.77.1<i>/system. libvirtd listens on that private address
# only, without authentication (nothing outside this machine can reach it), and QEMU migrates
# over it. Nothing else of the machine's network changes.
#
# QEMU runs without cgroups under `ip netns exec` (it remounts /sys); that keeps two hosts
# from meeting in one cgroup while a guest is on both during a live migration.
#
# Environment: CLOUDPANEL_FLEET_DIR (default /var/lib/cloudpanel-fleet),
#              LIBVIRTD_START_TIMEOUT (seconds, default 20).
set -euo pipefail

FLEET_DIR="${CLOUDPANEL_FLEET_DIR:-/var/lib/cloudpanel-fleet}"
TIMEOUT="${LIBVIRTD_START_TIMEOUT:-20}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
REAPER="$SCRIPT_DIR/libvirt-subreaper.py"
FABRIC=cp-fabric
BRIDGE=cpfab0
NET=10.213.77
PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
          dnsmasq-base iptables iproute2 python3)

log() { echo "fleet.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=lib.sh
source "$SCRIPT_DIR/lib.sh"

address() { echo "$NET.1$1"; }
uri() { echo "qemu+tcp://$(address "$1")/system"; }
answers() { timeout 5 virsh -q -c "$(uri "$1")" version >/dev/null 2>&1; }
has_netns() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
started() { # the indexes of the hosts made so far
    local dir
    for dir in "$FLEET_DIR"/host[1-9]; do [[ -d "$dir" ]] && echo "${dir##*host}"; done
    return 0
}

ensure_fabric() {
    has_netns "$FABRIC" || ip netns add "$FABRIC"
    ip -n "$FABRIC" link set lo up
    ip -n "$FABRIC" link show "$BRIDGE" >/dev/null 2>&1 || ip -n "$FABRIC" link add "$BRIDGE" type bridge
    ip -n "$FABRIC" link set "$BRIDGE" up
    if ! ip link show cpfab-root >/dev/null 2>&1; then
        ip link add cpfab-root type veth peer name uplink netns "$FABRIC"
        ip addr add "$NET.1/24" dev cpfab-root
    fi
    ip link set cpfab-root up
    ip -n "$FABRIC" link set uplink master "$BRIDGE" up
}

ensure_link() { # i
    local ns="cp-host$1"
    has_netns "$ns" || ip netns add "$ns"
    ip -n "$ns" link set lo up
    if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
        ip -n "$FABRIC" link add "cph$1" type veth peer name eth0 netns "$ns"
        ip -n "$ns" addr add "$(address "$1")/24" dev eth0
    fi
    ip -n "$ns" link set eth0 up
    ip -n "$FABRIC" link set "cph$1" master "$BRIDGE" up
}

ensure_dirs() { # i
    local home="$FLEET_DIR/host$1" sub
    for sub in etc lib/images run log/qemu cache; do mkdir -p "$home/$sub"; done
    [[ -s "$home/uuid" ]] || cat /proc/sys/kernel/random/uuid >"$home/uuid"
    local addr
    addr="$(address "$1")"
    cat >"$home/etc/libvirtd.conf" <<EOF
# Written by scripts/fleet.sh: reachable only on the fleet's private bridge.
listen_tls = 0
listen_tcp = 1
listen_addr = "$addr"
auth_tcp = "none"
host_uuid = "$(cat "$home/uuid")"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    cat >"$home/etc/qemu.conf" <<EOF
# Written by scripts/fleet.sh.
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
migration_host = "$addr"
migration_address = "$addr"
EOF
    echo 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"' >"$home/etc/virtlogd.conf"
}

inner() { # i: runs inside the host's network, mount and UTS namespaces
    local home="$FLEET_DIR/host$1" pair
    mount --make-rprivate /
    for pair in etc:/etc/libvirt lib:/var/lib/libvirt run:/run/libvirt log:/var/log/libvirt \
                cache:/var/cache/libvirt; do
        mkdir -p "${pair#*:}"
        mount --bind "$home/${pair%%:*}" "${pair#*:}"
    done
    hostname "cp-host$1"
    cd /
    # A libvirtd that died leaves its virtlogd (and its guests' QEMU) running: the new one uses them.
    local cmd="libvirtd -d --listen -p /run/libvirt/libvirtd.pid" pid
    pid="$(cat "$home/run/virtlogd.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || cmd="virtlogd -d -p /run/libvirt/virtlogd.pid && $cmd"
    exec /usr/bin/python3 "$REAPER" "$home/reaper.pid.$$" /bin/sh -c "$cmd"
}

ensure_pool() { # i: instance disks go to its "default" directory pool, as on a stock install
    local c
    c="$(uri "$1")"
    virsh -q -c "$c" pool-info default >/dev/null 2>&1 || {
        virsh -q -c "$c" pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
        virsh -q -c "$c" pool-autostart default >/dev/null
    }
    virsh -q -c "$c" pool-list --name | grep -qE '^ *default *$' || virsh -q -c "$c" pool-start default >/dev/null
}

start_host() { # i
    local home="$FLEET_DIR/host$1"
    ensure_link "$1"
    ensure_dirs "$1"
    if ! answers "$1"; then
        log "starting host $1 in netns cp-host$1 (log: $home/log/libvirtd.log)"
        setsid nohup env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            LANG=C.UTF-8 HOME=/root ip netns exec "cp-host$1" unshare -m -u "$SELF" __inner "$1" \
            </dev/null >>"$home/start.log" 2>&1 &
        disown || true
        local deadline=$((SECONDS + TIMEOUT))
        until answers "$1"; do
            if ((SECONDS >= deadline)); then
                tail -n 15 "$home/start.log" "$home/log/libvirtd.log" >&2 2>/dev/null || true
                die "host $1 did not answer on $(uri "$1") within ${TIMEOUT}s"
            fi
            sleep 0.2
        done
    fi
    ensure_pool "$1"
}

start() {
    local count="${1:-2}" i
    [[ "$count" =~ ^[1-9]$ ]] || die "the number of hosts must be 1 to 9"
    [[ $EUID -eq 0 ]] || die "must run as root"
    ensure_packages "${PACKAGES[@]}"
    # libvirtd resolves QEMU's compiled-in default user before reading qemu.conf (see libvirtd.sh).
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    getent passwd libvirt-qemu >/dev/null || useradd --system -g libvirt-qemu -d /var/lib/libvirt \
        -s /usr/sbin/nologin libvirt-qemu
    ensure_fabric
    for ((i = 1; i <= count; i++)); do start_host "$i"; done
    uris
}

kill_tree() { # ns: every process in the host's network namespace (reapers, daemons, guests)
    local pid
    for pid in $(ip netns pids "$1" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
}

stop() {
    local i
    for i in $(started); do
        log "stopping host $i"
        kill_tree "cp-host$i"
        has_netns "cp-host$i" && ip netns del "cp-host$i"
        rm -f "$FLEET_DIR/host$i/"reaper.pid.* "$FLEET_DIR/host$i/run/"*.pid "$FLEET_DIR/host$i/run/"*-sock*
    done
    ip link del cpfab-root 2>/dev/null || true
    has_netns "$FABRIC" && ip netns del "$FABRIC"
    log "stopped"
}

uris() {
    local i
    for i in $(started); do answers "$i" && uri "$i"; done
    return 0
}

local_uris() {
    local i
    for i in $(started); do
        answers "$i" && echo "$(uri "$i")=>qemu:///system?socket=$FLEET_DIR/host$i/run/libvirt-sock"
    done
    return 0
}

status() {
    local i rc=0
    for i in $(started); do
        if answers "$i"; then echo "host $i: $(uri "$i") answers"; else echo "host $i: $(uri "$i") NOT answering"; rc=3; fi
    done
    return "$rc"
}

case "${1:-}" in
    start) start "${2:-2}" ;;
    stop) stop ;;
    status) status ;;
    uris) uris ;;
    local-uris) local_uris ;;
    __inner) inner "$2" ;;
    *) echo "usage: $0 {start [N]|stop|status|uris|local-uris}" >&2; exit 2 ;;
esac
