#!/usr/bin/env bash
# Installs, with apt-get, exactly the Debian packages skiff needs that are missing.
# Idempotent: when everything is present it changes nothing and prints one line.
# --with-test-tools adds what only the tests need (a real Prometheus, a JRE for Zipkin).
set -euo pipefail

PACKAGES=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config python3 clang clang-format clang-tidy
  # libraries
  libcpprest-dev nlohmann-json3-dev libgrpc++-dev libprotobuf-dev protobuf-compiler
  protobuf-compiler-grpc libspdlog-dev catch2 libre2-dev libyaml-cpp-dev libboost-dev libssl-dev
  libgoogle-perftools-dev
  # test tools
  wrk
)
if [ "${1:-}" = "--with-test-tools" ]; then
  PACKAGES+=(prometheus openjdk-17-jre-headless curl)
fi

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
