#!/usr/bin/env bash
# Installs what is missing, then runs every check and test. The kernel tests load BPF programs
# and need root (CI runs this as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# the build's packages, and for tests/runtimes.rs real container runtimes (they start their
# own daemons in private directories) and the static busybox their image is made of
WITH_TEST_TOOLS=1 bash packaging/install-build-deps.sh docker.io podman runc containerd busybox-static
cargo fmt --check
cargo clippy --all-targets -- -D warnings

# Plain `cargo test` (not --all-targets) also builds the workload helper, an example target
# the kernel tests run, as a binary. --no-fail-fast: every failing test binary is reported.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --no-fail-fast -- --test-threads "${TEST_THREADS:-4}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The packages: .deb (cargo-deb) and .rpm (cargo-generate-rpm), each checked against
# osquery's autoload rules.
if [ "$status" -eq 0 ]; then
  bash packaging/build-packages.sh
  pkgs=(target/debian/osquery-ebpf_*_amd64.deb target/generate-rpm/osquery-ebpf-*.x86_64.rpm)
  # the arm64 ones, unless build-packages.sh said it skipped them
  if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    pkgs+=(target/aarch64-unknown-linux-gnu/debian/osquery-ebpf_*_arm64.deb
      target/aarch64-unknown-linux-gnu/generate-rpm/osquery-ebpf-*.aarch64.rpm)
  fi
  for pkg in "${pkgs[@]}"; do
    bash packaging/check-package.sh "$pkg"
  done
  # The kernel matrix: the packaged (release) binaries on Debian's x86_64 and arm64 kernels
  # 5.10, 6.1, 6.12 and 7.3 under qemu. KERNEL_MATRIX=0 skips it (e.g. for a quick local run).
  if [ "${KERNEL_MATRIX:-1}" != 0 ]; then
    EBPF=target/release/osquery-ebpf \
      EBPF_ARM64=target/aarch64-unknown-linux-gnu/release/osquery-ebpf \
      bash tests/kernels/run-matrix.sh || status=1
  fi
fi

# One closing line for the whole run: every cargo test binary's counts added up.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
