#!/usr/bin/env bash
# Quick manual check of a running hack/cluster.sh cluster: a busybox Job that
# echoes "ok" must complete; prints how long it took and the node list.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
eval "$("$HACK_DIR/cluster.sh" env)"

NS="${SMOKE_NAMESPACE:-default}"
JOB="smoke-$(date +%s)-$$"
TIMEOUT="${SMOKE_TIMEOUT:-120}"

cleanup() { kubectl -n "$NS" delete job "$JOB" --ignore-not-found --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

start=$(date +%s.%N)
kubectl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $JOB
spec:
  backoffLimit: 0
  ttlSecondsAfterFinished: 60
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: smoke
        image: busybox:1.36
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "echo ok"]
        terminationMessagePolicy: FallbackToLogsOnError
EOF

deadline=$((SECONDS + TIMEOUT))
while :; do
  status="$(kubectl -n "$NS" get job "$JOB" -o jsonpath='{.status.succeeded}/{.status.failed}')"
  if [[ "$status" == 1/* ]]; then
    break
  fi
  if [[ "$status" == */1 ]] || ((SECONDS >= deadline)); then
    echo "smoke: job $JOB did not complete (succeeded/failed = $status)" >&2
    kubectl -n "$NS" get pods -l job-name="$JOB" -o wide >&2 || true
    kubectl -n "$NS" get pods -l job-name="$JOB" -o jsonpath='{range .items[*]}{.status}{"\n"}{end}' >&2 || true
    exit 1
  fi
  sleep 0.2
done
end=$(date +%s.%N)
msg="$(kubectl -n "$NS" get pods -l job-name="$JOB" -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.reason}')"
printf 'smoke: job %s Complete in %.1fs (container %s)\n' "$JOB" "$(echo "$end - $start" | bc -l 2>/dev/null || python3 -c "print($end-$start)")" "$msg"
kubectl get nodes -o wide
