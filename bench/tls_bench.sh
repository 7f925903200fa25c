#!/usr/bin/env bash
# HTTPS at the edge: skiff-proxy vs nginx vs haproxy (Debian packages) terminating TLS in
# front of the same upstream, in one run, one worker each, the same certificate and cipher
# settings. Per key type (ECDSA P-256, RSA 2048) it measures
#   keep-alive   HTTPS requests per second over kept-alive connections (wrk)
#   handshakes   new TLS handshakes per second: every request on a new connection with a
#                full handshake (wrk with "Connection: close"; wrk never resumes sessions)
# and the server's CPU per request / per handshake, then prints skiff's ratios to the best
# peer. Never a pass/fail test: exits 0 unless the setup failed. See bench/README.md.
#
# Environment (all optional):
#   SKIFF_PROXY        skiff-proxy binary (default build/release/proxy/skiff-proxy)
#   BENCH_DURATION     wrk duration per measurement (default 10s)
#   BENCH_WARMUP       wrk warm-up per server (default 2s)
#   BENCH_CONNECTIONS  wrk connections (default 50)
#   BENCH_THREADS      wrk threads (default 1)
#   BENCH_KEYS         key types (default "ecdsa rsa")
#   BENCH_PROXIES      servers (default "skiff nginx haproxy")
#   BENCH_ROUNDS       rounds (default 3): each round measures every server once, the order
#                      rotating from round to round; the report gives each figure's median
#   BENCH_TLS_VERSION  1.2 (default: one TLS 1.2 cipher suite for all) or 1.3 (TLS 1.3 with
#                      skiff's suite order, AES-128-GCM-SHA256 first, given to every server;
#                      session tickets stay each server's default: skiff sends one per
#                      handshake, nginx and haproxy OpenSSL's two)
#   BENCH_NO_INSTALL=1 never apt-get install missing packages
#   BENCH_KEEP=1       keep the temp dir (configs, logs, wrk output)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER="$ROOT/bench/proxy_bench.py"
SKIFF_PROXY="${SKIFF_PROXY:-$ROOT/build/release/proxy/skiff-proxy}"
BENCH_DURATION="${BENCH_DURATION:-10s}"
BENCH_WARMUP="${BENCH_WARMUP:-2s}"
BENCH_CONNECTIONS="${BENCH_CONNECTIONS:-50}"
BENCH_THREADS="${BENCH_THREADS:-1}"
BENCH_KEYS="${BENCH_KEYS:-ecdsa rsa}"
BENCH_PROXIES="${BENCH_PROXIES:-skiff nginx haproxy}"
BENCH_TLS_VERSION="${BENCH_TLS_VERSION:-1.2}"
BENCH_ROUNDS="${BENCH_ROUNDS:-3}"
START_TIMEOUT_S=5
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

secs() { [[ "$1" =~ ^[0-9]+$ ]] && echo "${1}s" || echo "$1"; }
BENCH_DURATION="$(secs "$BENCH_DURATION")"
BENCH_WARMUP="$(secs "$BENCH_WARMUP")"
for v in BENCH_DURATION BENCH_WARMUP; do
  [[ "${!v}" =~ ^[0-9]+[smh]$ ]] || die "$v must look like 10s, 1m (got '${!v}')"
done
for v in BENCH_CONNECTIONS BENCH_THREADS; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
done
for k in $BENCH_KEYS; do
  case "$k" in ecdsa | rsa) ;; *) die "unknown key type '$k' in BENCH_KEYS (ecdsa, rsa)" ;; esac
done
for p in $BENCH_PROXIES; do
  case "$p" in skiff | nginx | haproxy) ;; *) die "unknown server '$p' in BENCH_PROXIES" ;; esac
done
case "$BENCH_TLS_VERSION" in 1.2 | 1.3) ;; *) die "BENCH_TLS_VERSION must be 1.2 or 1.3" ;; esac
[[ -x "$SKIFF_PROXY" ]] || die "no skiff-proxy at $SKIFF_PROXY (build it, or set SKIFF_PROXY)"
command -v openssl >/dev/null || die "openssl is needed to make the certificates"

bench_install_packages
bench_init_tempdir skiff-tls-bench
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

