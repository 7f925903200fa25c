#!/usr/bin/env bash
# skiff on a local kind cluster (needs Docker, kind and internet; not run in CI, where
# scripts/local-cluster.sh runs the same images and manifests offline):
#   creates the cluster, builds the four images (docker/build.sh: skiff-operator,
#   skiff-proxy, coolstore-catalog, coolstore-apigateway), loads them with
#   `kind load docker-image`, applies manifests/ (CRDs included), deploys the coolstore shop
#   (examples/coolstore-k8s/ and its Istio YAML) and sends a request to /api/catalog through
#   the ingress gateway (port-forwarded to 127.0.0.1:18080).
# Usage: scripts/kind.sh [CLUSTER_NAME]     (scripts/kind.sh delete [NAME] removes it)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "delete" ]; then
  kind delete cluster --name "${2:-skiff}"
  exit 0
fi
NAME=${1:-skiff}
K=(kubectl --context "kind-$NAME")
command -v docker > /dev/null || { echo "kind.sh: needs docker" >&2; exit 1; }
command -v kind > /dev/null || { echo "kind.sh: needs kind (see kind's documentation)" >&2; exit 1; }
kind get clusters | grep -qx "$NAME" || kind create cluster --name "$NAME"
docker/build.sh
kind load docker-image --name "$NAME" skiff-operator:latest skiff-proxy:latest \
  coolstore-catalog:latest coolstore-apigateway:latest
"${K[@]}" apply -k manifests/
"${K[@]}" -n skiff-system rollout status deploy/skiff-operator --timeout=180s
# The validating webhook admits Istio objects once the leader has written its CA into the
# caBundle (failurePolicy Fail refuses them until then).
for _ in $(seq 90); do
  [ -n "$("${K[@]}" get validatingwebhookconfiguration skiff-validation \
    -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] && break
  sleep 2
done
"${K[@]}" -n skiff-system rollout status deploy/istio-ingressgateway --timeout=180s
# The shop, as a user writes it, and its Istio YAML.
"${K[@]}" apply -k examples/coolstore-k8s/
"${K[@]}" apply -f examples/coolstore/gateway.yaml \
  -f examples/coolstore/catalog-destinationrule.yaml \
  -f examples/coolstore/catalog-virtualservice.yaml
for d in apigateway catalog-v1 catalog-v2; do
  "${K[@]}" -n coolstore rollout status "deploy/$d" --timeout=180s
done
"${K[@]}" -n skiff-system port-forward svc/istio-ingressgateway 18080:80 > /dev/null 2>&1 &
PF=$!
trap 'kill $PF 2> /dev/null || true' EXIT
for _ in $(seq 1 60); do
  if curl -fsS -o /dev/null http://127.0.0.1:18080/api/catalog; then
    echo "kind.sh: GET /api/catalog through the ingress gateway: OK"
    curl -fsS http://127.0.0.1:18080/api/catalog && echo
    exit 0
  fi
  sleep 2
done
echo "kind.sh: GET /api/catalog through the ingress gateway did not succeed" >&2
exit 1
