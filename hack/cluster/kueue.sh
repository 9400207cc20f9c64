# Kueue (sigs.k8s.io/kueue), built from its Go module and run out of the cluster against it,
# for the tests of LoopServices whose Jobs wait in a queue. Only its Job integration is on; it
# manages only Jobs labelled kueue.x-k8s.io/queue-name. Its webhooks are never registered with
# the API server (a loop's Job is created suspended, as Kueue's webhook would make it), so its
# webhook server, which it always starts, serves a self-signed certificate on loopback only.
# Its metrics server needs a certificate at the path Kueue hard-codes, /etc/kueue/metrics/certs.

KUEUE_VERSION="v0.19.2"
KUEUE_DIR="$CACHE_DIR/kueue-$KUEUE_VERSION"
KUEUE_STATE="$STATE_DIR/kueue"
KUEUE_METRICS_CERTS="/etc/kueue/metrics/certs"
KUEUE_HEALTH_PORT=28081
KUEUE_METRICS_PORT=28443
KUEUE_WEBHOOK_PORT=29443

ensure_kueue() {
  [[ -x "$KUEUE_DIR/bin/kueue" && -d "$KUEUE_DIR/crds" ]] && return 0
  log "building Kueue $KUEUE_VERSION from its Go module (a few minutes, once)"
  go_install "$KUEUE_DIR/bin" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" || die "building Kueue failed"
  # Its CRDs, from the same module.
  local src
  src="$(go_module_dir "sigs.k8s.io/kueue@$KUEUE_VERSION")"
  rm -rf "$KUEUE_DIR/crds.tmp"
  mkdir -p "$KUEUE_DIR/crds.tmp"
  cp "$src"/config/components/crd/bases/*.yaml "$KUEUE_DIR/crds.tmp/"
  mv "$KUEUE_DIR/crds.tmp" "$KUEUE_DIR/crds"
}

# self_signed DIR: tls.crt and tls.key for 127.0.0.1 in DIR, unless there
self_signed() {
  [[ -f "$1/tls.crt" && -f "$1/tls.key" ]] && return 0
  mkdir -p "$1"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=kueue-local" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$1/tls.key" -out "$1/tls.crt" 2>/dev/null || die "making a certificate in $1 failed"
}

kueue_config() {
  cat <<EOF2
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
health:
  healthProbeBindAddress: 127.0.0.1:$KUEUE_HEALTH_PORT
metrics:
  bindAddress: 127.0.0.1:$KUEUE_METRICS_PORT
webhook:
  host: 127.0.0.1
  port: $KUEUE_WEBHOOK_PORT
  certDir: $KUEUE_STATE/webhook-certs
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
manageJobsWithoutQueueName: false
integrations:
  frameworks:
  - batch/job
featureGates:
  VisibilityOnDemand: false
EOF2
}

kueue_crds_served() { kc get clusterqueues.kueue.x-k8s.io,localqueues.kueue.x-k8s.io,workloads.kueue.x-k8s.io >/dev/null 2>&1; }

kueue_healthy() { curl -fsS "http://127.0.0.1:$KUEUE_HEALTH_PORT/readyz" >/dev/null 2>&1; }

start_kueue() {
  alive kueue && kueue_healthy && return 0
  alive kueue && stop_component kueue
  self_signed "$KUEUE_STATE/webhook-certs"
  self_signed "$KUEUE_METRICS_CERTS"
  kueue_config >"$KUEUE_STATE/config.yaml"
  kc apply --server-side --force-conflicts -f "$KUEUE_DIR/crds" >/dev/null || die "installing Kueue's CRDs failed"
  wait_for kueue-crds 60 kueue_crds_served
  kc get namespace kueue-system >/dev/null 2>&1 || kc create namespace kueue-system >/dev/null
  start_bg kueue env KUBECONFIG="$ADMIN_KUBECONFIG" "$KUEUE_DIR/bin/kueue" --config "$KUEUE_STATE/config.yaml"
}

# kueue: Kueue running against the cluster (built once), its CRDs installed
cmd_kueue() {
  need_root
  apiserver_healthy || die "the cluster is not up (hack/cluster.sh up)"
  ensure_kueue
  local t0=$SECONDS
  start_kueue
  wait_for kueue 120 kueue_healthy
  log "Kueue $KUEUE_VERSION ready in $((SECONDS - t0))s (pid $(pid_of kueue); log $LOGS/kueue.log)"
}
