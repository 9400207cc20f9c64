# The one real node: a kubelet on 127.0.0.1 using our containerd. With --node-ip 127.0.0.1 it
# reports no address, so `kubectl logs`/`exec` do not work; the termination message does.

KUBELET_DIR="$STATE_DIR/kubelet"

write_kubelet_config() {
  mkdir -p "$KUBELET_DIR"/{pki,volume-plugins}
  {
    cat <<EOF2
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
EOF2
    kubelet_config_extra
  } >"$STATE_DIR/kubelet-config.yaml"
}

# The kubelet sets these kernel tunables (it cannot be told not to); remember the host's
# values so that `down` restores them.
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

kubelet_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" | grep -q '^ok'; }

node_ready() {
  local out
  out="$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}|{.spec.unschedulable}|{.spec.taints[*].key}' 2>/dev/null)" || return 1
  [[ "$out" == True\|* ]] || return 1
  [[ "$out" != *"|true|"* ]] || return 1
  [[ "$out" != *node.kubernetes.io/not-ready* && "$out" != *node.kubernetes.io/unreachable* ]]
}

# the default ServiceAccount exists (and, before 1.24, has its token Secret)
default_sa_exists() {
  if ((LEGACY_SA_TOKENS)); then
    [[ -n "$(kc -n default get serviceaccount default -o jsonpath='{.secrets[0].name}' 2>/dev/null)" ]]
  else
    kc -n default get serviceaccount default >/dev/null 2>&1
  fi
}

start_kubelet() {
  alive kubelet && return 0
  write_kubelet_config
  save_sysctls
  if [[ ! -f "$STATE_DIR/var-log-pods.before" ]]; then
    ls -1 /var/log/pods 2>/dev/null >"$STATE_DIR/var-log-pods.before" || true
  fi
  local extra; read -ra extra <<<"$(kubelet_version_args)"
  start_bg kubelet "$K8S_BIN/kubelet" \
    --config "$STATE_DIR/kubelet-config.yaml" \
    --kubeconfig "$STATE_DIR/kubelet.kubeconfig" \
    --root-dir "$KUBELET_DIR" \
    --cert-dir "$KUBELET_DIR/pki" \
    --hostname-override "$NODE_NAME" \
    --node-ip 127.0.0.1 \
    --v=1 "${extra[@]}"
}
