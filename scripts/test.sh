#!/usr/bin/env bash
# Runs every test from scratch on a fresh Debian machine: installs what is missing, checks
# formatting, builds the release and the ASan+UBSan configurations, runs the sanitizer
# tests and then all tests on the release build. Ends with CTest's summary line.
#
#   scripts/test.sh            everything
#   SKIFF_SKIP_ASAN=1 ...      skip the sanitizer build (faster local iteration)
#   SKIFF_SKIP_FUZZ=1 ...      skip the bounded libFuzzer run (SKIFF_FUZZ_SECONDS, default 60)
#   SKIFF_SKIP_CLUSTER=1 ...   skip the local-cluster phase (images, a real single-node
#                              cluster, the story on it, apply -> traffic bench)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${JOBS:-$(nproc)}
export CCACHE_BASEDIR="$ROOT"
export CCACHE_NOHASHDIR=1
export CTEST_OUTPUT_ON_FAILURE=1

declare -a PHASES=()
phase() {  # phase NAME COMMAND...
  local name=$1
  shift
  local start=$SECONDS
  echo "==> $name"
  "$@"
  local took=$((SECONDS - start))
  PHASES+=("$(printf '%-28s %5ds' "$name" "$took")")
  echo "<== $name: ${took}s"
}

configure() {  # configure DIR [cmake args...]
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja "$@" > "$dir.configure.log" 2>&1 || {
    cat "$dir.configure.log"
    return 1
  }
}

mkdir -p build
phase "bootstrap" scripts/bootstrap.sh --with-test-tools
phase "format check" scripts/format.sh --check
phase "configure release" configure build/release -DCMAKE_BUILD_TYPE=Release
phase "build release" cmake --build build/release -j "$JOBS"
if [ "${SKIFF_SKIP_ASAN:-0}" != "1" ]; then
  phase "configure asan" configure build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSKIFF_SANITIZE=ON -DSKIFF_BUILD_BENCH=OFF
  phase "build asan" cmake --build build/asan -j "$JOBS"
  # The browser test checks drawn dashboards of Prometheus itself, not skiff's code paths,
  # and needs the release build's timing: it runs with the release tests.
  phase "tests (asan+ubsan)" env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan -j "$JOBS" --timeout 600 --label-exclude 'bench|cluster|browser'
fi

if [ "${SKIFF_SKIP_FUZZ:-0}" != "1" ]; then
  phase "fuzz http parser (${SKIFF_FUZZ_SECONDS:-60}s)" \
    tests/fuzz/run_fuzz.sh build/fuzz "${SKIFF_FUZZ_SECONDS:-60}"
fi

release_tests() {
  ctest --test-dir build/release -j "$JOBS" --timeout 600 --label-exclude cluster 2>&1 |
    tee build/release-tests.log
}
phase "tests (release)" release_tests
SUMMARY=$(grep -E '^[0-9]+% tests passed' build/release-tests.log | tail -1)

# The seed's story in a real local cluster (tests/cluster/): skiff's images built offline,
# a single-node cluster, manifests/ and the coolstore shop, the story, apply -> traffic.
# Skipped (with the reason) only when Docker or the Go toolchain is missing.
cluster_phase() {
  local rc=0
  python3 tests/cluster/story_test.py --bench "${SKIFF_BENCH_CHANGES:-60}" || rc=$?
  if [ "$rc" = 77 ]; then
    echo "cluster: SKIPPED (see the reason above): the local-cluster phase did not run"
    return 0
  fi
  return "$rc"
}
cluster_tests() { cluster_phase 2>&1 | tee build/cluster-tests.log; }
: > build/cluster-tests.log
if [ "${SKIFF_SKIP_CLUSTER:-0}" != "1" ]; then
  phase "cluster (images, cluster, story)" cluster_tests
else
  echo "cluster: SKIPPED (SKIFF_SKIP_CLUSTER=1)"
fi

echo "Phase times:"
for p in "${PHASES[@]}"; do echo "  $p"; done
echo "$SUMMARY"
CLUSTER=$(grep -E '^[0-9]+ passed, [0-9]+ failed' build/cluster-tests.log | tail -1 || true)
if [ -n "$CLUSTER" ]; then echo "cluster: $CLUSTER"; fi
