#!/usr/bin/env bash
# Runs every test from scratch on a fresh Debian machine: installs what is missing, checks
# formatting, builds the release and the ASan+UBSan configurations, runs the sanitizer
# tests and then all tests on the release build. Ends with CTest's summary line.
#
#   scripts/test.sh            everything
#   SKIFF_SKIP_ASAN=1 ...      skip the sanitizer build (faster local iteration)
#   SKIFF_SKIP_FUZZ=1 ...      skip the bounded libFuzzer run (SKIFF_FUZZ_SECONDS, default 60)
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
  phase "tests (asan+ubsan)" env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan -j "$JOBS" --timeout 600 --label-exclude bench
fi

if [ "${SKIFF_SKIP_FUZZ:-0}" != "1" ]; then
  phase "fuzz http parser (${SKIFF_FUZZ_SECONDS:-60}s)" \
    tests/fuzz/run_fuzz.sh build/fuzz "${SKIFF_FUZZ_SECONDS:-60}"
fi

echo "Phase times:"
for p in "${PHASES[@]}"; do echo "  $p"; done
echo "==> tests (release)"
ctest --test-dir build/release -j "$JOBS" --timeout 600