# The certificates: one self-signed per key type, used by every server.
mkdir -p "$T/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$T/certs/ecdsa.key" -out "$T/certs/ecdsa.crt" -days 30 -subj "/CN=bench.example" \
  -addext "subjectAltName=DNS:bench.example" >/dev/null 2>&1 || die "openssl (ECDSA) failed"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/certs/rsa.key" -out "$T/certs/rsa.crt" \
  -days 30 -subj "/CN=bench.example" -addext "subjectAltName=DNS:bench.example" \
  >/dev/null 2>&1 || die "openssl (RSA) failed"
for k in ecdsa rsa; do cat "$T/certs/$k.crt" "$T/certs/$k.key" >"$T/certs/$k.pem"; done

# skiff's TLS 1.3 order (BoringSSL's, as Envoy negotiates), for every server in 1.3 mode.
TLS13_SUITES="TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

cipher_of() { # KEY: the one TLS 1.2 suite every server is given
  [[ "$1" == ecdsa ]] && echo ECDHE-ECDSA-AES128-GCM-SHA256 || echo ECDHE-RSA-AES128-GCM-SHA256
}

write_skiff() { # DIR KEY PORT
  local d="$1" key="$2" port="$3"
  "$PY" - "$d/snapshot.json" "$T/certs/$key.crt" "$T/certs/$key.key" "$UP_PORT" \
    "$(cipher_of "$key")" "$BENCH_TLS_VERSION" <<'EOF'
import json, sys
out, crt, key, up, cipher, version = sys.argv[1:]
tls = {"certificate": "file://bench", "minProtocolVersion": "TLSV1_2"}
if version == "1.2":
    tls.update(maxProtocolVersion="TLSV1_2", cipherSuites=[cipher])
cluster = "outbound|80||upstream.bench.svc.cluster.local"
snap = {
    "listeners": [{"name": "0.0.0.0_443", "address": "0.0.0.0", "port": 443, "protocol": "TLS",
                   "filterChains": [{"name": "bench", "tls": tls, "routeTable": "https.443"}]}],
    "routeTables": [{"name": "https.443", "virtualHosts": [
        {"name": "*:443", "domains": ["*"], "routes": [
            {"name": "default", "route": {"clusters": [{"cluster": cluster, "weight": 1}]}}]}]}],
    "clusters": [{"name": cluster, "service": "upstream.bench.svc.cluster.local", "port": 80}],
    "endpoints": [{"clusterName": cluster, "endpoints": [
        {"address": "127.0.0.1", "port": int(up), "healthy": True}]}],
    "secrets": [{"name": "file://bench", "certificateChainFile": crt, "privateKeyFile": key}],
}
json.dump(snap, open(out, "w"), indent=1)
EOF
}

