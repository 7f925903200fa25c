#!/usr/bin/env bash
# Cost of telemetry in skiff-proxy: throughput and p99 with Istio metrics and tracing on,
# as ratios against the same proxy with telemetry off, measured in one run with
# bench/proxy_bench.sh (same upstream, same wrk settings). Never a pass/fail test.
#
#   off          --disable-metrics, no tracing
#   metrics      Istio metrics (the default)
#   metrics+1%   metrics, tracing with --trace-sampling 1 (Istio's default) to a collector
#   metrics+100% metrics, every request traced and reported
# The collector is a small local HTTP sink that accepts Zipkin's POST /api/v2/spans.
# Environment: BENCH_DURATION (default 10s), BENCH_CONNECTIONS (50), SKIFF_PROXY.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T="$(mktemp -d "${TMPDIR:-/tmp}/skiff-telemetry-bench.XXXXXX")"
SINK_PID=
cleanup() { [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

SINK_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
python3 - "$SINK_PORT" >"$T/sink.log" 2>&1 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(202); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
SINK_PID=$!

run() { # name, extra args
  local name="$1" args="$2"
  echo "[telemetry-bench] $name: skiff-proxy $args" >&2
  BENCH_PROXIES="skiff" BENCH_ROUTES=0 SKIFF_EXTRA_ARGS="--stats-port 0 $args" \
    "$ROOT/bench/proxy_bench.sh" >"$T/$name.out" 2>"$T/$name.err" || {
    echo "$name: bench failed: $(tail -3 "$T/$name.err")"
    return
  }
  awk -v n="$name" '$1 == "skiff" && $2 ~ /^[0-9.]+$/ { print n "\t" $2 "\t" $4 }' \
    "$T/$name.out" >>"$T/results.tsv"
}
: >"$T/results.tsv"
run off "--disable-metrics"
run metrics ""
run metrics+1% "--zipkin-address 127.0.0.1:$SINK_PORT --trace-sampling 1"
run metrics+100% "--zipkin-address 127.0.0.1:$SINK_PORT --trace-sampling 100"

python3 - "$T/results.tsv" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
res = {n: (float(r), float(p)) for n, r, p in rows}
print(f"{'config':<14}{'req/s':>12}{'p99 ms':>10}{'rps vs off':>12}{'p99 vs off':>12}")
off = res.get("off")
for n, (r, p) in res.items():
    rr = f"{r / off[0]:.3f}x" if off else "-"
    pp = f"{p / off[1]:.2f}x" if off else "-"
    print(f"{n:<14}{r:>12.0f}{p:>10.3f}{rr:>12}{pp:>12}")
if off and "metrics+1%" in res:
    cost = 1 - res["metrics+1%"][0] / off[0]
    print(f"\ngoal: metrics + 1% tracing cost <= 10% of throughput: {cost * 100:.1f}% -> "
          + ("met" if cost <= 0.10 else "NOT met"))
PY
echo "(details in $T)"
