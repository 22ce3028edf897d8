#!/usr/bin/env bash
# Installs what building and testing osquery-ebpf needs on Debian/Ubuntu, when it is missing:
# clang (compiles the BPF probes), libelf-dev and zlib1g-dev (static archives for libbpf),
# pkg-config, make, iproute2 (network-namespace tests), with WITH_TEST_TOOLS=1 osquery's Python
# client for the tests (PyPI), and any packages named as arguments.
# Needs root for apt-get.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in clang llvm libelf-dev zlib1g-dev pkg-config make gcc iproute2 "$@"; do
  have_pkg "$pkg" || need+=("$pkg")
done

if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# osquery's own Python client (PyPI package osquery, with thrift), a second client in the tests
# (WITH_TEST_TOOLS=1, as packaging/test.sh sets it)
if [ "${WITH_TEST_TOOLS:-0}" = 1 ] && ! python3 -c "import osquery.extensions" >/dev/null 2>&1; then
  echo "installing: the osquery Python package (PyPI)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null
  fi
  pip=(python3 -m pip install --quiet --disable-pip-version-check osquery)
  # Debian's own python3 refuses installs outside a venv unless told otherwise
  "${pip[@]}" 2>/dev/null || "${pip[@]}" --break-system-packages
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi
