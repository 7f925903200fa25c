#!/usr/bin/env bash
# The main job on one machine, with no cluster: builds skiff and runs the coolstore demo on
# the embedded default configuration (examples/coolstore), with dashboards and traces.
#
#   ./scripts/demo.sh [--traffic] [--no-observability] [--listen-all] [--no-build] [SRC]
#
#   --traffic            also send one request through the gateway every 0.5 s
#   --no-observability   no Prometheus, no Zipkin, no tracing (no Java or Prometheus needed)
#   --listen-all         serve the gateway, the sidecar, the stats ports and the dashboards on
#                        every interface (default: 127.0.0.1 only)
#   --no-build           use the binaries in $SKIFF_BIN_DIR (default build/release) as they are
#   SRC                  the configuration to copy (default examples/coolstore)
#
# HTTPS: the demo makes a self-signed certificate for shop.example ($SKIFF_DEMO_DIR/certs)
# and serves examples/coolstore-https (443 SIMPLE from the Secret shop-cert, 80 redirecting
# shop.example to https) on $HTTPS_GATEWAY_PORT:
#   curl --cacert /tmp/skiff-demo/certs/shop.example.crt \
#     --resolve shop.example:18443:127.0.0.1 https://shop.example:18443/api/catalog
#
# Everything listens on 127.0.0.1 (the ports are printed, and each can be moved with the
# environment variable the printed table names). The operator watches a copy of SRC in
# $SKIFF_DEMO_DIR/config (default /tmp/skiff-demo/config); logs go to $SKIFF_DEMO_DIR/logs.
# Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

usage() {
  sed -n '5,19p' "$0" | sed 's/^# \{0,1\}//'
}
TRAFFIC=0
OBSERVABILITY=1
LISTEN_ALL=0
BUILD=1
SRC=examples/coolstore
while [ $# -gt 0 ]; do
  case "$1" in
    --traffic) TRAFFIC=1 ;;
    --no-observability) OBSERVABILITY=0 ;;
    --listen-all) LISTEN_ALL=1 ;;
    --no-build) BUILD=0 ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      echo "demo.sh: unknown flag $1" >&2
      usage >&2
      exit 2
      ;;
    *) SRC=$1 ;;
  esac
  shift
done

# Ports: name, default, what.
GATEWAY_PORT=${GATEWAY_PORT:-18080}
HTTPS_GATEWAY_PORT=${HTTPS_GATEWAY_PORT:-18443}
APIGATEWAY_PORT=${APIGATEWAY_PORT:-18081}
CATALOG_V1_PORT=${CATALOG_V1_PORT:-18082}
CATALOG_V2_PORT=${CATALOG_V2_PORT:-18083}
STOCK_PORT=${STOCK_PORT:-18084}
SIDECAR_PORT=${SIDECAR_PORT:-15001}
XDS_PORT=${XDS_PORT:-15010}
METRICS_PORT=${METRICS_PORT:-15014}
ADMIN_PORT=${ADMIN_PORT:-15000}
STATS_PORT=${STATS_PORT:-15090}
READY_PORT=${READY_PORT:-15021}
SIDECAR_ADMIN_PORT=${SIDECAR_ADMIN_PORT:-15100}
SIDECAR_STATS_PORT=${SIDECAR_STATS_PORT:-15190}
SIDECAR_READY_PORT=${SIDECAR_READY_PORT:-15121}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ZIPKIN_PORT=${ZIPKIN_PORT:-9411}
PORTS=(
  "GATEWAY_PORT $GATEWAY_PORT ingress gateway (HTTP)"
  "HTTPS_GATEWAY_PORT $HTTPS_GATEWAY_PORT ingress gateway (HTTPS, shop.example)"
  "SIDECAR_PORT $SIDECAR_PORT apigateway's sidecar (its outbound HTTP proxy)"
  "APIGATEWAY_PORT $APIGATEWAY_PORT apigateway"
  "CATALOG_V1_PORT $CATALOG_V1_PORT catalog v1"
  "CATALOG_V2_PORT $CATALOG_V2_PORT catalog v2"
  "STOCK_PORT $STOCK_PORT stock v1 (gRPC)"
  "XDS_PORT $XDS_PORT operator: xDS"
  "METRICS_PORT $METRICS_PORT operator: /metrics, /ready"
  "ADMIN_PORT $ADMIN_PORT gateway: admin (/config_dump, /stats, /clusters)"
  "STATS_PORT $STATS_PORT gateway: Prometheus /stats/prometheus"
  "READY_PORT $READY_PORT gateway: /healthz/ready"
  "SIDECAR_ADMIN_PORT $SIDECAR_ADMIN_PORT sidecar: admin"
  "SIDECAR_STATS_PORT $SIDECAR_STATS_PORT sidecar: Prometheus /stats/prometheus"
  "SIDECAR_READY_PORT $SIDECAR_READY_PORT sidecar: /healthz/ready"
)
if [ "$OBSERVABILITY" = 1 ]; then
  PORTS+=("PROMETHEUS_PORT $PROMETHEUS_PORT Prometheus and the dashboards"
    "ZIPKIN_PORT $ZIPKIN_PORT Zipkin (traces)")
