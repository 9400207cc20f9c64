# containerd from Debian with runc and the CNI bridge plugin, all state under the state dir.
# restrict_oom_score_adj is required here: without it runc fails every pod sandbox.

CTRD_DIR="$STATE_DIR/containerd"
CTRD_SOCK="$CTRD_DIR/state/containerd.sock"
POD_SUBNET="10.85.0.0/24"
CNI_BRIDGE="loopsbr0"
# Pods get .2 to .200; hack/cluster/api-gateway.sh takes an address above that
POD_RANGE_END="10.85.0.200"

write_containerd_config() {
  mkdir -p "$CTRD_DIR"/{root,state,opt} "$STATE_DIR/cni/net.d" "$STATE_DIR/cni/networks"
  cat >"$STATE_DIR/cni/net.d/10-loops.conflist" <<EOF2
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
        "ranges": [[{"subnet": "$POD_SUBNET", "rangeEnd": "$POD_RANGE_END"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF2
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

containerd_healthy() { [[ -S "$CTRD_SOCK" ]] && ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; }

start_containerd() {
  alive containerd && return 0
  write_containerd_config
  start_bg containerd containerd --config "$CTRD_DIR/config.toml"
}

stop_containers() {
  [[ -S "$CTRD_SOCK" ]] && alive containerd || return 0
  local c=(ctr --address "$CTRD_SOCK" -n k8s.io) id ids
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

# Shims of this containerd left behind (e.g. containerd died): their pids are in the task
# bundles' shim.pid files under our state dir.
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
}
