# Shared by the hack/cluster/ parts: paths, logging, and background processes with pid files.
# Sourced by hack/cluster.sh; nothing here starts anything by itself.

STATE_DIR="${LOOPS_CLUSTER_DIR:-$HOME/.local/state/loops-cluster}"
CACHE_DIR="${LOOPS_CACHE_DIR:-$HOME/.cache/loopservice-operator}"

PKI="$STATE_DIR/pki"
RUN="$STATE_DIR/run"
LOGS="$STATE_DIR/logs"
ADMIN_KUBECONFIG="$STATE_DIR/admin.kubeconfig"
# the Kubernetes minor version the running cluster was brought up with
VERSION_FILE="$STATE_DIR/kubernetes-version"

NODE_NAME="${LOOPS_NODE_NAME:-loops-node}"
ETCD_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=16443
KCM_PORT=20257
SCHED_PORT=20259
KUBELET_PORT=20250
KUBELET_HEALTHZ_PORT=20248
SERVICE_CIDR="10.96.0.0/16"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (containerd and the kubelet need it)"; }

# fail_component NAME MESSAGE: name the failed component, show the tail of its log.
fail_component() {
  local c="$1"; shift
  log "ERROR: component '$c' failed: $*"
  if [[ -f "$LOGS/$c.log" ]]; then
    echo "----- last 40 lines of $LOGS/$c.log -----" >&2
    tail -n 40 "$LOGS/$c.log" >&2 || true
    echo "-----" >&2
  fi
  exit 1
}

pidfile() { echo "$RUN/$1.pid"; }
pid_of() {
  local f; f="$(pidfile "$1")"
  [[ -f "$f" ]] && cat "$f" 2>/dev/null || true
}

# alive NAME: the recorded pid runs and still is that component (guards against pid reuse):
# its program's name is NAME, or the one start_bg_as recorded
alive() {
  local pid; pid="$(pid_of "$1")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  local argv0 want="$1"
  argv0="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1)"
  [[ -f "$RUN/$1.program" ]] && want="$(cat "$RUN/$1.program")"
  [[ "$(basename -- "$argv0")" == "$want" ]]
}

# running PID: the process exists and has not exited (a zombie not yet reaped has exited).
# Unlike alive, it holds while a just-started component still execs its way to its program
# (setsid, then `ip netns exec`, then socat), when its name is not yet the program's.
running() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# start_bg NAME CMD...: run CMD in its own session, log to $LOGS/NAME.log, pid to $RUN/NAME.pid
start_bg() {
  local name="$1"; shift
  mkdir -p "$RUN" "$LOGS"
  log "starting $name"
  echo "===== $(date -u +%FT%TZ) starting $name: $*" >>"$LOGS/$name.log"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

# start_bg_as NAME PROGRAM CMD...: start_bg for a component whose process runs PROGRAM
# (after any exec) rather than a program called NAME
start_bg_as() {
  local name="$1" program="$2"; shift 2
  mkdir -p "$RUN"
  echo "$program" >"$RUN/$name.program"
  start_bg "$name" "$@"
}

# stop_component NAME: TERM the recorded pid, wait, then KILL.
stop_component() {
  local name="$1" pid i
  pid="$(pid_of "$name")"
  if [[ -n "$pid" ]] && alive "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop on TERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$(pidfile "$name")" "$RUN/$name.program"
}

# wait_for NAME TIMEOUT_S CHECK...: poll CHECK until success; fail NAME if its process died
# or the timeout passed.
wait_for() {
  local name="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  while ! "$@" >/dev/null 2>&1; do
    local pid; pid="$(pid_of "$name")"
    if [[ -n "$pid" ]] && ! running "$pid"; then
      fail_component "$name" "process exited"
    fi
    if ((SECONDS >= deadline)); then
      fail_component "$name" "not healthy after ${timeout}s (check: $*)"
    fi
    sleep 0.5
  done
}

admin_token() { awk -F, '$2=="admin"{print $1; exit}' "$PKI/tokens.csv"; }
# kubectl of the cluster's version (KUBECTL_BIN, from versions/<minor>.sh)
kc() { "$KUBECTL_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=5s "$@"; }

# go_install BIN_DIR MODULE/cmd/NAME@VERSION: one command of a published Go module, built
# static and stripped into BIN_DIR, with this machine's Go.
go_install() {
  command -v go >/dev/null || die "no Go toolchain on PATH (building $2)"
  mkdir -p "$1"
  GOBIN="$1" GOFLAGS= CGO_ENABLED=0 GOTOOLCHAIN=local go install -trimpath -ldflags "-s -w" "$2"
}

# go_module_dir MODULE@VERSION: the module's source in the Go module cache (downloaded if need be).
go_module_dir() {
  GOFLAGS=-mod=mod go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}
