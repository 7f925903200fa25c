#!/usr/bin/env bash
# A real Kubernetes API server (kube-apiserver + etcd, no controllers, no nodes) on 127.0.0.1
# for skiff's integration tests. Both binaries are built from the Go module proxy by this
# script (never downloaded prebuilt) and cached outside the repo.
#
#   env.sh build                 build + cache kube-apiserver and etcd (no-op when cached)
#   env.sh bin-dir               print the cache directory holding the binaries
#   env.sh start DIR             start etcd + kube-apiserver, state in DIR; prints DIR/kubeconfig
#   env.sh stop DIR              stop both (exactly the pids recorded in DIR)
#   env.sh start-apiserver DIR   (re)start only kube-apiserver (etcd must be running)
#   env.sh stop-apiserver DIR    stop only kube-apiserver
#   env.sh status DIR            show what is running
#
# A DIR is reusable: certificates, keys, ports and the etcd data are created on the first
# start and kept, so stop + start (or stop-apiserver + start-apiserver) brings back the
# same server at the same URL with the same objects.
#
# Environment:
#   SKIFF_KUBE_CACHE          cache root (default $HOME/.cache/skiff/kube)
#   SKIFF_KUBE_START_TIMEOUT  seconds to wait for /readyz (default 90)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="$HERE/tools"
CACHE_ROOT="${SKIFF_KUBE_CACHE:-${HOME:-/root}/.cache/skiff/kube}"
START_TIMEOUT="${SKIFF_KUBE_START_TIMEOUT:-90}"
STOP_TIMEOUT=20
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1"

die() { echo "env.sh: $*" >&2; exit 1; }
log() { echo "env.sh: $*" >&2; }

mod_version() {  # mod_version GO_MOD MODULE -> the version required for MODULE
  awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}
KUBE_VERSION="$(mod_version "$TOOLS/kube-apiserver/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version "$TOOLS/etcd/go.mod" go.etcd.io/etcd/server/v3)"
[ -n "$KUBE_VERSION" ] && [ -n "$ETCD_VERSION" ] || die "cannot read versions from $TOOLS/*/go.mod"
BIN_DIR="$CACHE_ROOT/$KUBE_VERSION"
APISERVER_BIN="$BIN_DIR/kube-apiserver"
ETCD_BIN="$BIN_DIR/etcd"

# What the cached binaries were built from; a change in any of it rebuilds them.
build_stamp() {
  {
    echo "kube $KUBE_VERSION etcd $ETCD_VERSION"
    go version 2>/dev/null || echo "no go"
    cat "$TOOLS/kube-apiserver/go.mod" "$TOOLS/kube-apiserver/go.sum" \
        "$TOOLS/etcd/go.mod" "$TOOLS/etcd/go.sum" "$TOOLS/etcd/main.go"
    declare -f build_apiserver build_etcd
  } | sha256sum | cut -d' ' -f1
}

go_env() {  # hermetic-ish go invocation: the committed go.mod/go.sum, no workspace, local toolchain
  env GOWORK=off GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 "$@"
}

build_apiserver() {  # build_apiserver OUT
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local pkg=k8s.io/component-base/version
  local ld="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  (cd "$TOOLS/kube-apiserver" && go_env go build -trimpath -ldflags="$ld" -o "$1" \
      k8s.io/kubernetes/cmd/kube-apiserver)
}

build_etcd() {  # build_etcd OUT
  (cd "$TOOLS/etcd" && go_env go build -trimpath -ldflags="-s -w" -o "$1" .)
}

cmd_build() {
  command -v go >/dev/null || die "go is not installed (needed to build kube-apiserver and etcd)"
  mkdir -p "$BIN_DIR"
  exec 9>"$BIN_DIR/.lock"
  flock 9  # one build at a time; a second caller waits and then finds the binaries cached
  local stamp; stamp="$(build_stamp)"
  if [ -x "$APISERVER_BIN" ] && [ -x "$ETCD_BIN" ] && [ "$(cat "$BIN_DIR/stamp" 2>/dev/null)" = "$stamp" ]; then
    log "cached: kube-apiserver $KUBE_VERSION, etcd $ETCD_VERSION in $BIN_DIR"
    return 0
  fi
  local t0=$SECONDS
  rm -f "$BIN_DIR/stamp"
  log "building etcd $ETCD_VERSION (go module proxy) ..."
  build_etcd "$ETCD_BIN.tmp" || die "etcd build failed"
  mv -f "$ETCD_BIN.tmp" "$ETCD_BIN"
  log "etcd built after $((SECONDS - t0)) s"
  log "building kube-apiserver $KUBE_VERSION (go module proxy; 10-20 min on 2 cores) ..."
  build_apiserver "$APISERVER_BIN.tmp" || die "kube-apiserver build failed"
  mv -f "$APISERVER_BIN.tmp" "$APISERVER_BIN"
  echo "$stamp" >"$BIN_DIR/stamp"
  log "built in $((SECONDS - t0)) s: $(du -h "$APISERVER_BIN" | cut -f1) kube-apiserver," \
      "$(du -h "$ETCD_BIN" | cut -f1) etcd, in $BIN_DIR"
}

# ---------------------------------------------------------------------------------------
free_ports() {  # free_ports N -> N distinct free TCP ports on 127.0.0.1, one per line
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

alive() {  # alive NAME DIR -> 0 if the pid recorded for NAME is running that binary for DIR
  local pidfile="$2/$1.pid" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  # Guard against pid reuse: the process must be our binary started for this DIR.
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2/" || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

stop_one() {  # stop_one NAME DIR
  local name="$1" dir="$2" pid i
  if ! alive "$name" "$dir"; then rm -f "$dir/$name.pid"; return 0; fi
  pid="$(cat "$dir/$name.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    alive "$name" "$dir" || break
    sleep 0.1
  done
  if alive "$name" "$dir"; then
    log "$name ($pid) did not stop in ${STOP_TIMEOUT}s; killing"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$name" "$dir" || break; sleep 0.1; done
  fi
  rm -f "$dir/$name.pid"
  log "stopped $name ($pid)"
}

# started NAME DIR -> 0 while the process this script just started for NAME runs. Not
# alive(): between fork and exec the child still has this script's command line, which does
# not name the binary, and on a loaded machine that window is long enough to be taken for
# an exit (the server then started fine, orphaned). The pid is our own child's, just
# recorded ($!), so it cannot have been reused.
started() {
  local pid
  pid="$(cat "$2/$1.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

fail_start() {  # fail_start NAME DIR MESSAGE
  log "$3; last lines of $2/logs/$1.log:"
  tail -n 30 "$2/logs/$1.log" >&2 || true
  # Never leave a half-started server behind (our own child, by its pid).
  local pid i
  if started "$1" "$2"; then
    pid="$(cat "$2/$1.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do started "$1" "$2" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$2/$1.pid"
  die "$1 did not start"
}

setup_dir() {  # one-time state: ports, certificates, keys; kept across restarts
  local dir="$1"
  mkdir -p "$dir/pki" "$dir/logs" "$dir/etcd-data"
  chmod 700 "$dir/etcd-data"
  if [ ! -f "$dir/ports" ]; then  # chosen once: a restarted server keeps its URL
    local ports; ports=($(free_ports 3))
    printf 'ETCD_CLIENT_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' "${ports[@]}" >"$dir/ports.tmp"
    mv "$dir/ports.tmp" "$dir/ports"
  fi
  local p="$dir/pki"
  [ -f "$p/ca.crt" ] && [ -f "$p/admin.crt" ] && [ -f "$p/sa.key" ] && return 0
  log "generating certificates in $p"
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=skiff-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    cat >server.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 3650 -extfile server.ext 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=skiff-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out admin.crt -days 3650 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr
    chmod 600 ./*.key
  ) || die "certificate generation failed (openssl)"
}

write_kubeconfig() {
  local dir="$1" port="$2" b64="base64 -w0"
  cat >"$dir/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: skiff-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $($b64 <"$dir/pki/ca.crt")
users:
- name: skiff-admin
  user:
    client-certificate-data: $($b64 <"$dir/pki/admin.crt")
    client-key-data: $($b64 <"$dir/pki/admin.key")
contexts:
- name: skiff-test
  context:
    cluster: skiff-test
    user: skiff-admin
    namespace: default
current-context: skiff-test
EOF
  chmod 600 "$dir/kubeconfig.tmp"
  mv "$dir/kubeconfig.tmp" "$dir/kubeconfig"
}

write_env() {
  local dir="$1"
  # shellcheck disable=SC1091
  . "$dir/ports"
  cat >"$dir/env.tmp" <<EOF
KUBECONFIG=$dir/kubeconfig
SKIFF_KUBE_SERVER=https://127.0.0.1:$APISERVER_PORT
SKIFF_KUBE_APISERVER_PORT=$APISERVER_PORT
SKIFF_KUBE_APISERVER_PID=$(cat "$dir/kube-apiserver.pid" 2>/dev/null || true)
SKIFF_ETCD_URL=http://127.0.0.1:$ETCD_CLIENT_PORT
SKIFF_ETCD_PORT=$ETCD_CLIENT_PORT
SKIFF_ETCD_PID=$(cat "$dir/etcd.pid" 2>/dev/null || true)
SKIFF_KUBE_VERSION=$KUBE_VERSION
SKIFF_ETCD_VERSION=$ETCD_VERSION
EOF
  mv "$dir/env.tmp" "$dir/env"
}

start_etcd() {
  local dir="$1" i
  if alive etcd "$dir"; then log "etcd already running ($(cat "$dir/etcd.pid"))"; return 0; fi
  # shellcheck disable=SC1091
  . "$dir/ports"
  local peer="http://127.0.0.1:$ETCD_PEER_PORT" client="http://127.0.0.1:$ETCD_CLIENT_PORT"
  "$ETCD_BIN" --name skiff-test --data-dir "$dir/etcd-data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "skiff-test=$peer" --initial-cluster-state new \
    --unsafe-no-fsync --quota-backend-bytes=2147483648 --log-level warn \
    </dev/null >>"$dir/logs/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  for ((i = 0; i < START_TIMEOUT * 4; i++)); do
    started etcd "$dir" || fail_start etcd "$dir" "etcd exited"
    if curl -sf --max-time 2 "$client/health" 2>/dev/null | grep -q '"health":"true"'; then
      log "etcd ready on $client (pid $(cat "$dir/etcd.pid"))"
      return 0
    fi
    sleep 0.25
  done
  stop_one etcd "$dir"
  fail_start etcd "$dir" "etcd not healthy after ${START_TIMEOUT}s"
}

start_apiserver() {
  local dir="$1" i p="$1/pki"
  if alive kube-apiserver "$dir"; then
    log "kube-apiserver already running ($(cat "$dir/kube-apiserver.pid"))"
    write_env "$dir"
    return 0
  fi
  alive etcd "$dir" || die "etcd is not running for $dir (use: env.sh start $dir)"
  # shellcheck disable=SC1091
  . "$dir/ports"
  # No controllers run here, so the ServiceAccount admission plugin (which needs the
  # 'default' ServiceAccount a controller creates) is off; the lease-based endpoint
  # reconciler is off since a loopback address cannot be an Endpoints address.
  "$APISERVER_BIN" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --cert-dir="$p" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none \
    --allow-privileged=true --profiling=false --v=1 \
    </dev/null >>"$dir/logs/kube-apiserver.log" 2>&1 &
  echo $! >"$dir/kube-apiserver.pid"
  write_kubeconfig "$dir" "$APISERVER_PORT"
  local t0=$SECONDS
  for ((i = 0; i < START_TIMEOUT * 4; i++)); do
    started kube-apiserver "$dir" || fail_start kube-apiserver "$dir" "kube-apiserver exited"
    if [ "$(kubectl --kubeconfig "$dir/kubeconfig" --request-timeout=3s get --raw /readyz 2>/dev/null)" = ok ]; then
      log "kube-apiserver $KUBE_VERSION ready on https://127.0.0.1:$APISERVER_PORT" \
          "(pid $(cat "$dir/kube-apiserver.pid"), $((SECONDS - t0)) s)"
      write_env "$dir"
      return 0
    fi
    sleep 0.25
    [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ] || break
  done
  stop_one kube-apiserver "$dir"
  fail_start kube-apiserver "$dir" "kube-apiserver not ready after ${START_TIMEOUT}s"
}

need_dir() {  # need_dir DIR [create]
  [ -n "${1:-}" ] || die "usage: env.sh $CMD DIR"
  if [ "${2:-}" = create ]; then mkdir -p "$1"; fi
  [ -d "$1" ] || die "no such directory: $1"
  DIR="$(cd "$1" && pwd)"
}

need_bins() {
  [ -x "$APISERVER_BIN" ] && [ -x "$ETCD_BIN" ] ||
    die "no cached binaries in $BIN_DIR; run: $HERE/env.sh build"
  command -v kubectl >/dev/null || die "kubectl is not installed"
}

CMD="${1:-}"
case "$CMD" in
  build) cmd_build ;;
  bin-dir) echo "$BIN_DIR" ;;
  start)
    need_dir "${2:-}" create; need_bins
    setup_dir "$DIR"
    start_etcd "$DIR"
    # A failed start leaves nothing running.
    (start_apiserver "$DIR") || { stop_one etcd "$DIR"; exit 1; }
    echo "$DIR/kubeconfig"
    ;;
  start-apiserver)
    need_dir "${2:-}"; need_bins
    [ -f "$DIR/ports" ] || die "$DIR was never started (use: env.sh start $DIR)"
    start_apiserver "$DIR"
    echo "$DIR/kubeconfig"
    ;;
  stop)
    need_dir "${2:-}"
    stop_one kube-apiserver "$DIR"
    stop_one etcd "$DIR"
    if [ -f "$DIR/ports" ]; then write_env "$DIR"; fi
    ;;
  stop-apiserver)
    need_dir "${2:-}"
    stop_one kube-apiserver "$DIR"
    if [ -f "$DIR/ports" ]; then write_env "$DIR"; fi
    ;;
  status)
    need_dir "${2:-}"
    for n in etcd kube-apiserver; do
      if alive "$n" "$DIR"; then echo "$n: running (pid $(cat "$DIR/$n.pid"))"; else echo "$n: stopped"; fi
    done
    ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
