#!/bin/sh
# runtime-packages.sh BINARY... -> the Debian packages that own the shared libraries the
# binaries load (one per line), less those every Debian image has (libc6, libgcc-s1,
# libstdc++6, zlib1g). Used by docker/Dockerfile's build stage, so a runtime image installs
# exactly what its binaries need, nothing more and nothing missing.
set -eu
for bin in "$@"; do
  ldd "$bin" | awk '/=> \// { print $3 }'
done | sort -u | while read -r lib; do
  real=$(readlink -f "$lib")
  for path in "$lib" "/usr$lib" "$real" "${real#/usr}"; do
    if owner=$(dpkg -S "$path" 2> /dev/null); then
      echo "${owner%%:*}"
      continue 2
    fi
  done
  echo "runtime-packages.sh: no package owns $lib" >&2
  exit 1
done | sed 's/:amd64$//; s/:arm64$//' | sort -u | grep -vxE 'libc6|libgcc-s1|libstdc\+\+6|zlib1g' || true
