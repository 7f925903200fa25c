#!/usr/bin/env bash
# Formats (or with --check, checks) every tracked C++ file with the repo's .clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -- '*.cc' '*.h')
if [ "${1:-}" = "--check" ]; then
  if ! clang-format --dry-run --Werror "${files[@]}"; then
    echo "format: files above are not formatted; run scripts/format.sh" >&2
    exit 1
  fi
  echo "format: ${#files[@]} files ok"
else
  clang-format -i "${files[@]}"
fi