fi

DEMO=${SKIFF_DEMO_DIR:-/tmp/skiff-demo}
CONFIG=$DEMO/config
LOGS=$DEMO/logs
BIN=${SKIFF_BIN_DIR:-build/release}
APPS=$BIN/examples/coolstore/apps
BIND=127.0.0.1
if [ "$LISTEN_ALL" = 1 ]; then
  BIND=0.0.0.0
fi
LOCAL=127.0.0.1

# One demo at a time per directory: a second one would reset the first one's config.
mkdir -p "$DEMO"
if [ -f "$DEMO/demo.pid" ]; then
  other=$(cat "$DEMO/demo.pid")
  if [ -n "$other" ] && [ "$other" != "$$" ] && grep -qs demo.sh "/proc/$other/cmdline"; then
    echo "demo.sh: a demo is already running from $DEMO (pid $other); stop it with Ctrl-C in" \
      "its terminal, or set SKIFF_DEMO_DIR to run another one" >&2
    exit 1
  fi
fi
# A port in use would make a process fail later with a less helpful message.
busy=0
for entry in "${PORTS[@]}"; do
  read -r var port what <<< "$entry"
  if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
    echo "demo.sh: port $port ($what) is in use; stop what uses it or set $var=PORT" >&2
    busy=1
  fi
done
if [ "$busy" = 1 ]; then
  exit 1
fi

if [ "$BUILD" = 1 ]; then
  if [ "$OBSERVABILITY" = 1 ]; then
    scripts/bootstrap.sh --with-observability
  else
    scripts/bootstrap.sh
  fi
  export CCACHE_BASEDIR="$ROOT"
  cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
  cmake --build build/release -j "$(nproc)" --target skiffctl skiff-proxy skiff-operator \
    coolstore-catalog coolstore-apigateway coolstore-stock coolstore-stock-client
fi

ZIPKIN_JAR=
if [ "$OBSERVABILITY" = 1 ]; then
  for tool in prometheus java; do
    if ! command -v "$tool" > /dev/null; then
      echo "demo.sh: $tool is missing: run scripts/bootstrap.sh --with-observability, or" \
        "./scripts/demo.sh --no-observability" >&2
      exit 1
    fi
  done
  if ! ZIPKIN_JAR=$(tests/observability/zipkin.sh); then
    echo "demo.sh: cannot fetch the Zipkin server jar (see above); run with" \
      "--no-observability to go without traces and dashboards" >&2
    exit 1
  fi
fi

