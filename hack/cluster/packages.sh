# Debian packages the cluster needs: the container runtime, busybox for job images, build
# tools, and the test tools (promtool and prometheus for the alert tests). Each version adds
# its own (version_apt_packages).

COMMON_APT_PACKAGES=(containerd runc containernetworking-plugins busybox-static gcc libc6-dev make
  openssl curl iproute2 procps socat python3 python3-pip prometheus)

# Sources of our own, each in its own file: Debian 12's source packages (Kubernetes 1.20's
# source) and Debian 11 pinned low, from which only golang-1.15-go is taken.
ensure_apt_sources() {
  local changed=0
  if [[ ! -f /etc/apt/sources.list.d/loops-bookworm-src.sources ]]; then
    cat >/etc/apt/sources.list.d/loops-bookworm-src.sources <<'EOS'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
    changed=1
  fi
  if [[ ! -f /etc/apt/sources.list.d/loops-bullseye.sources ]]; then
    cat >/etc/apt/sources.list.d/loops-bullseye.sources <<'EOS'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
    changed=1
  fi
  if [[ ! -f /etc/apt/preferences.d/loops-bullseye ]]; then
    cat >/etc/apt/preferences.d/loops-bullseye <<'EOS'
# Only golang-1.15-go (to build Kubernetes 1.20) comes from bullseye.
Package: *
Pin: release n=bullseye
Pin-Priority: 100
EOS
    changed=1
  fi
  if ((changed)); then
    log "apt-get update (new sources)"
    apt-get update -qq
  fi
}

ensure_packages() {
  local missing=() p want
  # A version may print its packages over several lines: all of them count.
  read -ra want <<<"${COMMON_APT_PACKAGES[*]} $(version_apt_packages | tr '\n' ' ')"
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  ensure_apt_sources
  log "installing apt packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
    die "apt-get install ${missing[*]} failed"
}
