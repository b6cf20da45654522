# Shared by CloudPanel's set-up scripts (sourced; each defines log and die first).

# Install the Debian packages given that are not installed yet.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing missing packages: ${missing[*]}"
        [[ $EUID -eq 0 ]] || die "need root to install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}
