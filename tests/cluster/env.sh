#!/usr/bin/env bash
# The binaries of skiff's local cluster beyond tests/kube/env.sh's kube-apiserver and etcd:
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy (k8s.io/kubernetes, the
# same version as the API server) and CoreDNS (the cluster-DNS plugins only), all built
# from the Go module proxy by this script, never downloaded prebuilt, and cached next to the
# API server's.
#
#   env.sh build     build + cache them (and the API server's, via tests/kube/env.sh);
#                    a no-op when cached
#   env.sh bin-dir   print the cache directory holding all the binaries
#   env.sh check     exit 0 when everything the local cluster needs is installed, else
#                    print what is missing and exit 1 (used to skip with a message)
#
# Environment: SKIFF_KUBE_CACHE (cache root, default $HOME/.cache/skiff/kube).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="$HERE/tools"
KUBE_ENV="$HERE/../kube/env.sh"
die() { echo "cluster/env.sh: $*" >&2; exit 1; }
log() { echo "cluster/env.sh: $*" >&2; }

mod_version() {  # mod_version GO_MOD MODULE -> the version required for MODULE
  awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}
KUBE_VERSION="$(mod_version "$TOOLS/kube/go.mod" k8s.io/kubernetes)"
APISERVER_VERSION="$(mod_version "$HERE/../kube/tools/kube-apiserver/go.mod" k8s.io/kubernetes)"
COREDNS_VERSION="$(mod_version "$TOOLS/coredns/go.mod" github.com/coredns/coredns)"
[ -n "$KUBE_VERSION" ] && [ -n "$COREDNS_VERSION" ] || die "cannot read versions from $TOOLS/*/go.mod"
[ "$KUBE_VERSION" = "$APISERVER_VERSION" ] ||
  die "tools/kube/go.mod has k8s.io/kubernetes $KUBE_VERSION but the API server is $APISERVER_VERSION"
BIN_DIR="$("$KUBE_ENV" bin-dir)"
KUBE_BINS=(kube-controller-manager kube-scheduler kubelet kube-proxy)

build_stamp() {
  {
    echo "kube $KUBE_VERSION coredns $COREDNS_VERSION"
    go version 2> /dev/null || echo "no go"
    cat "$TOOLS/kube/go.mod" "$TOOLS/kube/go.sum" "$TOOLS/coredns/go.mod" \
      "$TOOLS/coredns/go.sum" "$TOOLS/coredns/main.go"
    declare -f build_kube build_coredns
  } | sha256sum | cut -d' ' -f1
}

go_env() {  # as tests/kube/env.sh: the committed go.mod/go.sum, no workspace, local toolchain
  env GOWORK=off GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 "$@"
}

build_kube() {  # build_kube NAME OUT
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local pkg=k8s.io/component-base/version
  local ld="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  (cd "$TOOLS/kube" && go_env go build -trimpath -ldflags="$ld" -o "$2" "k8s.io/kubernetes/cmd/$1")
}

build_coredns() {  # build_coredns OUT
  (cd "$TOOLS/coredns" && go_env go build -trimpath -ldflags="-s -w" -o "$1" .)
}

cached() {
  local b
  for b in "${KUBE_BINS[@]}" coredns; do [ -x "$BIN_DIR/$b" ] || return 1; done
  [ "$(cat "$BIN_DIR/cluster.stamp" 2> /dev/null)" = "$(build_stamp)" ]
}

cmd_build() {
  command -v go > /dev/null || die "go is not installed (needed to build the cluster's binaries)"
  "$KUBE_ENV" build
  mkdir -p "$BIN_DIR"
  exec 9> "$BIN_DIR/.cluster.lock"
  flock 9
  if cached; then
    log "cached: ${KUBE_BINS[*]} $KUBE_VERSION, coredns $COREDNS_VERSION in $BIN_DIR"
    return 0
  fi
  local t0=$SECONDS b
  rm -f "$BIN_DIR/cluster.stamp"
  for b in "${KUBE_BINS[@]}"; do
    log "building $b $KUBE_VERSION (go module proxy) ..."
    build_kube "$b" "$BIN_DIR/$b.tmp" || die "$b build failed"
    mv -f "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
    log "$b built after $((SECONDS - t0)) s"
  done
  log "building coredns $COREDNS_VERSION (go module proxy) ..."
  build_coredns "$BIN_DIR/coredns.tmp" || die "coredns build failed"
  mv -f "$BIN_DIR/coredns.tmp" "$BIN_DIR/coredns"
  build_stamp > "$BIN_DIR/cluster.stamp"
  log "built in $((SECONDS - t0)) s in $BIN_DIR"
}

cmd_check() {
  local missing=() c
  command -v go > /dev/null || missing+=("the Go toolchain (go)")
  for c in dockerd docker containerd ctr runc debootstrap iptables kubectl; do
    command -v "$c" > /dev/null || [ -x "/usr/sbin/$c" ] || missing+=("$c")
  done
  [ -x /usr/lib/cni/ptp ] && [ -x /usr/lib/cni/host-local ] ||
    missing+=("CNI plugins (containernetworking-plugins)")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}"
    return 1
  fi
}

case "${1:-}" in
  build) cmd_build ;;
  bin-dir) echo "$BIN_DIR" ;;
  check) cmd_check ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
