#!/usr/bin/env bash
# Idempotent set-up steps shared by `make run` and `make test` (Debian 12, root).
#
#   scripts/setup.sh system [test]   apt packages (test adds Chromium for browser tests)
#   scripts/setup.sh python          .venv with the project and its dev tools
#   scripts/setup.sh node            npm packages served as static files
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUN_PACKAGES=(python3-venv libvirt-dev pkg-config gcc libvirt-daemon libvirt-daemon-driver-qemu
              libvirt-daemon-driver-lxc libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base iptables
              iproute2 busybox-static cpio nodejs npm fonts-dejavu-core)
# systemd: systemd-analyze checks the shipped units; xorriso, isolinux, syslinux-common: the installer ISO's build; qemu-system-arm: the aarch64 guest
TEST_PACKAGES=(chromium libxml2-utils systemd xorriso isolinux syslinux-common qemu-system-arm)

log() { echo "setup: $*" >&2; }

system() {
    local wanted=("${RUN_PACKAGES[@]}") missing=() p
    [[ "${1:-}" == test ]] && wanted+=("${TEST_PACKAGES[@]}")
    for p in "${wanted[@]}"; do
        # nodejs/npm may come from elsewhere than Debian: a working command is enough.
        if [[ "$p" == nodejs || "$p" == npm ]] && command -v "${p/nodejs/node}" >/dev/null; then continue; fi
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

python() {
    local stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
    [[ -f "$stamp" ]] && return 0
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    log "installing Python packages into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[dev]"
    rm -f .venv/.installed-*
    touch "$stamp"
}

node() {
    local stamp=node_modules/.installed-$(cat package.json package-lock.json | sha1sum | cut -c1-12)
    [[ -f "$stamp" ]] && return 0
    log "installing npm packages"
    npm ci --no-audit --no-fund --loglevel=error
    touch "$stamp"
}

"$@"
