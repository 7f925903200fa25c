#!/usr/bin/env bash
# apply -> traffic: time from a change (a saved file; `kubectl apply` on a real API server)
# until a gateway proxy serves the new route, p50/p90/p99/max over CHANGES changes, with
# the default hold-off (100ms) and 0. Not a pass/fail test (bench/README.md).
#   bench/apply_bench.sh [CHANGES]                   the build in $BUILD (build/release)
#   BEFORE=/tmp/before bench/apply_bench.sh 100      also skiff-operator and skiff-proxy in
#                                                    /tmp/before, measured first, same run
#   APPLY_BENCH_PATHS=file bench/apply_bench.sh      only the file path (no API server)
# The kube path needs the cached kube-apiserver + etcd (tests/kube/env.sh build) and kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
CHANGES=${1:-100}
PATHS=${APPLY_BENCH_PATHS:-file,kube}
if [[ -n "${BEFORE:-}" ]]; then
  python3 bench/apply_bench.py --operator "$BEFORE/skiff-operator" --proxy "$BEFORE/skiff-proxy" \
    --changes "$CHANGES" --paths "$PATHS" --label before
fi
python3 bench/apply_bench.py --operator "$BUILD/operator/skiff-operator" \
  --proxy "$BUILD/proxy/skiff-proxy" --changes "$CHANGES" --paths "$PATHS" --label after
