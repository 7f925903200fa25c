#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in BUILD_DIR and runs
# http_parser_fuzz for SECONDS on a scratch copy of the checked-in corpus. Exits non-zero
# when the fuzzer finds a crash, a sanitizer report or a failed property check; the
# reproducer is left in BUILD_DIR/fuzz-artifacts/.
#
#   tests/fuzz/run_fuzz.sh build/fuzz 60
#   JOBS=1 tests/fuzz/run_fuzz.sh build/fuzz 600     # build parallelism (default: nproc)
#
# Reproduce a finding:  BUILD_DIR/tests/fuzz/http_parser_fuzz BUILD_DIR/fuzz-artifacts/crash-...
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD_DIR=$1
SECONDS_TO_RUN=$2
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
JOBS=${JOBS:-$(nproc)}
CXX_COMPILER=${SKIFF_FUZZ_CXX:-$(command -v clang++ || command -v clang++-14)}
C_COMPILER=${SKIFF_FUZZ_CC:-$(command -v clang || command -v clang-14)}

mkdir -p "$BUILD_DIR"
echo "==> configure $BUILD_DIR ($CXX_COMPILER)"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$C_COMPILER" -DCMAKE_CXX_COMPILER="$CXX_COMPILER" \
  -DSKIFF_FUZZ=ON -DSKIFF_BUILD_TESTS=OFF -DSKIFF_BUILD_BENCH=OFF \
  > "$BUILD_DIR/configure.log" 2>&1 || {
  cat "$BUILD_DIR/configure.log"
  exit 1
}
echo "==> build http_parser_fuzz"
cmake --build "$BUILD_DIR" -j "$JOBS" --target http_parser_fuzz

# Run on a copy: libFuzzer adds new inputs to its first corpus directory.
WORK="$BUILD_DIR/fuzz-corpus/http_parser"
ARTIFACTS="$BUILD_DIR/fuzz-artifacts/"
rm -rf "$WORK"
mkdir -p "$WORK" "$ARTIFACTS"
cp "$ROOT"/tests/fuzz/corpus/http_parser/* "$WORK"/

echo "==> fuzz for ${SECONDS_TO_RUN}s"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
"$BUILD_DIR/tests/fuzz/http_parser_fuzz" "$WORK" \
  -max_total_time="$SECONDS_TO_RUN" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$ARTIFACTS" || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz: http_parser_fuzz failed (exit $status); reproducer in $ARTIFACTS" >&2
  exit "$status"
fi
echo "fuzz: http_parser_fuzz ran ${SECONDS_TO_RUN}s without findings"
