#!/usr/bin/env bash
# Installs the browser test's npm packages (tests/browser/package.json: playwright-core, the
# library only) once into a cache outside the repository, exactly as package-lock.json pins
# them, and prints the node_modules directory to put on NODE_PATH. Never downloads a browser:
# the test drives Debian's /usr/bin/chromium.
#   SKIFF_BROWSER_CACHE   the cache (default ~/.cache/skiff/browser)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${SKIFF_BROWSER_CACHE:-$HOME/.cache/skiff/browser}
mkdir -p "$CACHE"
exec 9> "$CACHE/.lock"
flock 9  # one installer at a time
if ! cmp -s "$HERE/package-lock.json" "$CACHE/package-lock.json" ||
  [ ! -f "$CACHE/node_modules/playwright-core/package.json" ]; then
  echo "install.sh: installing $(grep -o '"playwright-core": "[^"]*"' "$HERE/package.json") into $CACHE" >&2
  rm -rf "$CACHE/node_modules" "$CACHE/package-lock.json"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$CACHE/"
  (cd "$CACHE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund \
    --loglevel=error >&2)
fi
echo "$CACHE/node_modules"
