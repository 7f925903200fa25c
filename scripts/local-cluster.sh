#!/usr/bin/env bash
# skiff on a real single-node Kubernetes cluster on this machine, with no image registry
# and no route out (tests/cluster/localcluster.py says how it is made):
#
#   scripts/local-cluster.sh up          build the cluster's binaries from the Go module proxy
#                                        (cached), skiff's images with a Docker daemon started
#                                        for the purpose, start the cluster, then deploy
#                                        skiff (kubectl apply -k manifests/) and the coolstore
#                                        shop (examples/coolstore-k8s/ + its Istio YAML)
#   scripts/local-cluster.sh story       run the seed's story on it (tests/cluster/story_test.py)
#   scripts/local-cluster.sh bench [N]   apply -> traffic, N changes (bench/cluster_apply_bench.py)
#   scripts/local-cluster.sh kubectl ARGS...
#   scripts/local-cluster.sh exec CMD... any command inside the cluster's network namespace,
#                                        e.g. exec curl http://GATEWAY-IP/api/catalog
#   scripts/local-cluster.sh status | down
#
# Needs root, Debian's docker.io, containerd, runc, containernetworking-plugins and
# debootstrap (scripts/bootstrap.sh --with-test-tools installs them), Go and kubectl.
# State and logs: SKIFF_CLUSTER_DIR (default ~/.cache/skiff/local-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${SKIFF_CLUSTER_DIR:-${HOME:-/root}/.cache/skiff/local-cluster}
LC=(python3 tests/cluster/localcluster.py)
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
  up)
    missing=$(tests/cluster/env.sh check) || { echo "local-cluster.sh: $missing" >&2; exit 1; }
    tests/cluster/env.sh build
    mkdir -p "$DIR"
    tests/cluster/images.sh build "$DIR/images.tar"
    "${LC[@]}" up "$DIR" --images "$DIR/images.tar"
    python3 tests/cluster/story_test.py --reuse "$DIR" --deploy-only
    gw=$("${LC[@]}" exec "$DIR" -- kubectl -n skiff-system get service istio-ingressgateway \
      -o jsonpath='{.spec.clusterIP}')
    echo "local-cluster.sh: up. Try: scripts/local-cluster.sh exec curl -s http://$gw/api/catalog"
    ;;
  story) python3 tests/cluster/story_test.py --reuse "$DIR" ;;
  bench) python3 bench/cluster_apply_bench.py "$DIR" "${2:-60}" ;;
  kubectl) shift; exec "${LC[@]}" exec "$DIR" -- kubectl "$@" ;;
  exec) shift; exec "${LC[@]}" exec "$DIR" -- "$@" ;;
  status) "${LC[@]}" status "$DIR" ;;
  down) "${LC[@]}" down "$DIR" ;;
  *) usage ;;
esac
