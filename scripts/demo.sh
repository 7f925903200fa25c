#!/usr/bin/env bash
# The main job on one machine, with no cluster: builds skiff and runs the local demo on the
# embedded default configuration (examples/coolstore): skiff-operator watching that
# directory and serving xDS on 127.0.0.1:15010, an ingress-gateway skiff-proxy fed by it on
# 127.0.0.1:18080, and stand-in backends on the ports the example's EndpointSlices name.
# Edit the YAML and the gateway follows. Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-examples/coolstore}
GATEWAY_PORT=${GATEWAY_PORT:-18080}
ADMIN_PORT=${ADMIN_PORT:-15000}
XDS_PORT=${XDS_PORT:-15010}
METRICS_PORT=${METRICS_PORT:-15014}
scripts/bootstrap.sh
export CCACHE_BASEDIR="$(pwd)"
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/release -j "$(nproc)" --target skiffctl skiff-proxy skiff-operator

RUN=$(mktemp -d /tmp/skiff-demo.XXXXXX)
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs are in $RUN"
}
trap cleanup EXIT INT TERM

echo "==> skiffctl validate -f $CONFIG"
build/release/cli/skiffctl validate -f "$CONFIG"
build/release/cli/skiffctl translate --config-dir "$CONFIG" > "$RUN/gateway-snapshot.json"

# Stand-in backends: every 127.0.0.1 endpoint of the snapshot gets a test upstream that
# answers with what it received.
python3 - "$RUN/gateway-snapshot.json" > "$RUN/backends.txt" <<'PY'
import json, sys
snap = json.load(open(sys.argv[1]))
for cla in snap.get("endpoints", []):
    for e in cla.get("endpoints", []):
        if e.get("address") == "127.0.0.1":
            print(e["port"], cla["clusterName"].split("|")[-1].split(".")[0])
PY
while read -r port name; do
  python3 tests/integration/upstream.py "$port" "$name" > "$RUN/backend-$port.log" 2>&1 &
  PIDS+=($!)
  echo "backend $name on 127.0.0.1:$port"
done < "$RUN/backends.txt"

build/release/operator/skiff-operator --config-dir "$CONFIG" --xds-address 127.0.0.1 \
  --xds-port "$XDS_PORT" --metrics-address 127.0.0.1 --metrics-port "$METRICS_PORT" \
  > "$RUN/operator.log" 2>&1 &
PIDS+=($!)
build/release/proxy/skiff-proxy --xds "127.0.0.1:$XDS_PORT" --role gateway \
  --labels istio=ingressgateway --node-id ingressgateway-demo \
  --port-map "80=$GATEWAY_PORT" --admin-port "$ADMIN_PORT" > "$RUN/proxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" > /dev/null 2>&1 && break
  sleep 0.1
done

cat <<MSG

skiff is running: operator on 127.0.0.1:$XDS_PORT watching $CONFIG, ingress gateway on
127.0.0.1:$GATEWAY_PORT. Try:
  curl -i http://127.0.0.1:$GATEWAY_PORT/api/catalog      # routed to apigateway
  curl -i http://127.0.0.1:$GATEWAY_PORT/other            # no route: 404
  build/release/cli/skiffctl proxy-status --operator 127.0.0.1:$XDS_PORT
  curl http://127.0.0.1:$ADMIN_PORT/config_dump             # the gateway's active snapshot
  curl http://127.0.0.1:$METRICS_PORT/metrics               # operator metrics
Edit a file in $CONFIG (e.g. the /api prefix in gateway.yaml) and the gateway follows.
Ctrl-C stops everything.
MSG
wait
