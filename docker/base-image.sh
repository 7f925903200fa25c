#!/usr/bin/env bash
# The Debian bookworm base image the Dockerfiles start from, made offline from Debian's
# packages (no container registry): `debootstrap --variant=minbase bookworm`, trimmed as
# Debian's own "slim" images are (no docs, man pages or locales; dpkg told to keep it so),
# then `docker import`ed and tagged with the names the Dockerfiles use, debian:bookworm
# and debian:bookworm-slim (the same minimal root file system under both names).
#
#   docker/base-image.sh          (the daemon: DOCKER_HOST, as for the docker CLI)
#
# The root file system is cached as a tarball (SKIFF_IMAGE_CACHE, default
# ~/.cache/skiff/images); an image already present is left alone. Needs root (debootstrap).
# Environment: DOCKER (the docker CLI, default: docker), SKIFF_DEBIAN_MIRROR.
set -euo pipefail
DOCKER=${DOCKER:-docker}
CACHE=${SKIFF_IMAGE_CACHE:-${HOME:-/root}/.cache/skiff/images}
MIRROR=${SKIFF_DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARBALL="$CACHE/debian-bookworm-minbase.tar"
log() { echo "base-image.sh: $*" >&2; }

if "$DOCKER" image inspect debian:bookworm > /dev/null 2>&1 &&
  "$DOCKER" image inspect debian:bookworm-slim > /dev/null 2>&1; then
  log "debian:bookworm and debian:bookworm-slim present"
  exit 0
fi

mkdir -p "$CACHE"
exec 9> "$CACHE/.lock"
flock 9
if [ ! -s "$TARBALL" ]; then
  command -v debootstrap > /dev/null || { log "needs debootstrap (apt-get install debootstrap)"; exit 1; }
  [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
  ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$ROOTFS"' EXIT
  t0=$SECONDS
  log "debootstrap --variant=minbase bookworm from $MIRROR (1-3 min) ..."
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 || {
    tail -20 "$CACHE/debootstrap.log" >&2
    log "debootstrap failed (log: $CACHE/debootstrap.log)"
    exit 1
  }
  # As Debian's slim images: keep documentation and translations out, now and later.
  cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/skiff-slim" << 'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  # apt in an image: no package cache left behind by `apt-get install`.
  cat > "$ROOTFS/etc/apt/apt.conf.d/skiff-clean" << 'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Install-Recommends "false";
Acquire::Languages "none";
EOF
  find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian/*
  find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
    -exec rm -rf {} +
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/* "$ROOTFS"/tmp/* "$ROOTFS"/root/.bash_history
  : > "$ROOTFS/etc/hostname"
  : > "$ROOTFS/etc/resolv.conf"
  tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$ROOTFS"
  trap - EXIT
  log "root file system cached in $TARBALL ($(du -h "$TARBALL" | cut -f1), $((SECONDS - t0)) s)"
fi
"$DOCKER" import --change 'CMD ["bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --message "debootstrap --variant=minbase bookworm (skiff docker/base-image.sh)" \
  "$TARBALL" debian:bookworm > /dev/null
"$DOCKER" tag debian:bookworm debian:bookworm-slim
log "imported debian:bookworm and debian:bookworm-slim" \
  "($("$DOCKER" image inspect -f '{{.Size}}' debian:bookworm | awk '{printf "%.0f MB", $1/1e6}'))"
