#!/usr/bin/env bash
# Exact cost per proxied request, skiff-proxy vs its peers in one run on the same upstream:
# user-space instructions (valgrind --tool=callgrind, instrumentation switched on only
# around the measured load) and system calls (strace -c -f during the load). Instruction
# counts do not depend on the machine's noise, so two versions of skiff compare exactly:
# set SKIFF_PROXY_BASELINE to a second binary to measure it too ("skiff-baseline").
# Never a pass/fail test. See bench/README.md.
#
# Environment (all optional):
#   SKIFF_PROXY           skiff-proxy binary (default build/release/proxy/skiff-proxy)
#   SKIFF_PROXY_BASELINE  another skiff-proxy to compare with (e.g. the previous commit's)
#   BENCH_PROXIES         default "skiff nginx haproxy envoy" (h2o too if listed)
#   BENCH_REQUESTS_TIME   seconds of load under callgrind (default 6) and strace (default 3)
#   BENCH_CONNECTIONS     wrk connections (default 10)
#   BENCH_NO_INSTALL=1    never install missing packages
#   BENCH_KEEP=1          keep the temp dir
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER="$ROOT/bench/proxy_bench.py"
SKIFF_PROXY="${SKIFF_PROXY:-$ROOT/build/release/proxy/skiff-proxy}"
SKIFF_PROXY_BASELINE="${SKIFF_PROXY_BASELINE:-}"
BENCH_PROXIES="${BENCH_PROXIES:-skiff nginx haproxy envoy}"
CG_SECONDS="${BENCH_REQUESTS_TIME:-6}"
ST_SECONDS="${BENCH_STRACE_TIME:-3}"
BENCH_CONNECTIONS="${BENCH_CONNECTIONS:-10}"
START_TIMEOUT_S=5
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for p in $BENCH_PROXIES; do
  case "$p" in skiff | nginx | haproxy | h2o | envoy) ;; *) die "unknown proxy '$p'" ;; esac
done
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null && command -v strace >/dev/null ||
  { [[ "${BENCH_NO_INSTALL:-}" == 1 ]] && die "valgrind and strace are needed"; 
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind strace >&2 ||
    die "apt-get install valgrind strace failed"; }
# shellcheck disable=SC2086
bench_install_packages $BENCH_PROXIES
bench_init_tempdir skiff-instructions-bench
bench_start_upstream
RESULTS="$T/results.tsv"
: >"$RESULTS"
CUR_PID=

# command_for NAME: sets CMD (array), PORT and DIR for a proxy, writing its config.
command_for() {
  local name="$1"
  case "$name" in
  skiff | skiff-baseline)
    DIR="$T/$name"
    mkdir -p "$DIR"
    helper snapshot "$DIR/snapshot.json" "$UP_PORT" 0 >/dev/null
    PORT="$(helper ports 1)"
    local bin="$SKIFF_PROXY"
    [[ "$name" == skiff-baseline ]] && bin="$SKIFF_PROXY_BASELINE"
    CMD=("$bin" --bootstrap "$DIR/snapshot.json" --concurrency 1 --port-map "80=$PORT"
      --admin-port 0 --stats-port 0 --log-level warn)
    ;;
  nginx)
    write_nginx_proxy
    # One process, so the instructions of the process measured are all of them.
    sed -i 's/^master_process on;/master_process off;/' "$T/nginx/nginx.conf"
    DIR="$T/nginx" PORT="$NGINX_PORT"
    CMD=("$NGINX" -p "$T/nginx" -c "$T/nginx/nginx.conf")
    ;;
  haproxy)
    write_haproxy
    DIR="$T/haproxy" PORT="$HAPROXY_PORT"
    CMD=("$HAPROXY" -db -f "$T/haproxy/haproxy.cfg")
    ;;
  h2o)
    write_h2o
    DIR="$T/h2o" PORT="$H2O_PORT"
    CMD=("$H2O" -c "$T/h2o/h2o.conf")
    ;;
  envoy)
    write_envoy
    DIR="$T/envoy" PORT="$ENVOY_PORT"
    CMD=("$ENVOY" -c "$T/envoy/envoy.yaml" --concurrency 1 --log-level warn --disable-hot-restart)
    ;;
  esac
}

wrk_requests() { # PORT SECONDS OUT -> prints completed requests
  "$WRK" -t1 -c"$BENCH_CONNECTIONS" -d"${2}s" "http://127.0.0.1:$1/" >"$3" 2>&1 || true
  awk '/requests in/ { print $1; exit }' "$3"
}

