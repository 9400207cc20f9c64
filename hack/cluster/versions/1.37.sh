# Kubernetes 1.37, the default: kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet and kubectl built with the machine's Go from the k8s.io/kubernetes module and its
# staging modules at the matching v0.37 versions (hack/cluster/go-build.sh), and etcd 3.6
# built the same way (Debian's etcd 3.4 is older than this release supports).
# Everything this version needs to know lives here: build recipe, flags, configuration.

K8S_VERSION="1.37.2"
K8S_STAGING_VERSION="v0.37.2"
ETCD_VERSION="3.6.16"
K8S_CACHE="$CACHE_DIR/k8s-$K8S_VERSION"
K8S_BIN="$K8S_CACHE/bin"
# kubectl alone, for PATH (hack/cluster.sh env)
KUBECTL_BIN="$K8S_CACHE/kubectl-bin"
ETCD_BIN="$CACHE_DIR/etcd-$ETCD_VERSION/bin/etcd"
LEGACY_SA_TOKENS=0

version_apt_packages() { echo jq; }

k8s_ldflags() {
  local minor="${K8S_VERSION#*.}" p flags="-s -w"
  minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

ensure_version_binaries() {
  command -v go >/dev/null || die "no Go toolchain on PATH (Kubernetes $K8S_VERSION needs Go 1.26 or later)"
  local b ok=1
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet; do
    [[ -x "$K8S_BIN/$b" ]] || ok=0
  done
  if ((!ok)); then
    local blog="$K8S_CACHE/build.log"
    mkdir -p "$K8S_CACHE"
    log "building Kubernetes $K8S_VERSION from its Go modules (about 15 min on 2 cores; log: $blog)"
    "$CLUSTER_LIB/go-build.sh" k8s.io/kubernetes "v$K8S_VERSION" "$K8S_STAGING_VERSION" "$K8S_BIN" "$(k8s_ldflags)" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet >"$blog" 2>&1 ||
      { tail -n 30 "$blog" >&2; die "Kubernetes build failed (log: $blog)"; }
  fi
  if [[ ! -x "$KUBECTL_BIN/kubectl" ]]; then
    # about 30 s once the server's binaries are built: most of its packages are theirs
    log "building kubectl $K8S_VERSION from the same modules"
    "$CLUSTER_LIB/go-build.sh" k8s.io/kubernetes "v$K8S_VERSION" "$K8S_STAGING_VERSION" "$KUBECTL_BIN" "$(k8s_ldflags)" \
      k8s.io/kubernetes/cmd/kubectl >"$K8S_CACHE/kubectl-build.log" 2>&1 ||
      { tail -n 30 "$K8S_CACHE/kubectl-build.log" >&2; die "kubectl build failed (log: $K8S_CACHE/kubectl-build.log)"; }
  fi
  if [[ ! -x "$ETCD_BIN" ]]; then
    log "building etcd $ETCD_VERSION from its Go modules"
    "$CLUSTER_LIB/go-build.sh" go.etcd.io/etcd/server/v3 "v$ETCD_VERSION" "v$ETCD_VERSION" "$(dirname "$ETCD_BIN")" "-s -w" \
      etcd=go.etcd.io/etcd/server/v3 >"$K8S_CACHE/etcd-build.log" 2>&1 ||
      { tail -n 30 "$K8S_CACHE/etcd-build.log" >&2; die "etcd build failed"; }
  fi
  if [[ ! -x "$K8S_CACHE/pause/pause" ]]; then
    local dir
    dir="$(go_module_dir "k8s.io/kubernetes@v$K8S_VERSION")"
    compile_pause "$dir/build/pause/linux/pause.c" "$K8S_CACHE/pause/pause"
  fi
}

# The API server refuses a loopback address for the `kubernetes` Service's endpoints (1.20
# only logged it); nothing in the cluster uses them (hack/cluster/api-gateway.sh).
# Sharded list and watch (KEP-5866, alpha) is on, so that shards of the operator are sent
# their own LoopServices only.
apiserver_version_args() {
  echo --enable-admission-plugins NodeRestriction --endpoint-reconciler-type none --feature-gates ShardedListAndWatch=true
}

kcm_version_args() {
  echo --controllers '*,-node-ipam-controller'
}

scheduler_version_args() { :; }

# This machine mounts cgroup v1, which kubelet 1.35+ refuses unless told otherwise.
kubelet_config_extra() {
  cat <<EOC
failCgroupV1: false
containerRuntimeEndpoint: unix://$CTRD_SOCK
runtimeRequestTimeout: 5m
volumePluginDir: $KUBELET_DIR/volume-plugins
EOC
}

kubelet_version_args() { :; }
