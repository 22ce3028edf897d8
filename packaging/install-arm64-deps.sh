#!/usr/bin/env bash
# Installs what cross-building osquery-ebpf for arm64 (aarch64) and testing it under qemu
# needs, when it is missing: the rustup target, Debian's C cross compiler, the arm64 static
# libelf and zlib (multiarch), qemu-system-arm (the arm64 kernel matrix) and qemu-user (runs
# the arm64 binary of a package check). Needs root for dpkg and apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "adding the arm64 architecture to dpkg (for libelf-dev:arm64 and zlib1g-dev:arm64)"
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
fi
bash packaging/install-build-deps.sh gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
  libelf-dev:arm64 zlib1g-dev:arm64 qemu-system-arm qemu-user
# Exit status 3: the Rust standard library for arm64 cannot be had here (rustup fetches it
# from the Rust project's servers); callers then skip arm64, saying so.
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  if ! rustup target add aarch64-unknown-linux-gnu; then
    echo "the rustup target aarch64-unknown-linux-gnu cannot be installed here" >&2
    exit 3
  fi
fi