measure() {
  local name="$1"
  command_for "$name"
  # Instructions: under callgrind, instrumented only while the measured load runs.
  start_server "$name (callgrind)" "$DIR/cg" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$DIR/cg/callgrind.out" "${CMD[@]}"
  local pid="$CUR_PID" why
  if ! why="$(helper wait-port "$PORT" "$pid" 120 2>&1)"; then
    printf '%s\tfailed\t%s\n' "$name" "did not start under valgrind: $why" >>"$RESULTS"
    server_log_tail "$DIR/cg" >&2
    stop_proc "$pid"
    return
  fi
  wrk_requests "$PORT" 2 "$DIR/cg/warmup.txt" >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  local n_cg
  n_cg="$(wrk_requests "$PORT" "$CG_SECONDS" "$DIR/cg/wrk.txt")"
  callgrind_control -i off "$pid" >/dev/null
  stop_proc "$pid"
  local ir
  ir="$(awk '/^totals:/ { t = $2 } END { print t }' "$DIR/cg/callgrind.out" 2>/dev/null || true)"
  # System calls: the plain process under strace -c while the load runs.
  command_for "$name"
  start_server "$name" "$DIR/st" "${CMD[@]}"
  pid="$CUR_PID"
  helper wait-port "$PORT" "$pid" "$START_TIMEOUT_S" >/dev/null 2>&1 || true
  wrk_requests "$PORT" 1 "$DIR/st/warmup.txt" >/dev/null
  strace -c -f -q -p "$pid" -o "$DIR/st/strace.txt" &
  local spid=$!
  PIDS+=("$spid")
  sleep 0.5
  local n_st
  n_st="$(wrk_requests "$PORT" "$ST_SECONDS" "$DIR/st/wrk.txt")"
  stop_proc "$spid"
  stop_proc "$pid"
  local calls
  calls="$(awk '$NF == "total" { print $4; exit }' "$DIR/st/strace.txt" 2>/dev/null || true)"
  printf '%s\tok\t%s\t%s\t%s\t%s\n' "$name" "${n_cg:-0}" "${ir:-0}" "${n_st:-0}" "${calls:-0}" \
    >>"$RESULTS"
}

names=()
for p in $BENCH_PROXIES; do
  names+=("$p")
  [[ "$p" == skiff && -n "$SKIFF_PROXY_BASELINE" ]] && names+=(skiff-baseline)
done
for n in "${names[@]}"; do
  log "$n: measuring"
  measure "$n"
done

echo "instructions and system calls per request: $(date -u +%Y-%m-%dT%H:%M:%SZ), wrk -t1 -c$BENCH_CONNECTIONS, ${CG_SECONDS}s under callgrind, ${ST_SECONDS}s under strace -c; 100-byte body from nginx"
echo "skiff: $SKIFF_PROXY${SKIFF_PROXY_BASELINE:+; skiff-baseline: $SKIFF_PROXY_BASELINE}"
"$PY" - "$RESULTS" <<'EOF'
import sys
rows = {}
order = []
for line in open(sys.argv[1]):
    p = line.rstrip("\n").split("\t")
    order.append(p[0])
    if p[1] != "ok":
        rows[p[0]] = None
        print(f"{p[0]}: {p[1]}: {p[2] if len(p) > 2 else ''}")
        continue
    n_cg, ir, n_st, calls = int(p[2]), int(p[3]), int(p[4]), int(p[5])
    rows[p[0]] = (ir / n_cg if n_cg else None, calls / n_st if n_st else None, n_cg, n_st)
print(f"{'proxy':<16}{'instr/request':>16}{'syscalls/request':>18}{'requests (cg/strace)':>24}")
for n in order:
    r = rows[n]
    if r is None:
        continue
    i = f"{r[0]:,.0f}" if r[0] else "-"
    s = f"{r[1]:.2f}" if r[1] else "-"
    print(f"{n:<16}{i:>16}{s:>18}{f'{r[2]}/{r[3]}':>24}")
sk = rows.get("skiff")
if sk and sk[0]:
    for n in order:
        r = rows[n]
        if n != "skiff" and r and r[0]:
            print(f"skiff/{n}: instructions {sk[0] / r[0]:.2f}x, syscalls "
                  f"{(sk[1] / r[1]) if sk[1] and r[1] else float('nan'):.2f}x")
EOF
