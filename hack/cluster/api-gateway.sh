# How Pods reach the API server. The API server listens on 127.0.0.1 only, and each Pod has a
# network namespace of its own, so a network namespace of ours (loops-api) sits on the Pod
# bridge with the address API_GATEWAY_IP and relays: a socat inside it listens on
# API_GATEWAY_IP:443 and hands each connection over a unix socket (the file system is shared
# between network namespaces) to a socat in the host's namespace that connects to
# 127.0.0.1:APISERVER_PORT. TLS passes through untouched; the serving certificate names the
# address. In-cluster clients (the Helm-installed operator) set KUBERNETES_SERVICE_HOST to it
# (hack/values-local.yaml), since no kube-proxy serves the `kubernetes` Service here.

API_NETNS="loops-api"
API_GATEWAY_IP="10.85.0.250"
API_VETH="loops-api0"
API_RELAY_SOCK="$RUN/apiserver-relay.sock"

api_gateway_healthy() {
  ip netns exec "$API_NETNS" curl -sf --max-time 3 --cacert "$PKI/ca.crt" \
    -H "Authorization: Bearer $(admin_token)" "https://$API_GATEWAY_IP/readyz" | grep -q '^ok'
}

start_api_gateway() {
  if ! ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
    # the CNI bridge plugin makes it on the first Pod; make it first, it adopts ours
    ip link add "$CNI_BRIDGE" type bridge
  fi
  ip link set "$CNI_BRIDGE" up
  ip netns list | grep -qw "$API_NETNS" || ip netns add "$API_NETNS"
  # A veth left from a namespace that is gone has no peer with the address: make it again.
  if ip link show "$API_VETH" >/dev/null 2>&1 &&
    ! ip -n "$API_NETNS" addr show eth0 2>/dev/null | grep -q "$API_GATEWAY_IP/"; then
    ip link del "$API_VETH" 2>/dev/null || true
  fi
  if ! ip link show "$API_VETH" >/dev/null 2>&1; then
    ip link add "$API_VETH" type veth peer name eth0 netns "$API_NETNS"
    ip link set "$API_VETH" master "$CNI_BRIDGE" up
    ip -n "$API_NETNS" addr add "$API_GATEWAY_IP/24" dev eth0
    ip -n "$API_NETNS" link set eth0 up
    ip -n "$API_NETNS" link set lo up
  fi
  alive api-relay || start_bg_as api-relay socat socat \
    "UNIX-LISTEN:$API_RELAY_SOCK,fork,unlink-early,mode=600" "TCP:127.0.0.1:$APISERVER_PORT"
  alive api-gateway || start_bg_as api-gateway socat ip netns exec "$API_NETNS" socat \
    "TCP-LISTEN:443,bind=$API_GATEWAY_IP,fork,reuseaddr" "UNIX-CONNECT:$API_RELAY_SOCK"
}

stop_api_gateway() {
  stop_component api-gateway
  stop_component api-relay
  ip link del "$API_VETH" 2>/dev/null || true
  ip netns del "$API_NETNS" 2>/dev/null || true
}
