#!/usr/bin/env bash
# Builds every image the local cluster runs, offline, with a Docker daemon started by hand
# for the purpose and stopped afterwards:
#   skiff-operator, skiff-proxy, coolstore-catalog, coolstore-apigateway (docker/build.sh)
#   skiff-pause, skiff-coredns (tests/cluster/images/Dockerfile)
# and writes them with `docker save` to one archive for `ctr images import` (as `kind load`
# does for kind).
#
#   images.sh build OUT.tar
#
# The daemon is Debian's docker.io: dockerd --iptables=false --ip6tables=false
# --ip-masq=false --bridge=none with its own --data-root (cached: SKIFF_DOCKER_CACHE,
# default ~/.cache/skiff/docker/data, so layers and the compiler cache survive between runs),
# --exec-root and socket; builds use --network host, which reaches Debian's packages.
# The base image comes from docker/base-image.sh (debootstrap). On exit, also on failure,
# the daemon and its containerd are stopped and the cgroups it made are removed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA_ROOT="${SKIFF_DOCKER_CACHE:-${HOME:-/root}/.cache/skiff/docker/data}"
DOCKERD=${DOCKERD:-/usr/sbin/dockerd}
# Debian's CLI (20.10) matches Debian's daemon and has BuildKit built in.
if [ -x /usr/bin/docker ]; then export DOCKER=/usr/bin/docker; else export DOCKER=docker; fi
log() { echo "images.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[ "${1:-}" = build ] && [ -n "${2:-}" ] || { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
OUT=$2
[ -x "$DOCKERD" ] || die "no $DOCKERD (apt-get install docker.io)"

mkdir -p "$DATA_ROOT"
exec 9> "$DATA_ROOT.lock"
flock 9 # one daemon per data root
EXEC_ROOT=$(mktemp -d /run/skiff-docker.XXXXXX)
export DOCKER_HOST="unix://$EXEC_ROOT/docker.sock"
CGROUPS_BEFORE=$(ls /sys/fs/cgroup/pids 2> /dev/null || true)
DOCKERD_PID=

stop_daemon() {
  local i ctr_pid
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2> /dev/null; then
    # The daemon's own children (its containerd, by parent pid), waited for below: they
    # write into the exec root until they have exited.
    ctr_pid=$(ps -o pid= --ppid "$DOCKERD_PID" 2> /dev/null | tr '\n' ' ' || true)
    kill -TERM "$DOCKERD_PID" 2> /dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$DOCKERD_PID" 2> /dev/null || break; sleep 0.1; done
    if kill -0 "$DOCKERD_PID" 2> /dev/null; then
      log "dockerd ($DOCKERD_PID) did not stop in 30 s; killing it"
      kill -KILL "$DOCKERD_PID" 2> /dev/null || true
    fi
    # dockerd stops the containerd it started; make sure of it.
    local p
    for p in $ctr_pid; do
      for ((i = 0; i < 100; i++)); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
      kill -KILL "$p" 2> /dev/null || true
    done
  fi
  # Anything still mounted under the exec root (a killed daemon leaves its netns/overlays).
  # (|| true: with set -e and pipefail, a grep finding nothing would end this handler.)
  { grep -F " $EXEC_ROOT" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r |
    while read -r m; do umount -l "$m" 2> /dev/null || true; done
  rm -rf "$EXEC_ROOT"
  # The cgroups the daemon made (docker/, buildkit/), once empty.
  local c h
  for c in $(ls /sys/fs/cgroup/pids 2> /dev/null); do
    [ -d "/sys/fs/cgroup/pids/$c" ] || continue
    grep -qxF "$c" <<< "$CGROUPS_BEFORE" && continue
    for h in /sys/fs/cgroup/*/; do
      [ -d "$h$c" ] && find "$h$c" -depth -type d -exec rmdir {} \; 2> /dev/null || true
    done
  done
}
trap stop_daemon EXIT

t0=$SECONDS
"$DOCKERD" --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
  --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" --pidfile "$EXEC_ROOT/dockerd.pid" \
  -H "$DOCKER_HOST" --log-level warn < /dev/null > "$EXEC_ROOT/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for ((i = 0; i < 600; i++)); do
  kill -0 "$DOCKERD_PID" 2> /dev/null || { cat "$EXEC_ROOT/dockerd.log" >&2; die "dockerd exited"; }
  "$DOCKER" version > /dev/null 2>&1 && break
  sleep 0.1
done
"$DOCKER" version > /dev/null 2>&1 || { tail -20 "$EXEC_ROOT/dockerd.log" >&2; die "dockerd not up in 60 s"; }
log "dockerd $("$DOCKER" version -f '{{.Server.Version}}') up (pid $DOCKERD_PID, data root $DATA_ROOT)"

"$ROOT/docker/base-image.sh"
SKIFF_DOCKER_LOG="${SKIFF_DOCKER_LOG:-$EXEC_ROOT/build.log}" "$ROOT/docker/build.sh" --network host || {
  [ -n "${SKIFF_DOCKER_LOG:-}" ] || tail -60 "$EXEC_ROOT/build.log" >&2
  die "building skiff's images failed"
}

# The cluster's own images.
COREDNS_BIN="$("$HERE/env.sh" bin-dir)/coredns"
[ -x "$COREDNS_BIN" ] || die "no $COREDNS_BIN (run tests/cluster/env.sh build)"
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"; stop_daemon' EXIT
cp "$HERE/images/Dockerfile" "$HERE/images/pause.c" "$COREDNS_BIN" "$CTX/"
for target in pause coredns; do
  DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress=plain --target "$target" \
    -t "skiff-$target:latest" "$CTX" >> "$EXEC_ROOT/build.log" 2>&1 || {
    tail -30 "$EXEC_ROOT/build.log" >&2
    die "building skiff-$target failed"
  }
done

IMAGES=(skiff-operator:latest skiff-proxy:latest coolstore-catalog:latest
  coolstore-apigateway:latest skiff-pause:latest skiff-coredns:latest)
"$DOCKER" save -o "$OUT.tmp" "${IMAGES[@]}"
mv "$OUT.tmp" "$OUT"
# The data root is a cache kept between runs: drop the images that new builds untagged and
# the least recently used build cache beyond 4 GB (the compiler cache mount is recent).
"$DOCKER" image prune -f > /dev/null
DOCKER_BUILDKIT=1 "$DOCKER" builder prune -f --keep-storage 4GB > /dev/null
for image in "${IMAGES[@]}"; do
  "$DOCKER" image inspect -f '{{.Size}}' "$image" |
    awk -v n="$image" '{ printf "images.sh:   %-28s %5.1f MB\n", n, $1 / 1e6 }' >&2
done
log "images built and saved to $OUT ($(du -h "$OUT" | cut -f1)) in $((SECONDS - t0)) s"
