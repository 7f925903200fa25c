#!/usr/bin/env bash
# skiff on a local kind cluster (needs Docker and kind; not run in CI):
#   creates the cluster, builds both images, loads them with `kind load docker-image`,
#   applies crds/ and manifests/, deploys the coolstore example's Istio YAML, and sends a
#   smoke request through the ingress gateway (port-forwarded to 127.0.0.1:18080).
# Usage: scripts/kind.sh [CLUSTER_NAME]     (scripts/kind.sh delete [NAME] removes it)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "delete" ]; then
  kind delete cluster --name "${2:-skiff}"
  exit 0
fi
NAME=${1:-skiff}
command -v docker > /dev/null || { echo "kind.sh: needs docker" >&2; exit 1; }
command -v kind > /dev/null || { echo "kind.sh: needs kind (https://kind.sigs.k8s.io)" >&2; exit 1; }
kind get clusters | grep -qx "$NAME" || kind create cluster --name "$NAME"
docker build -f docker/operator.Dockerfile -t skiff-operator:latest .
docker build -f docker/proxy.Dockerfile -t skiff-proxy:latest .
kind load docker-image --name "$NAME" skiff-operator:latest skiff-proxy:latest
kubectl --context "kind-$NAME" apply -k crds/
kubectl --context "kind-$NAME" wait --for condition=Established --timeout=60s \
  crd/gateways.networking.istio.io crd/virtualservices.networking.istio.io \
  crd/destinationrules.networking.istio.io
kubectl --context "kind-$NAME" apply -k manifests/
kubectl --context "kind-$NAME" -n skiff-system rollout status deploy/skiff-operator --timeout=180s
kubectl --context "kind-$NAME" -n skiff-system rollout status deploy/istio-ingressgateway \
  --timeout=180s
# A backend to route to: nginx behind the Istio YAML of a tiny example.
kubectl --context "kind-$NAME" create namespace smoke --dry-run=client -o yaml |
  kubectl --context "kind-$NAME" apply -f -
kubectl --context "kind-$NAME" -n smoke create deployment web --image=nginx:stable \
  --dry-run=client -o yaml | kubectl --context "kind-$NAME" apply -f -
kubectl --context "kind-$NAME" -n smoke expose deployment web --port 80 --dry-run=client \
  -o yaml | kubectl --context "kind-$NAME" apply -f -
kubectl --context "kind-$NAME" apply -f - <<'YAML'
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: smoke, namespace: smoke}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: smoke}
spec:
  hosts: ["*"]
  gateways: [smoke]
  http:
  - route: [{destination: {host: web}}]
    retries: {attempts: 3, retryOn: 5xx}
YAML
kubectl --context "kind-$NAME" -n smoke rollout status deploy/web --timeout=180s
kubectl --context "kind-$NAME" -n skiff-system port-forward svc/istio-ingressgateway 18080:80 \
  > /dev/null 2>&1 &
PF=$!
trap 'kill $PF 2> /dev/null || true' EXIT
for _ in $(seq 1 60); do
  if curl -fsS -o /dev/null http://127.0.0.1:18080/; then
    echo "kind.sh: smoke request through the ingress gateway: OK"
    kubectl --context "kind-$NAME" -n smoke get vs web -o jsonpath='{.status}' && echo
    exit 0
  fi
  sleep 2
done
echo "kind.sh: the smoke request did not succeed" >&2
exit 1
