#!/usr/bin/env bash
# Builds the Debian package (target/debian/osquery-ebpf_*.deb) with cargo-deb, installing
# what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/install-build-deps.sh
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked --version "^3"
fi
cargo deb
ls -1 target/debian/*.deb
