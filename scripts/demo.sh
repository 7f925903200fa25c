#!/usr/bin/env bash
# The main job on one machine, with no cluster: builds skiff and runs what exists on the
# embedded default configuration (examples/coolstore): validates it and prints the gateway
# snapshot the operator computes from it.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-examples/coolstore}
scripts/bootstrap.sh
export CCACHE_BASEDIR="$(pwd)"
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/release -j "$(nproc)" --target skiffctl skiff-proxy skiff-operator
echo
echo "==> skiffctl validate -f $CONFIG"
build/release/cli/skiffctl validate -f "$CONFIG"
echo
echo "==> skiffctl translate --config-dir $CONFIG   (the ingress gateway's snapshot)"
build/release/cli/skiffctl translate --config-dir "$CONFIG" | tee build/demo-snapshot.json
echo
echo "==> skiff-proxy --bootstrap build/demo-snapshot.json --check"
build/release/proxy/skiff-proxy --bootstrap build/demo-snapshot.json --check
