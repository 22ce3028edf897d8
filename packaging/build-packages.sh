#!/usr/bin/env bash
# Builds the Debian package (target/debian/osquery-ebpf_*.deb) with cargo-deb and the RPM
# package (target/generate-rpm/osquery-ebpf-*.rpm) with cargo-generate-rpm, from one release
# build, installing what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/install-build-deps.sh
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked --version "^3"
fi
if ! cargo generate-rpm --version >/dev/null 2>&1; then
  cargo install cargo-generate-rpm --locked --version "^0.21"
fi
cargo deb                  # builds target/release/osquery-ebpf, then packages it
# gzip: readable by every rpm (zstd payloads need rpm >= 4.14)
cargo generate-rpm --payload-compress gzip   # packages the same binary
ls -1 target/debian/*.deb target/generate-rpm/*.rpm
