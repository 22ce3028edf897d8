#!/usr/bin/env bash
# Installs what is missing, then runs every check and test. The kernel tests load BPF programs
# and need root (CI runs this as root).
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/install-build-deps.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Plain `cargo test` (not --all-targets) also builds the workload helper, an example target
# the kernel tests run, as a binary.
cargo test -- --test-threads "${TEST_THREADS:-4}"
# The Debian package: built with cargo-deb and checked against osquery's autoload rules.
bash packaging/build-packages.sh
bash packaging/check-package.sh target/debian/osquery-ebpf_*.deb
