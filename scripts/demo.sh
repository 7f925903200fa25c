#!/usr/bin/env bash
# The main job on one machine, with no cluster: builds skiff and runs the coolstore demo on
# the embedded default configuration (examples/coolstore), all on 127.0.0.1:
#   skiff-operator   file source on a copy of the YAML, xDS on :15010, metrics on :15014
#   ingress gateway  skiff-proxy (role gateway) on :18080, admin :15000
#   apigateway       coolstore-apigateway on :18081, calling catalog through its sidecar
#   sidecar          skiff-proxy (role sidecar, namespace coolstore) on :15001, admin :15100
#   catalog v1 / v2  coolstore-catalog on :18082 / :18083
# Copy a file from examples/coolstore-scenarios/ into the config directory it prints and
# the proxies follow. Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-examples/coolstore}
GATEWAY_PORT=${GATEWAY_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-15000}
SIDECAR_ADMIN_PORT=${SIDECAR_ADMIN_PORT:-15100}
XDS_PORT=${XDS_PORT:-15010}
METRICS_PORT=${METRICS_PORT:-15014}
scripts/bootstrap.sh
export CCACHE_BASEDIR="$(pwd)"
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/release -j "$(nproc)" --target skiffctl skiff-proxy skiff-operator \
  coolstore-catalog coolstore-apigateway
BIN=build/release
APPS=$BIN/examples/coolstore/apps

RUN=$(mktemp -d /tmp/skiff-demo.XXXXXX)
CONFIG=$RUN/config
mkdir -p "$CONFIG"
cp "$SRC"/*.yaml "$CONFIG"/
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs are in $RUN"
}
trap cleanup EXIT INT TERM

echo "==> skiffctl validate -f $CONFIG"
$BIN/cli/skiffctl validate -f "$CONFIG"

$APPS/coolstore-catalog --port 18082 --version v1 > "$RUN/catalog-v1.log" 2>&1 &
PIDS+=($!)
$APPS/coolstore-catalog --port 18083 --version v2 > "$RUN/catalog-v2.log" 2>&1 &
PIDS+=($!)
$APPS/coolstore-apigateway --port 18081 --proxy http://127.0.0.1:15001 \
  > "$RUN/apigateway.log" 2>&1 &
PIDS+=($!)
$BIN/operator/skiff-operator --config-dir "$CONFIG" --xds-address 127.0.0.1 \
  --xds-port "$XDS_PORT" --metrics-address 127.0.0.1 --metrics-port "$METRICS_PORT" \
  > "$RUN/operator.log" 2>&1 &
PIDS+=($!)
$BIN/proxy/skiff-proxy --xds "127.0.0.1:$XDS_PORT" --role gateway \
  --labels istio=ingressgateway --node-id ingressgateway-demo \
  --port-map "80=$GATEWAY_PORT" --admin-port "$ADMIN_PORT" > "$RUN/gateway.log" 2>&1 &
PIDS+=($!)
$BIN/proxy/skiff-proxy --xds "127.0.0.1:$XDS_PORT" --role sidecar --namespace coolstore \
  --labels app=apigateway,version=v1 --node-id apigateway-v1.coolstore \
  --admin-port "$SIDECAR_ADMIN_PORT" > "$RUN/sidecar.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" > /dev/null 2>&1 &&
    curl -sf "http://127.0.0.1:$SIDECAR_ADMIN_PORT/ready" > /dev/null 2>&1 && break
  sleep 0.1
done

cat <<MSG

skiff is running. The operator watches $CONFIG
(a copy of $SRC). Try (README.md walks through the whole story):
  curl -i http://127.0.0.1:$GATEWAY_PORT/api/catalog          # gateway -> apigateway -> sidecar -> catalog v1
  curl -X POST -d '{"active":true,"type":"500","percentage":50}' http://127.0.0.1:18082/blowup
  cp examples/coolstore-scenarios/1-retries.yaml $CONFIG/catalog-virtualservice.yaml
  $BIN/cli/skiffctl proxy-status --operator 127.0.0.1:$XDS_PORT
  curl http://127.0.0.1:$SIDECAR_ADMIN_PORT/stats              # retries, ejections, overflows
  curl http://127.0.0.1:$ADMIN_PORT/config_dump                # the gateway's active snapshot
  curl http://127.0.0.1:$METRICS_PORT/metrics                  # operator metrics
Logs: $RUN. Ctrl-C stops everything.
MSG
wait
