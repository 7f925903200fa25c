#!/usr/bin/env bash
# 1,000 simulated proxies against one operator (holdoff 0): time from a VirtualService
# change until every proxy has ACKed it, and the operator's RSS. Not a pass/fail test.
#   bench/xds_bench.sh [PROXIES] [CHANGES] [xds_bench flags: --sync-client, --separate-connections]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
PROXIES=${1:-1000}
CHANGES=${2:-5}
shift $(( $# < 2 ? $# : 2 ))
ulimit -n 65536 2>/dev/null || true
DIR=$(mktemp -d /tmp/skiff-xds-bench.XXXXXX)
cat > "$DIR/base.yaml" <<'YAML'
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: default}
spec: {ports: [{name: http, port: 80}]}
YAML
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BUILD/operator/skiff-operator" --config-dir "$DIR" --xds-address 127.0.0.1 --xds-port "$PORT" \
  --metrics-port 0 --holdoff 0 --watch-interval 20ms --log-level warn > "$DIR/operator.log" 2>&1 &
OP=$!
trap 'kill $OP 2>/dev/null || true; wait $OP 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
echo "operator idle RSS: $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$OP/status)"
"$BUILD/bench/xds_bench" --operator "127.0.0.1:$PORT" --operator-pid "$OP" \
  --file "$DIR/vs.yaml" --proxies "$PROXIES" --changes "$CHANGES" "$@"
echo "(the operator notices the file change with inotify; the time to notice it is included)"
