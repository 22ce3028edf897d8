#!/usr/bin/env bash
# Installs what building and testing osquery-ebpf needs on Debian/Ubuntu, when it is missing:
# clang (compiles the BPF probes), libelf-dev and zlib1g-dev (static archives for libbpf),
# pkg-config, make, iproute2 (network-namespace tests), and any packages named as arguments.
# Needs root for apt-get.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in clang llvm libelf-dev zlib1g-dev pkg-config make gcc iproute2 "$@"; do
  have_pkg "$pkg" || need+=("$pkg")
done

if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi
