#!/usr/bin/env bash
# Builds skiff's four images from docker/Dockerfile (one shared build stage, compiled once)
# and prints their sizes:
#   skiff-operator:TAG  skiff-proxy:TAG  coolstore-catalog:TAG  coolstore-apigateway:TAG
#
#   docker/build.sh [--tag TAG] [--network MODE]
#
# TAG defaults to latest (what manifests/ and examples/coolstore-k8s/ name). --network host
# is what a daemon started with --bridge=none needs to reach Debian's package mirror.
# Environment: DOCKER (the docker CLI, default: docker), DOCKER_HOST as for the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-docker}
TAG=latest
NETWORK=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift 2 ;;
    --network) NETWORK=(--network "$2"); shift 2 ;;
    *) echo "usage: docker/build.sh [--tag TAG] [--network MODE]" >&2; exit 2 ;;
  esac
done
export DOCKER_BUILDKIT=1
t0=$SECONDS
for target in operator proxy catalog apigateway; do
  case $target in
    operator | proxy) image=skiff-$target ;;
    *) image=coolstore-$target ;;
  esac
  echo "build.sh: $image:$TAG (target $target)" >&2
  "$DOCKER" build "${NETWORK[@]}" --progress=plain -f docker/Dockerfile --target "$target" \
    -t "$image:$TAG" . >> "${SKIFF_DOCKER_LOG:-/dev/stderr}" 2>&1 || {
    [ -z "${SKIFF_DOCKER_LOG:-}" ] || tail -40 "$SKIFF_DOCKER_LOG" >&2
    echo "build.sh: building $image failed" >&2
    exit 1
  }
done
echo "build.sh: built in $((SECONDS - t0)) s:" >&2
for image in skiff-operator skiff-proxy coolstore-catalog coolstore-apigateway; do
  "$DOCKER" image inspect -f "{{.Size}}" "$image:$TAG" |
    awk -v n="$image:$TAG" '{ printf "  %-28s %4.0f MB\n", n, $1 / 1e6 }' >&2
done
