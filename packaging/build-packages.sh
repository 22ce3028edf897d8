#!/usr/bin/env bash
# Builds the Debian packages (.deb, with cargo-deb) and the RPM packages (.rpm, with
# cargo-generate-rpm) for x86_64 and arm64, one release build per architecture, installing
# what is missing first:
#   target/debian/osquery-ebpf_<version>-1_amd64.deb
#   target/generate-rpm/osquery-ebpf-<version>-1.x86_64.rpm
#   target/aarch64-unknown-linux-gnu/debian/osquery-ebpf_<version>-1_arm64.deb
#   target/aarch64-unknown-linux-gnu/generate-rpm/osquery-ebpf-<version>-1.aarch64.rpm
# ARCHES="amd64" (or "arm64") builds one architecture only.
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/install-build-deps.sh
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked --version "^3"
fi
if ! cargo generate-rpm --version >/dev/null 2>&1; then
  cargo install cargo-generate-rpm --locked --version "^0.21"
fi
for arch in ${ARCHES:-amd64 arm64}; do
  if [ "$arch" = amd64 ]; then
    cargo deb                  # builds target/release/osquery-ebpf, then packages it
    # gzip: readable by every rpm (zstd payloads need rpm >= 4.14)
    cargo generate-rpm --payload-compress gzip   # packages the same binary
    ls -1 target/debian/*.deb target/generate-rpm/*.rpm
  else
    rc=0
    bash packaging/install-arm64-deps.sh || rc=$?
    if [ "$rc" -eq 3 ]; then
      echo "arm64 packages SKIPPED: no arm64 Rust standard library here (see above)" >&2
      continue
    fi
    [ "$rc" -eq 0 ] || exit "$rc"
    triple=aarch64-unknown-linux-gnu
    # cargo-deb and cargo-generate-rpm take target/release/... from target/$triple/release
    cargo deb --target "$triple"
    cargo generate-rpm --target "$triple" --payload-compress gzip
    ls -1 "target/$triple"/debian/*.deb "target/$triple"/generate-rpm/*.rpm
  fi
done