rm -rf -- "$CONFIG" "$LOGS" "$DEMO/prometheus" "$DEMO/zipkin"
mkdir -p "$CONFIG" "$LOGS"
echo $$ > "$DEMO/demo.pid"
# The configuration, with the workloads' ports of this run.
for f in "$SRC"/*.yaml; do
  sed -e "s/port: 18081/port: $APIGATEWAY_PORT/" -e "s/port: 18082/port: $CATALOG_V1_PORT/" \
    -e "s/port: 18083/port: $CATALOG_V2_PORT/" -e "s/port: 18084/port: $STOCK_PORT/" \
    "$f" > "$CONFIG/$(basename "$f")"
done

# HTTPS: a self-signed certificate for shop.example (ECDSA P-256, made once per demo
# directory), the Secret that holds it next to the Gateway that names it.
CERTS=$DEMO/certs
if [ -f "$SRC/gateway.yaml" ] && [ -d examples/coolstore-https ]; then
  mkdir -p "$CERTS"
  if [ ! -s "$CERTS/shop.example.crt" ] || [ ! -s "$CERTS/shop.example.key" ]; then
    if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$CERTS/shop.example.key" -out "$CERTS/shop.example.crt" -days 365 \
      -subj "/CN=shop.example" -addext "subjectAltName=DNS:shop.example" \
      > "$LOGS/openssl.log" 2>&1; then
      echo "demo.sh: openssl could not make the demo's certificate:" >&2
      cat "$LOGS/openssl.log" >&2
      exit 1
    fi
    chmod 600 "$CERTS/shop.example.key"
  fi
  cp examples/coolstore-https/*.yaml "$CONFIG/"
  cat > "$CONFIG/shop-cert-secret.yaml" << YAML
# Made by scripts/demo.sh: the self-signed certificate of shop.example ($CERTS).
apiVersion: v1
kind: Secret
metadata:
  name: shop-cert
  namespace: coolstore
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 < "$CERTS/shop.example.crt")
  tls.key: $(base64 -w0 < "$CERTS/shop.example.key")
YAML
  chmod 600 "$CONFIG/shop-cert-secret.yaml"
fi

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2> /dev/null || true; done
  rm -f "$DEMO/demo.pid"
  echo "stopped; logs are in $LOGS"
}
trap cleanup EXIT INT TERM

echo "==> skiffctl validate --strict -f $CONFIG"
$BIN/cli/skiffctl validate --strict -f "$CONFIG"

# What the operator reports about the configuration (errors, invalid resources, proxies
# that reject a push, each reload) is shown here too, not only in its log.
touch "$LOGS/operator.log"
tail --pid=$$ -n 0 -F "$LOGS/operator.log" 2> /dev/null |
  sed -u -n -E -e 's/^[^ ]+ (warning|error) \[skiff-operator\] /operator: \1: /p' \
    -e 's/^[^ ]+ info \[skiff-operator\] (configuration applied.*)/operator: \1/p' &
PIDS+=($!)

$APPS/coolstore-catalog --port "$CATALOG_V1_PORT" --version v1 > "$LOGS/catalog-v1.log" 2>&1 &
PIDS+=($!)
$APPS/coolstore-catalog --port "$CATALOG_V2_PORT" --version v2 > "$LOGS/catalog-v2.log" 2>&1 &
PIDS+=($!)
$APPS/coolstore-stock --port "$STOCK_PORT" --service-version v1 > "$LOGS/stock-v1.log" 2>&1 &
PIDS+=($!)
$APPS/coolstore-apigateway --port "$APIGATEWAY_PORT" --proxy "http://$LOCAL:$SIDECAR_PORT" \
  > "$LOGS/apigateway.log" 2>&1 &
PIDS+=($!)
$BIN/operator/skiff-operator --config-dir "$CONFIG" --xds-address "$LOCAL" \
  --xds-port "$XDS_PORT" --metrics-address "$LOCAL" --metrics-port "$METRICS_PORT" \
  >> "$LOGS/operator.log" 2>&1 &
PIDS+=($!)

TRACING=()
if [ "$OBSERVABILITY" = 1 ]; then
  # Istio's demo profile samples every request, so every call shows up in Zipkin.
  TRACING=(--zipkin-address "$LOCAL:$ZIPKIN_PORT" --trace-sampling 100)
fi
# The gateway as Istio's istio-ingressgateway in istio-system; each proxy has its own admin,
# stats and readiness ports.
$BIN/proxy/skiff-proxy --xds "$LOCAL:$XDS_PORT" --role gateway --labels istio=ingressgateway \
  --namespace istio-system --node-id ingressgateway-demo --port-map "80=$GATEWAY_PORT,443=$HTTPS_GATEWAY_PORT" \
  --listener-address "$BIND" --admin-port "$ADMIN_PORT" --stats-port "$STATS_PORT" \
  --stats-address "$BIND" --readiness-port "$READY_PORT" --readiness-address "$BIND" \
  --access-log "$LOGS/gateway-access.log" "${TRACING[@]}" > "$LOGS/gateway.log" 2>&1 &
PIDS+=($!)
$BIN/proxy/skiff-proxy --xds "$LOCAL:$XDS_PORT" --role sidecar --namespace coolstore \
  --labels app=apigateway,version=v1 --node-id apigateway-v1.coolstore \
  --port-map "15001=$SIDECAR_PORT" --listener-address "$BIND" --admin-port "$SIDECAR_ADMIN_PORT" \
  --stats-port "$SIDECAR_STATS_PORT" --stats-address "$BIND" --readiness-port "$SIDECAR_READY_PORT" \
  --readiness-address "$BIND" --access-log "$LOGS/sidecar-access.log" "${TRACING[@]}" \
  > "$LOGS/sidecar.log" 2>&1 &
PIDS+=($!)

if [ "$OBSERVABILITY" = 1 ]; then
  mkdir -p "$DEMO/zipkin" "$DEMO/prometheus"
  (cd "$DEMO/zipkin" && exec env QUERY_PORT="$ZIPKIN_PORT" STORAGE_TYPE=mem \
    COLLECTOR_SCRIBE_ENABLED=false QUERY_LOG_LEVEL=WARN java -Xms64m -Xmx256m \
    -XX:+UseSerialGC -jar "$ZIPKIN_JAR" --armeria.ports[0].ip="$BIND" \
    --armeria.ports[0].port="$ZIPKIN_PORT" --armeria.ports[0].protocols[0]=http) \
    > "$LOGS/zipkin.log" 2>&1 &
  PIDS+=($!)
  # Each proxy on its own stats port; the operator on its metrics port.
  cat > "$DEMO/prometheus/prometheus.yml" << YAML
global:
  scrape_interval: 5s
  evaluation_interval: 5s
scrape_configs:
- job_name: skiff-operator
  static_configs:
  - targets: ["$LOCAL:$METRICS_PORT"]
- job_name: skiff-proxies
  metrics_path: /stats/prometheus
  static_configs:
  - targets: ["$LOCAL:$STATS_PORT"]
    labels: {proxy: ingressgateway-demo, role: gateway}
  - targets: ["$LOCAL:$SIDECAR_STATS_PORT"]
    labels: {proxy: apigateway-v1.coolstore, role: sidecar}
YAML
  prometheus --config.file="$DEMO/prometheus/prometheus.yml" \
    --storage.tsdb.path="$DEMO/prometheus/data" --storage.tsdb.retention.time=1d \
    --web.listen-address="$BIND:$PROMETHEUS_PORT" \
    --web.console.templates="$ROOT/manifests/addons/prometheus/consoles" \
    --web.console.libraries="$ROOT/manifests/addons/prometheus/console_libraries" \
    > "$LOGS/prometheus.log" 2>&1 &
  PIDS+=($!)
fi

# wait_for SECONDS URL...: true once every URL answers 200.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  while [ "$SECONDS" -lt "$deadline" ]; do
    local ok=1
    for url in "$@"; do
      curl -sf --max-time 2 -o /dev/null "$url" || ok=0
    done
    if [ "$ok" = 1 ]; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

if ! wait_for 60 "http://$LOCAL:$ADMIN_PORT/ready" "http://$LOCAL:$SIDECAR_ADMIN_PORT/ready"; then
  echo "demo.sh: the proxies are not ready after 60 s:" >&2
  for p in "$ADMIN_PORT gateway" "$SIDECAR_ADMIN_PORT sidecar"; do
    read -r port name <<< "$p"
    why=$(curl -s --max-time 2 "http://$LOCAL:$port/ready" ||
      grep -m1 -E '^[^ ]+ (error|critical) ' "$LOGS/$name.log" | cut -d' ' -f2- ||
      echo 'not answering')
    echo "  $name: ${why:-not answering}" >&2
  done
  echo "logs: $LOGS (operator.log, gateway.log, sidecar.log)" >&2
  exit 1
fi

if [ "$TRAFFIC" = 1 ]; then
  (while true; do
    curl -s -o /dev/null --max-time 5 "http://$LOCAL:$GATEWAY_PORT/api/catalog" || true
    sleep 0.5
  done) &
  PIDS+=($!)
fi

WHERE="127.0.0.1"
if [ "$LISTEN_ALL" = 1 ]; then
  WHERE="127.0.0.1; gateway, sidecar, stats and dashboards on every interface"
fi
echo
echo "skiff is running. Ports ($WHERE):"
for entry in "${PORTS[@]}"; do
  read -r var port what <<< "$entry"
  printf '  %-6s %-55s %s\n' "$port" "$what" "($var)"
done
cat << MSG
The operator watches $CONFIG (a copy of $SRC); copy a file from
examples/coolstore-scenarios/ there and the proxies follow. README.md tells the whole story:
  curl -i http://127.0.0.1:$GATEWAY_PORT/api/catalog
  curl --cacert $CERTS/shop.example.crt --resolve shop.example:$HTTPS_GATEWAY_PORT:127.0.0.1 https://shop.example:$HTTPS_GATEWAY_PORT/api/catalog
  curl -i --resolve shop.example:$GATEWAY_PORT:127.0.0.1 http://shop.example:$GATEWAY_PORT/api/catalog   (301 to https)
  curl -X POST -d '{"active":true,"type":"500","percentage":50}' http://127.0.0.1:$CATALOG_V1_PORT/blowup
  cp examples/coolstore-scenarios/1-retries.yaml $CONFIG/catalog-virtualservice.yaml
  curl -i http://127.0.0.1:$GATEWAY_PORT/api/stock/329299   (stock over gRPC, through the sidecar)
  $APPS/coolstore-stock-client --target 127.0.0.1:$STOCK_PORT --set-chaos 50
  cp examples/coolstore-scenarios/8-grpc-retries.yaml $CONFIG/stock-virtualservice.yaml
  $BIN/cli/skiffctl proxy-status --operator 127.0.0.1:$XDS_PORT
  $BIN/cli/skiffctl proxy-config routes apigateway-v1.coolstore --operator 127.0.0.1:$XDS_PORT
Access logs: $LOGS/gateway-access.log and $LOGS/sidecar-access.log; other logs in $LOGS.
MSG
if [ "$TRAFFIC" = 1 ]; then
  echo "Traffic: one request every 0.5 s through the gateway."
fi

if [ "$OBSERVABILITY" = 1 ]; then
  if wait_for 60 "http://$LOCAL:$PROMETHEUS_PORT/-/ready"; then
    echo "Dashboards: http://127.0.0.1:$PROMETHEUS_PORT/consoles/skiff-mesh.html"
    echo "            http://127.0.0.1:$PROMETHEUS_PORT/consoles/skiff-service.html?service=apigateway.coolstore.svc.cluster.local"
  else
    echo "demo.sh: Prometheus did not start; see $LOGS/prometheus.log" >&2
  fi
  # Java takes a while on a small machine.
  if wait_for 180 "http://$LOCAL:$ZIPKIN_PORT/health"; then
    echo "Traces:     http://127.0.0.1:$ZIPKIN_PORT/zipkin/?serviceName=istio-ingressgateway.istio-system"
  else
    echo "demo.sh: Zipkin did not start; see $LOGS/zipkin.log" >&2
  fi
fi
echo "Ctrl-C stops everything."
wait
