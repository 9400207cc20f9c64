#!/usr/bin/env bash
# After the test suite: the cluster must still answer, with the same kube-apiserver process
# that served the tests. Catches an API server that crashed under load (as one built with a
# Go newer than 1.15 does: "fatal error: fault" in runtime.mapiterinit).
#   hack/check-alive.sh <kube-apiserver pid recorded before the tests>
#   hack/check-alive.sh --restarted <pid>   after tests that restart the API server on purpose
#     (tests/chaos.rs): <pid> is the one in the pid file after them; the API server must run
#     as that process, answer, and have logged no fatal error
set -euo pipefail
restarted=0
if [[ "${1:-}" == --restarted ]]; then restarted=1; shift; fi
before="${1:?usage: hack/check-alive.sh [--restarted] <apiserver-pid>}"
state="${LOOPS_CLUSTER_DIR:-$HOME/.local/state/loops-cluster}"
now="$(cat "$state/run/kube-apiserver.pid" 2>/dev/null || true)"
fail() { echo "cluster check: FAILED: $*" >&2; tail -n 30 "$state/logs/kube-apiserver.log" >&2 || true; exit 1; }
[[ "$now" == "$before" ]] || fail "kube-apiserver pid changed from $before to ${now:-none} during the tests"
kill -0 "$now" 2>/dev/null || fail "kube-apiserver (pid $now) is gone"
if grep -qE '^fatal error|unexpected fault address' "$state/logs/kube-apiserver.log"; then
  fail "kube-apiserver logged a fatal runtime error"
fi
ready="$(kubectl get --raw /readyz 2>&1)" || fail "/readyz: $ready"
nodes="$(kubectl get nodes --no-headers 2>&1)" || fail "kubectl get nodes: $nodes"
grep -q ' Ready' <<<"$nodes" || fail "node not Ready: $nodes"
if ((restarted)); then
  echo "cluster check: kube-apiserver runs again after the chaos tests (pid $now) and answers (/readyz: $ready)"
else
  echo "cluster check: kube-apiserver pid $now served the whole suite and still answers (/readyz: $ready)"
fi
