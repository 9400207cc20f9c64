# The cluster's own CA, the API server's serving certificate, the ServiceAccount signing key,
# static bearer tokens for the admin and each component, and their kubeconfigs.

token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

write_kubeconfig() { # file user token
  cat >"$1" <<EOF2
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
EOF2
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
    cat >"$PKI/apiserver.ext" <<EOF2
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$API_GATEWAY_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF2
    openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  fi
  if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  if [[ ! -f "$PKI/tokens.csv" ]]; then
    local admin kubelet kcm sched kwok
    admin="$(token)"; kubelet="$(token)"; kcm="$(token)"; sched="$(token)"; kwok="$(token)"
    cat >"$PKI/tokens.csv" <<EOF2
$admin,admin,admin,"system:masters"
$kubelet,system:node:$NODE_NAME,kubelet-$NODE_NAME,"system:nodes"
$kcm,system:kube-controller-manager,kube-controller-manager
$sched,system:kube-scheduler,kube-scheduler
$kwok,kwok,kwok,"system:masters"
EOF2
    chmod 600 "$PKI/tokens.csv"
    write_kubeconfig "$ADMIN_KUBECONFIG" admin "$admin"
    write_kubeconfig "$STATE_DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" "$kubelet"
    write_kubeconfig "$STATE_DIR/kube-controller-manager.kubeconfig" system:kube-controller-manager "$kcm"
    write_kubeconfig "$STATE_DIR/kube-scheduler.kubeconfig" system:kube-scheduler "$sched"
    write_kubeconfig "$STATE_DIR/kwok.kubeconfig" kwok "$kwok"
  fi
}
