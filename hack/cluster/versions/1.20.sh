# Kubernetes 1.20.2, the oldest version tested: built with Go 1.15 from Debian's `kubernetes`
# source package (an API server built with Go 1.18 or later dies within minutes: its
# vendored reflect2 is unsound there), with Debian's etcd 3.4. kubectl is built from the same
# tree: a client within one minor version of the server, as Kubernetes supports, and every
# kubectl command the tests and scripts run exists in 1.20 (apply --dry-run=server, auth
# can-i --subresource, explain, rollout status, get --raw).
# Everything this version needs to know lives here: build recipe, flags, configuration.

K8S_VERSION="1.20.2"
K8S_DEB_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_CACHE="$CACHE_DIR/k8s-$K8S_VERSION"
K8S_BIN="$K8S_CACHE/bin"
# kubectl alone, for PATH (hack/cluster.sh env)
KUBECTL_BIN="$K8S_CACHE/kubectl-bin"
GO_ROOT="/usr/lib/go-1.15"
ETCD_BIN="/usr/bin/etcd"
# before 1.24 a namespace's default ServiceAccount needs its token Secret before Pods run
LEGACY_SA_TOKENS=1

version_apt_packages() {
  echo etcd-server rsync jq dpkg-dev
  [[ -x "$K8S_BIN/kubelet" && -x "$KUBECTL_BIN/kubectl" && -x "$K8S_CACHE/pause/pause" ]] || echo golang-1.15-go
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

# where each binary of the build goes
k8s_bin_dir() { if [[ "$1" == kubectl ]]; then echo "$KUBECTL_BIN"; else echo "$K8S_BIN"; fi; }

ensure_version_binaries() {
  local b missing=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    [[ -x "$(k8s_bin_dir "$b")/$b" ]] || missing+=("$b")
  done
  ((${#missing[@]})) || [[ ! -x "$K8S_CACHE/pause/pause" ]] || return 0
  [[ -x "$GO_ROOT/bin/go" ]] || die "Go 1.15 not found at $GO_ROOT (apt package golang-1.15-go)"
  local tree; tree="$(k8s_source_tree)"
  local blog="$K8S_CACHE/build.log"
  if ((${#missing[@]})); then
    log "building ${missing[*]} $K8S_VERSION with Go 1.15 (all of them: about 6 min on 2 cores; log: $blog)"
    mkdir -p "$K8S_CACHE/gohome"
    if ! (cd "$tree" && env PATH="$GO_ROOT/bin:$PATH" GOROOT="$GO_ROOT" CGO_ENABLED=0 GOFLAGS= \
        HOME="$K8S_CACHE/gohome" make WHAT="${missing[*]/#/cmd/}" >"$blog" 2>&1); then
      tail -n 30 "$blog" >&2
      die "Kubernetes build failed (log: $blog)"
    fi
  fi
  for b in "${missing[@]}"; do
    mkdir -p "$(k8s_bin_dir "$b")"
    install -m 0755 "$tree/_output/bin/$b" "$(k8s_bin_dir "$b")/$b.tmp"
    mv "$(k8s_bin_dir "$b")/$b.tmp" "$(k8s_bin_dir "$b")/$b"
  done
  compile_pause "$tree/build/pause/linux/pause.c" "$K8S_CACHE/pause/pause"
  log "Kubernetes binaries cached in $K8S_BIN"
  # the build tree and Go caches take ~2.5 GB; the source tarball stays for a rebuild
  chmod -R u+w "$K8S_CACHE/gohome" 2>/dev/null || true
  rm -rf "$K8S_CACHE/build" "$K8S_CACHE/gohome" || true
}

apiserver_version_args() {
  echo --insecure-port 0 --enable-admission-plugins NodeRestriction,ServiceAccount
}

kcm_version_args() {
  echo --port 0 --controllers '*,-nodeipam,-service,-route,-cloud-node-lifecycle' \
    --feature-gates CronJobControllerV2=true
}

scheduler_version_args() { echo --port 0; }

kubelet_config_extra() { :; }

kubelet_version_args() {
  echo --container-runtime remote --container-runtime-endpoint "unix://$CTRD_SOCK" \
    --runtime-request-timeout 5m --volume-plugin-dir "$KUBELET_DIR/volume-plugins" \
    --pod-infra-container-image "$PAUSE_IMAGE"
}
