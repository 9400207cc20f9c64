#!/usr/bin/env bash
# A local single-node Kubernetes, all on 127.0.0.1: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd and a kubelet, run as background
# processes with pid files and logs under the state dir; fake kwok nodes on request.
#
#   hack/cluster.sh up                 the newest supported Kubernetes (1.37)
#   KUBERNETES_VERSION=1.20 hack/cluster.sh up   the oldest tested (Debian's 1.20)
#   hack/cluster.sh build              fetch and build this version's parts, start nothing
#   hack/cluster.sh status|down|env
#   hack/cluster.sh fake-nodes N       N Ready fake nodes (kwok) for scale tests
#   hack/cluster.sh kueue              Kueue running against the cluster, for the queue tests
#   hack/cluster.sh import-image <dir-or-static-binary> <image-ref> [--entrypoint X] [--cmd X] [--user U] [--env K=V]
#   hack/cluster.sh stop|start <component>   one control-plane component of the running
#                                      cluster (etcd, kube-apiserver, kube-controller-manager,
#                                      kube-scheduler), for tests of outages; start waits
#                                      until it is healthy again
#
# eval "$(hack/cluster.sh env)" gives a shell kubectl (of the cluster's version) and helm
# against the cluster.
# Each part lives in hack/cluster/: one file per component, and one per Kubernetes version
# (versions/<minor>.sh) with that version's build recipe, flags and configuration.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER_LIB="$HACK_DIR/cluster"
DEFAULT_KUBERNETES_VERSION="1.37"

source "$CLUSTER_LIB/lib.sh"

# The version of the running cluster wins for every command but `up`, so that `down`,
# `status`, `env` and `import-image` work the same whichever version is up.
running_version="$(cat "$VERSION_FILE" 2>/dev/null || true)"
requested_version="${KUBERNETES_VERSION:-}"
K8S_MINOR="${requested_version:-${running_version:-$DEFAULT_KUBERNETES_VERSION}}"
K8S_MINOR="${K8S_MINOR#v}"
K8S_MINOR="$(cut -d. -f1,2 <<<"$K8S_MINOR")"
[[ -f "$CLUSTER_LIB/versions/$K8S_MINOR.sh" ]] ||
  die "Kubernetes $K8S_MINOR is not supported here; supported: $(cd "$CLUSTER_LIB/versions" && ls | sed 's/\.sh$//' | tr '\n' ' ')"

source "$CLUSTER_LIB/packages.sh"
source "$CLUSTER_LIB/tools.sh"
source "$CLUSTER_LIB/images.sh"
source "$CLUSTER_LIB/pki.sh"
source "$CLUSTER_LIB/containerd.sh"
source "$CLUSTER_LIB/control-plane.sh"
source "$CLUSTER_LIB/kubelet.sh"
source "$CLUSTER_LIB/api-gateway.sh"
source "$CLUSTER_LIB/kwok.sh"
source "$CLUSTER_LIB/kueue.sh"
source "$CLUSTER_LIB/down.sh"
source "$CLUSTER_LIB/versions/$K8S_MINOR.sh"

COMPONENTS=(etcd kube-apiserver containerd kube-controller-manager kube-scheduler kubelet api-relay api-gateway)

healthy() {
  case "$1" in
    etcd) etcd_healthy ;;
    kube-apiserver) apiserver_healthy ;;
    kube-controller-manager) kcm_healthy ;;
    kube-scheduler) sched_healthy ;;
    containerd) containerd_healthy ;;
    kubelet) kubelet_healthy ;;
    api-relay) [[ -S "$API_RELAY_SOCK" ]] ;;
    api-gateway) api_gateway_healthy ;;
  esac
}

cluster_healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do
    alive "$c" && healthy "$c" || return 1
  done
  [[ -x "$KUBECTL_BIN/kubectl" && -x "$TOOLS_BIN/helm" ]] && node_ready && default_sa_exists
}

check_paths() {
  # unix socket paths must stay below 108 bytes; the longest we make is containerd's
  ((${#CTRD_SOCK} < 100)) || die "state dir too long for unix sockets: $STATE_DIR (set LOOPS_CLUSTER_DIR)"
}

cmd_up() {
  need_root
  check_paths
  if [[ -n "$running_version" && "$running_version" != "$K8S_MINOR" ]] && alive kube-apiserver; then
    die "Kubernetes $running_version is running; bring it down first (hack/cluster.sh down)"
  fi
  if [[ -f "$PKI/tokens.csv" ]] && cluster_healthy; then
    log "cluster already up and healthy (Kubernetes $K8S_VERSION)"
    return 0
  fi
  local t0=$SECONDS
  ensure_packages
  ensure_helm
  ensure_version_binaries
  ensure_image_tarballs
  ensure_pki
  echo "$K8S_MINOR" >"$VERSION_FILE"

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
  start_api_gateway
  wait_for api-gateway 30 api_gateway_healthy
  wait_for kube-controller-manager 60 kcm_healthy
  wait_for kube-scheduler 60 sched_healthy
  wait_for kubelet 60 kubelet_healthy
  wait_for kubelet 120 node_ready
  wait_for kube-controller-manager 60 default_sa_exists
  log "cluster up in $((SECONDS - t0))s: Kubernetes $K8S_VERSION, node $NODE_NAME Ready"
  echo "# use it with:  eval \"\$($HACK_DIR/cluster.sh env)\"" >&2
}

cmd_status() {
  local c pid rc=0 h
  if [[ -n "$running_version" ]]; then
    echo "kubernetes: $K8S_VERSION (built: $K8S_BIN)"
  fi
  for c in "${COMPONENTS[@]}" kwok kueue; do
    pid="$(pid_of "$c")"
    if alive "$c"; then
      if [[ "$c" == kwok ]]; then h=running; elif [[ "$c" == kueue ]]; then if kueue_healthy; then h=healthy; else h=unhealthy; fi; elif [[ -f "$PKI/tokens.csv" ]] && healthy "$c"; then h=healthy; else h=unhealthy; rc=1; fi
      echo "$c: running (pid $pid), $h"
    elif [[ "$c" != kwok && "$c" != kueue ]]; then
      echo "$c: stopped"
      rc=1
    fi
  done
  if alive kube-apiserver && [[ -x "$KUBECTL_BIN/kubectl" ]]; then
    echo "server version: $(kc version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])' 2>/dev/null || echo unknown)"
    if node_ready; then echo "node $NODE_NAME: Ready"; else echo "node $NODE_NAME: not ready"; rc=1; fi
    local fakes; fakes="$(kc get nodes -l "$FAKE_NODE_LABEL=true" -o name 2>/dev/null | wc -l)"
    ((fakes == 0)) || echo "fake nodes: $fakes"
  fi
  return $rc
}

cmd_env() {
  echo "export KUBECONFIG=\"$ADMIN_KUBECONFIG\""
  # kubectl of the cluster's own version first: no skew warning, and no other kubectl on
  # PATH answers in its place
  echo "export PATH=\"$KUBECTL_BIN:$TOOLS_BIN:\$PATH\""
  echo "export LOOPS_CONTAINERD_ADDRESS=\"$CTRD_SOCK\""
}

# The components `stop` and `start` handle, each with its start function and health check.
RESTARTABLE=(etcd kube-apiserver kube-controller-manager kube-scheduler)

restartable() {
  local c
  for c in "${RESTARTABLE[@]}"; do [[ "$c" == "$1" ]] && return 0; done
  die "usage: $0 stop|start {${RESTARTABLE[*]}} (got '${1:-}')"
}

cmd_stop() {
  local c="${1:-}"
  restartable "$c"
  need_root
  [[ -n "$running_version" ]] || die "no cluster is up"
  stop_component "$c"
  log "$c stopped"
}

cmd_start() {
  local c="${1:-}"
  restartable "$c"
  need_root
  [[ -n "$running_version" ]] || die "no cluster is up"
  case "$c" in
    etcd) start_etcd; wait_for etcd 60 etcd_healthy ;;
    kube-apiserver) start_apiserver; wait_for kube-apiserver 120 apiserver_healthy ;;
    kube-controller-manager) start_kcm; wait_for kube-controller-manager 60 kcm_healthy ;;
    kube-scheduler) start_scheduler; wait_for kube-scheduler 60 sched_healthy ;;
  esac
  log "$c running (pid $(pid_of "$c")), healthy"
}

# Everything `up` would fetch or build, without starting anything: warms the caches of a
# version while another runs.
cmd_build() {
  need_root
  ensure_packages
  ensure_helm
  ensure_version_binaries
  ensure_image_tarballs
  log "Kubernetes $K8S_VERSION is built"
}

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    build) cmd_build "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    fake-nodes) cmd_fake_nodes "$@" ;;
    kueue) cmd_kueue "$@" ;;
    import-image) cmd_import_image "$@" ;;
    stop) cmd_stop "$@" ;;
    start) cmd_start "$@" ;;
    *) echo "usage: $0 {up|build|down|status|env|fake-nodes N|kueue|import-image <dir-or-binary> <image-ref> [opts]|stop <component>|start <component>}" >&2; exit 2 ;;
  esac
}

main "$@"