write_nginx_tls() { # DIR KEY PORT
  local d="$1" key="$2" port="$3" ssl
  mkdir -p "$d/tmp"
  if [[ "$BENCH_TLS_VERSION" == 1.2 ]]; then
    ssl="ssl_protocols TLSv1.2; ssl_ciphers $(cipher_of "$key"); ssl_prefer_server_ciphers on;"
  else
    ssl="ssl_protocols TLSv1.2 TLSv1.3; ssl_prefer_server_ciphers on; ssl_conf_command Ciphersuites $TLS13_SUITES;"
  fi
  {
    nginx_common "$d"
    cat <<EOF
http {
  access_log off;
$(nginx_temp_paths "$d")
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream backend {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$port ssl backlog=4096;
    ssl_certificate $T/certs/$key.crt;
    ssl_certificate_key $T/certs/$key.key;
    $ssl
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  } >"$d/nginx.conf"
}

write_haproxy_tls() { # DIR KEY PORT
  local d="$1" key="$2" port="$3" ssl
  mkdir -p "$d"
  if [[ "$BENCH_TLS_VERSION" == 1.2 ]]; then
    ssl="ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2 ciphers $(cipher_of "$key")"
  else
    ssl="ssl-min-ver TLSv1.2 ciphersuites $TLS13_SUITES"
  fi
  cat >"$d/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
  pidfile $d/haproxy.pid

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 300s

frontend fe
  bind 127.0.0.1:$port ssl crt $T/certs/$key.pem alpn http/1.1 $ssl
  default_backend be

backend be
  http-reuse always
  server upstream 127.0.0.1:$UP_PORT
EOF
}

run_wrk() { # PORT DURATION OUT [EXTRA...]
  local port="$1" dur="$2" out="$3"
  shift 3
  "$WRK" -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"$dur" --latency -s "$T/report.lua" "$@" \
    "https://127.0.0.1:$port/" >"$out" 2>&1 &
  local pid=$! rc=0
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  local keep=() p
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
  return "$rc"
}

RESULTS="$T/results.tsv"
: >"$RESULTS"
SETUP_FAILED=0

# measure NAME KEY PID PORT DIR: correctness, warm-up, keep-alive run, handshake run.
measure() {
  local name="$1" key="$2" pid="$3" port="$4" d="$5" why got
  if ! why="$(helper wait-port "$port" "$pid" "$START_TIMEOUT_S" 2>&1)"; then
    log "$name ($key): $why"
    server_log_tail "$d" >&2
    printf '%s\t%s\tfailed\t%s\n' "$name" "$key" "$why" >>"$RESULTS"
    stop_proc "$pid"
    return 1
  fi
  got="$(curl -sk --max-time 5 "https://127.0.0.1:$port/" || true)"
  if [[ "$got" != "$(cat "$T/body")" ]]; then
    log "$name ($key): wrong response over HTTPS: ${got:0:200}"
    server_log_tail "$d" >&2
    printf '%s\t%s\tfailed\t%s\n' "$name" "$key" "wrong response" >>"$RESULTS"
    stop_proc "$pid"
    return 1
  fi
  local proto
  proto="$(openssl s_client -brief -connect "127.0.0.1:$port" -servername bench.example \
    </dev/null 2>&1 | sed -n 's/^\(Protocol version\|Ciphersuite\): *//p' | tr '\n' ' ')"
  log "$name ($key): negotiated $proto; warm-up $BENCH_WARMUP"
  run_wrk "$port" "$BENCH_WARMUP" "$d/wrk-warmup.txt" || true
  local mode cpu0 cpu1 requests secs p50 p99 errors
  for mode in keepalive handshake; do
    local extra=()
    [[ "$mode" == handshake ]] && extra=(-H "Connection: close")
    cpu0="$(helper cpu "$pid")"
    log "$name ($key): $mode: wrk -t$BENCH_THREADS -c$BENCH_CONNECTIONS -d$BENCH_DURATION"
    if ! run_wrk "$port" "$BENCH_DURATION" "$d/wrk-$mode.txt" "${extra[@]+"${extra[@]}"}"; then
      printf '%s\t%s\t%s\tfailed\twrk failed\n' "$name" "$key" "$mode" >>"$RESULTS"
      continue
    fi
    cpu1="$(helper cpu "$pid")"
    if ! read -r requests secs p50 p99 errors <<<"$(helper wrk-result "$d/wrk-$mode.txt")" ||
      ((requests == 0)); then
      printf '%s\t%s\t%s\tfailed\tno requests completed\n' "$name" "$key" "$mode" >>"$RESULTS"
      continue
    fi
    "$PY" - "$name" "$key" "$mode" "$requests" "$secs" "$p99" "$cpu0" "$cpu1" "$errors" \
      "$proto" >>"$RESULTS" <<'EOF'
import sys
name, key, mode, requests, secs, p99, cpu0, cpu1, errors, proto = sys.argv[1:]
requests, secs = int(requests), float(secs)
cpu = float(cpu1) - float(cpu0)
print("\t".join([name, key, mode, "ok", f"{requests / secs:.1f}", f"{float(p99) / 1000:.2f}",
                 f"{cpu / requests * 1e6:.1f}", errors, proto.strip()]))
EOF
  done
  stop_proc "$pid"
}

[[ "$BENCH_ROUNDS" =~ ^[1-9][0-9]?$ ]] || die "BENCH_ROUNDS must be 1..99"
read -ra PROXY_LIST <<<"$BENCH_PROXIES"
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for key in $BENCH_KEYS; do
    # The order rotates each round, so no server always runs first (or last) on a machine
    # that warms up or cools down.
    n=${#PROXY_LIST[@]}
    order=()
    for ((i = 0; i < n; i++)); do order+=("${PROXY_LIST[$(((i + round - 1) % n))]}"); done
    for p in "${order[@]}"; do
      st="$(proc_state "$UP_PID")"
      [[ -n "$st" && "$st" != Z ]] || die "the upstream nginx (pid $UP_PID) died"
      log "round $round/$BENCH_ROUNDS: $p ($key)"
      d="$T/$p-$key-$round"
      mkdir -p "$d"
      port="$(helper ports 1)"
      case "$p" in
      skiff)
        write_skiff "$d" "$key" "$port"
        if ! out="$("$SKIFF_PROXY" --bootstrap "$d/snapshot.json" --check 2>&1)"; then
          log "skiff ($key): --check rejects the snapshot: $out"
          printf 'skiff\t%s\tfailed\t%s\n' "$key" "--check rejects the snapshot" >>"$RESULTS"
          continue
        fi
        start_server "skiff ($key)" "$d" "$SKIFF_PROXY" --bootstrap "$d/snapshot.json" \
          --concurrency 1 --port-map "443=$port" --admin-port 0 --stats-port 0 \
          --readiness-port 0
        measure skiff "$key" "$CUR_PID" "$port" "$d" || true
        ;;
      nginx)
        write_nginx_tls "$d" "$key" "$port"
        start_server "nginx ($key)" "$d" "$NGINX" -p "$d" -c "$d/nginx.conf"
        measure nginx "$key" "$CUR_PID" "$port" "$d" || SETUP_FAILED=1
        ;;
      haproxy)
        write_haproxy_tls "$d" "$key" "$port"
        start_server "haproxy ($key)" "$d" "$HAPROXY" -db -f "$d/haproxy.cfg"
        measure haproxy "$key" "$CUR_PID" "$port" "$d" || SETUP_FAILED=1
        ;;
      esac
    done
  done
