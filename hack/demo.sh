#!/usr/bin/env bash
# The demo: the operator, installed with Helm on the local cluster under its own
# ServiceAccount, runs the example LoopServices; shows `kubectl get loopservices` as the
# loops advance. Expects the cluster up and the image imported (make demo does both).
#   DEMO_WATCH_SECONDS=60 hack/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(hack/cluster.sh env)"
release=loopservice-operator
namespace=loopservice-system

helm upgrade --install "$release" charts/loopservice-operator \
  --namespace "$namespace" --create-namespace \
  -f hack/values-local.yaml --wait --timeout 120s
kubectl -n "$namespace" rollout status "deployment/$release" --timeout=120s
kubectl apply -f examples/

watch_for="${DEMO_WATCH_SECONDS:-45}"
end=$((SECONDS + watch_for))
while ((SECONDS < end)); do
  echo "--- $(date +%H:%M:%S)"
  kubectl get loopservices
  sleep 5
done
echo
kubectl get jobs -l app.kubernetes.io/managed-by=loopservice-operator
echo
echo "The operator keeps running in namespace $namespace. Look closer with:"
echo "  eval \"\$(hack/cluster.sh env)\""
echo "  kubectl get loopservices -w"
echo "  kubectl describe loopservice overrunning"
echo "  kubectl get loopservice failing -o jsonpath='{.status.lastError.message}'"
echo "Remove it with: helm uninstall $release -n $namespace; kubectl delete -f examples/"
