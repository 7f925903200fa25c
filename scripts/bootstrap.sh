#!/usr/bin/env bash
# Installs, with apt-get, exactly the Debian packages skiff needs that are missing.
# Idempotent: when everything is present it changes nothing and prints one line.
# --with-observability adds what the demo's dashboards and traces need (a real Prometheus, a
# JRE for the Zipkin server); --with-test-tools adds those and what only the tests need (a
# headless Chromium for the browser test, Node.js and npm to drive it with Playwright,
# iptables and iproute2 for the capture tests, openssl, testssl.sh and bsdextrautils for the
# TLS tests, and for the local cluster: Docker's engine to build the images offline,
# debootstrap for their base, containerd, runc and the CNI plugins for the node, conntrack
# for kube-proxy).
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config python3 clang clang-format clang-tidy
  # clang's sanitizer runtimes, which the libFuzzer build (tests/fuzz) links
  libclang-rt-14-dev
  # libraries
  libcpprest-dev nlohmann-json3-dev libgrpc++-dev libprotobuf-dev protobuf-compiler
  protobuf-compiler-grpc libspdlog-dev catch2 libre2-dev libyaml-cpp-dev libboost-dev libssl-dev
  libgoogle-perftools-dev libnghttp2-dev
  # test tools
  wrk
)
OBSERVABILITY=(prometheus openjdk-17-jre-headless curl)
# Transparent capture's tests (iptables rules in network namespaces) and the TLS tests.
CAPTURE_TLS=(iptables iproute2 openssl testssl.sh bsdextrautils nghttp2-client)
# The local cluster (tests/cluster/): images built offline, containerd, runc, CNI.
CLUSTER=(docker.io containerd runc containernetworking-plugins debootstrap conntrack)
case "${1:-}" in
  "") ;;
  --with-observability) PACKAGES+=("${OBSERVABILITY[@]}") ;;
  --with-test-tools)
    PACKAGES+=("${OBSERVABILITY[@]}" "${CAPTURE_TLS[@]}" "${CLUSTER[@]}" chromium)
    # Node.js and npm run Playwright for the browser test; a Node.js installed some other
    # way (NodeSource's nodejs bundles npm) is used as it is.
    command -v node > /dev/null || PACKAGES+=(nodejs)
    command -v npm > /dev/null || PACKAGES+=(npm)
    ;;
  *)
    echo "usage: scripts/bootstrap.sh [--with-observability | --with-test-tools]" >&2
    exit 2
    ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "bootstrap: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
