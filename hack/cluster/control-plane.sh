# etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1. The flags all
# versions share are here; each version adds its own (versions/<minor>.sh).

etcd_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
apiserver_healthy() {
  curl -sf --max-time 3 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(admin_token)" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -q '^ok'
}
kcm_healthy() { curl -skf --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz" | grep -q '^ok'; }
sched_healthy() { curl -skf --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz" | grep -q '^ok'; }

start_etcd() {
  alive etcd && return 0
  mkdir -p "$STATE_DIR/etcd"
  chmod 700 "$STATE_DIR/etcd"
  # the pid file checks argv[0]'s base name, so the binary must be called etcd
  start_bg etcd "$ETCD_BIN" --name loops --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "loops=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --quota-backend-bytes 2147483648
}

# LOOPS_APISERVER_PROFILING=true serves /debug/pprof (for `go tool pprof` on a bench run).
start_apiserver() {
  alive kube-apiserver && return 0
  local extra; read -ra extra <<<"$(apiserver_version_args)"
  start_bg kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --token-auth-file "$PKI/tokens.csv" \
    --authorization-mode Node,RBAC \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged=true \
    --cert-dir "$STATE_DIR/apiserver-certs" \
    --profiling="${LOOPS_APISERVER_PROFILING:-false}" \
    --v=1 "${extra[@]}"
}

# The controller manager's and scheduler's client rate limits: Kubernetes' defaults (kcm 20
# QPS, burst 30), or LOOPS_CONTROL_PLANE_QPS (burst twice that) for scale runs on fake nodes,
# where the Job controller's few calls per Job otherwise cap completions near 3 Jobs/s.
qps_args() {
  local qps="${LOOPS_CONTROL_PLANE_QPS:-}"
  [[ -n "$qps" ]] && echo --kube-api-qps "$qps" --kube-api-burst "$((qps * 2))"
  return 0
}

start_kcm() {
  alive kube-controller-manager && return 0
  local kcfg="$STATE_DIR/kube-controller-manager.kubeconfig" extra
  read -ra extra <<<"$(kcm_version_args) $(qps_args)"
  start_bg kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$kcfg" --authentication-kubeconfig "$kcfg" --authorization-kubeconfig "$kcfg" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --cert-dir "$STATE_DIR/kcm-certs" \
    --leader-elect=false \
    --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --profiling=false \
    --v=1 "${extra[@]}"
}

start_scheduler() {
  alive kube-scheduler && return 0
  local kcfg="$STATE_DIR/kube-scheduler.kubeconfig" extra
  read -ra extra <<<"$(scheduler_version_args) $(qps_args)"
  start_bg kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$kcfg" --authentication-kubeconfig "$kcfg" --authorization-kubeconfig "$kcfg" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" \
    --cert-dir "$STATE_DIR/scheduler-certs" \
    --leader-elect=false \
    --profiling=false \
    --v=1 "${extra[@]}"
}
