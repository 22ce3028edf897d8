#!/usr/bin/env bash
# Installs what is missing, builds the release binary, and runs it (as root) with the given
# arguments; without arguments it streams rows live: `osquery-ebpf watch`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/install-build-deps.sh
cargo build --release
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ "$#" -eq 0 ]; then set -- watch; fi
exec $SUDO target/release/osquery-ebpf "$@"
