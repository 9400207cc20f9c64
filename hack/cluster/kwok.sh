# Fake nodes for scale tests: kwok (sigs.k8s.io/kwok, built from its Go module) keeps the
# nodes labelled loops.dev/fake-node=true Ready and plays their Pods' lifecycle with its
# "fast" stages: a Pod placed there goes Running at once and, when a Job owns it, Succeeded
# right after, with no container. The nodes are tainted loops.dev/fake-node=true:NoSchedule,
# so only Pods that ask for them land there:
#   nodeSelector: {loops.dev/fake-node: "true"}
#   tolerations: [{key: loops.dev/fake-node, operator: Exists, effect: NoSchedule}]

KWOK_VERSION="v0.8.0"
KWOK_DIR="$CACHE_DIR/kwok-$KWOK_VERSION"
FAKE_NODE_LABEL="loops.dev/fake-node"

ensure_kwok() {
  [[ -x "$KWOK_DIR/bin/kwok" && -f "$KWOK_DIR/stages.yaml" ]] && return 0
  log "building kwok $KWOK_VERSION from its Go module"
  go_install "$KWOK_DIR/bin" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" || die "building kwok failed"
  # kwok's own stage definitions, from the same module: node-initialize and the lease
  # heartbeat for nodes, pod-ready, pod-complete (Job Pods) and pod-delete for Pods
  local src s
  src="$(go_module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")"
  for s in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
      pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo "---"
    cat "$src/kustomize/stage/$s.yaml"
  done >"$KWOK_DIR/stages.yaml.tmp"
  mv "$KWOK_DIR/stages.yaml.tmp" "$KWOK_DIR/stages.yaml"
}

start_kwok() {
  alive kwok && return 0
  start_bg kwok "$KWOK_DIR/bin/kwok" \
    --kubeconfig "$STATE_DIR/kwok.kubeconfig" \
    --config "$KWOK_DIR/stages.yaml" \
    --manage-nodes-with-label-selector "$FAKE_NODE_LABEL=true" \
    --cidr 10.86.0.0/16 --node-ip 127.0.0.2
}

fake_node_yaml() { # name
  cat <<EOF2
---
apiVersion: v1
kind: Node
metadata:
  name: $1
  labels:
    $FAKE_NODE_LABEL: "true"
    type: kwok
    kubernetes.io/hostname: $1
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
spec:
  taints:
  - {key: $FAKE_NODE_LABEL, value: "true", effect: NoSchedule}
status:
  allocatable: {cpu: "64", memory: 512Gi, pods: "1000"}
  capacity: {cpu: "64", memory: 512Gi, pods: "1000"}
EOF2
}

fake_nodes_ready() { # count
  local ready
  ready="$(kc get nodes -l "$FAKE_NODE_LABEL=true" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c '^True$')" || true
  ((ready == $1))
}

# fake-nodes N: exactly N Ready fake nodes (loops-fake-0 .. N-1), kwok running
cmd_fake_nodes() {
  local n="${1:-}"
  [[ "$n" =~ ^[0-9]+$ ]] || die "usage: hack/cluster.sh fake-nodes N"
  need_root
  apiserver_healthy || die "the cluster is not up (hack/cluster.sh up)"
  ensure_kwok
  start_kwok
  local i existing
  { for ((i = 0; i < n; i++)); do fake_node_yaml "loops-fake-$i"; done; } | kc apply -f - >/dev/null ||
    die "creating fake nodes failed"
  existing="$(kc get nodes -l "$FAKE_NODE_LABEL=true" -o name)"
  for node in $existing; do
    i="${node#node/loops-fake-}"
    [[ "$i" =~ ^[0-9]+$ ]] && ((i >= n)) && kc delete "$node" --wait=false >/dev/null
  done
  wait_for kwok 60 fake_nodes_ready "$n"
  log "$n fake node(s) Ready (label $FAKE_NODE_LABEL=true, taint $FAKE_NODE_LABEL=true:NoSchedule)"
}