done

echo
echo "TLS benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$BENCH_THREADS -c$BENCH_CONNECTIONS -d$BENCH_DURATION per measurement, $BENCH_ROUNDS rounds (medians), one worker per server; TLS $BENCH_TLS_VERSION$([[ "$BENCH_TLS_VERSION" == 1.2 ]] && echo ", ECDHE-{ECDSA,RSA}-AES128-GCM-SHA256 only"); 100-byte body from an nginx upstream on 127.0.0.1:$UP_PORT"
echo "peers: nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), haproxy $("$HAPROXY" -v | awk 'NR == 1 { print $3 }'), $(openssl version | awk '{print $1, $2}'), wrk $("$WRK" -v 2>&1 | awk 'NR == 1 { print $2 }')"
echo
"$PY" - "$RESULTS" <<'EOF'
import statistics
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
runs = {}
print(f"{'server':<8} {'key':<6} {'measure':<10} {'per s':>10} {'p99 ms':>8} {'CPU us/op':>10} {'errors':>7}  negotiated")
for r in rows:
    if len(r) >= 9 and r[3] == "ok":
        name, key, mode, _, rate, p99, cpu, errors, proto = r[:9]
        runs.setdefault((name, key, mode), []).append((float(rate), float(cpu)))
        print(f"{name:<8} {key:<6} {mode:<10} {float(rate):>10.0f} {p99:>8} {cpu:>10} {errors:>7}  {proto}")
    else:
        print(f"{r[0]:<8} {r[1]:<6} {'':<10} FAILED: {' '.join(r[2:])}")
# Each figure's median over the rounds.
ok = {k: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs))
      for k, vs in runs.items()}
print()
print("medians over the rounds")
for (name, key, mode), (rate, cpu) in sorted(ok.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
    print(f"{name:<8} {key:<6} {mode:<10} {rate:>10.0f} {'':>8} {cpu:>10.1f}")
print()
print("skiff vs the best peer, medians (per s: higher is better; CPU per op: lower is better)")
for key in ("ecdsa", "rsa"):
    for mode in ("keepalive", "handshake"):
        s = ok.get(("skiff", key, mode))
        peers = {n: v for (n, k, m), v in ok.items() if k == key and m == mode and n != "skiff"}
        if s is None or not peers:
            continue
        best_rate = max(peers.items(), key=lambda kv: kv[1][0])
        best_cpu = min(peers.items(), key=lambda kv: kv[1][1])
        label = {"keepalive": "HTTPS req/s keep-alive", "handshake": "new handshakes/s"}[mode]
        print(f"  {key:<5} {label:<24} {s[0] / best_rate[1][0]:.2f}x {best_rate[0]} "
              f"({s[0]:.0f} vs {best_rate[1][0]:.0f});  CPU/op {s[1] / best_cpu[1][1]:.2f}x "
              f"{best_cpu[0]} ({s[1]:.1f} vs {best_cpu[1][1]:.1f} us)")
EOF
((SETUP_FAILED == 0)) || die "a peer could not be measured (see above)"
exit 0
