#!/usr/bin/env bash
# The kernel matrix: boots each Debian kernel (5.10, 6.1, 6.12, 7.3 by default; SERIES=...
# to choose) of each architecture (x86_64 and arm64 by default; ARCHES="amd64 arm64") under
# qemu with software emulation and runs the in-guest test (tests/kernels/guest.rs) against the
# real extension binary: load and attach every probe, run a workload with known answers,
# check the rows. One summary line for all; exits non-zero if any kernel fails.
#
# Every kernel boots twice: with hooks = auto, which must pick BPF trampolines where they
# work (every x86_64 kernel of the matrix; arm64 from 6.12: 5.10 and 6.1 have no ftrace direct
# calls, so auto must pick tracepoints there), and with the tracepoint set forced; both runs
# check the same known-answer rows.
#
# Environment: SERIES (kernels), ARCHES, PERF_SERIES (x86_64 kernels also tested with the
# perf-buffer transport forced; default 5.10), BTF_SERIES (the kernel also tested with
# --btf-path and a BTF file taken from its image; default 6.1), KERNEL_CACHE (see
# fetch-kernels.sh), EBPF / EBPF_ARM64 (the extension binaries; default the release builds,
# built if missing), GUEST_TIMEOUT (seconds per kernel, default 900), MATRIX_LOG_DIR (console
# logs; default target/kernel-matrix), QEMU_ARGS (extra qemu arguments, e.g. "-icount
# shift=0,sleep=off" for a virtual clock that counts instructions).
#
# HOOKBENCH="ARGS" runs the hook-cost benchmark (benches/hookbench.rs) in each guest instead
# of the test, with those arguments, and prints its table: `HOOKBENCH="--rounds 5"
# SERIES=6.12 ARCHES=amd64 bash tests/kernels/run-matrix.sh`. HOOKBENCH_BASELINE=PATH puts
# another build of the extension in the guest as /bin/osquery-ebpf-baseline, for hookbench's
# `--baseline /bin/osquery-ebpf-baseline` (two builds side by side in the same rounds).
set -euo pipefail
cd "$(dirname "$0")/../.."

log_dir=${MATRIX_LOG_DIR:-target/kernel-matrix}
mkdir -p "$log_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
passed=()
skipped=()
start_all=$(date +%s)

# The hook set hooks = auto must choose on kernel $2 of architecture $1.
auto_hooks() {
  case "$1-$2" in
    arm64-5.10 | arm64-6.1) echo tracepoint ;;
    *) echo trampoline ;;
  esac
}

# The initramfs for architecture $1 in $work/$1: static busybox, the binaries and the shared
# libraries they use; /init runs the guest test (or the hook benchmark).
build_initramfs() {
  local arch=$1 root=$work/$1/root triple target_dir busybox
  mkdir -p "$root"/{bin,lib,dev,proc,sys,tmp,run,etc}
  if [ "$arch" = amd64 ]; then
    triple=x86_64-unknown-linux-gnu target_dir=target
    EBPF=${EBPF:-target/release/osquery-ebpf}
    [ -x "$EBPF" ] || cargo build --release --bin osquery-ebpf
    cp "$EBPF" "$root/bin/osquery-ebpf"
    busybox=$(command -v busybox || echo /bin/busybox)
    cargo build --example guest --example workload
    [ -z "${HOOKBENCH:-}" ] || cargo build --release --example hookbench
  else
    triple=aarch64-unknown-linux-gnu target_dir=target/aarch64-unknown-linux-gnu
    EBPF_ARM64=${EBPF_ARM64:-target/aarch64-unknown-linux-gnu/release/osquery-ebpf}
    [ -x "$EBPF_ARM64" ] || cargo build --release --target "$triple" --bin osquery-ebpf
    cp "$EBPF_ARM64" "$root/bin/osquery-ebpf"
    busybox=$(ARCH=arm64 SERIES= EXTRA_PACKAGES=busybox-static \
      bash tests/kernels/fetch-kernels.sh | awk '$1 == "package" { print $3 }')/usr/bin/busybox
    cargo build --target "$triple" --example guest --example workload
    [ -z "${HOOKBENCH:-}" ] || cargo build --release --target "$triple" --example hookbench
  fi
  cp "$busybox" "$root/bin/busybox"
  cp "$target_dir/debug/examples/workload" "$root/bin/workload"
  cp "$target_dir/debug/examples/guest" "$root/bin/guest"
  [ -z "${HOOKBENCH:-}" ] || cp "$target_dir/release/examples/hookbench" "$root/bin/hookbench"
  [ -z "${HOOKBENCH_BASELINE:-}" ] || cp "$HOOKBENCH_BASELINE" "$root/bin/osquery-ebpf-baseline"
  for bin in "$root"/bin/*; do
    [ "$bin" = "$root/bin/busybox" ] && continue
    if [ "$arch" = amd64 ]; then
      ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' \
        | while read -r lib; do cp --parents -L "$lib" "$root"; done
    else
      # no ldd for a foreign binary: its NEEDED entries and the loader, from the cross libc
      for lib in $(aarch64-linux-gnu-readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p') \
        ld-linux-aarch64.so.1; do
        cp -L "/usr/aarch64-linux-gnu/lib/$lib" "$root/lib/"
      done
    fi
  done
  cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ip link set lo up
# extra extension arguments from the kernel command line: guestargs=a,b,c
args=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^guestargs=//p' | tr ',' ' ')
# the hook set the run must end up with: expecthooks=trampoline|tracepoint
export EXPECT_HOOKS=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^expecthooks=//p')
if [ -x /bin/hookbench ]; then
  /bin/hookbench --ext /bin/osquery-ebpf $(cat /hookbench.args)
  echo "HOOKBENCH DONE"
  poweroff -f
fi
# the guest prints its verdict (and on x86_64 hands it to qemu's isa-debug-exit port)
/bin/guest /bin/osquery-ebpf /bin/workload $args
echo "guest exited with status $?"
poweroff -f
INIT
  chmod +x "$root/init"
  [ -z "${HOOKBENCH:-}" ] || echo "$HOOKBENCH" > "$root/hookbench.args"
}

# A BTF file taken from the image of kernel $2 (BTF_SERIES), for a run with --btf-path: what
# a user of a kernel without /sys/kernel/btf/vmlinux gets from BTFHub.
extract_btf() {
  local arch=$1 image=$2 out=$work/$1/root/vmlinux.btf off
  if [ "$arch" = arm64 ]; then
    python3 vmlinux/extract-btf.py "$image" "$out" >/dev/null
    return
  fi
  # the ELF vmlinux is compressed inside the bzImage: find the xz or zstd stream
  off=$(LC_ALL=C grep -aboP '\xfd\x37\x7a\x58\x5a\x00' "$image" | head -1 | cut -d: -f1)
  if [ -n "$off" ]; then
    tail -c +$((off + 1)) "$image" | xz -dc >"$work/vmlinux" 2>/dev/null || true
  else
    off=$(LC_ALL=C grep -aboP '\x28\xb5\x2f\xfd' "$image" | head -1 | cut -d: -f1)
    tail -c +$((off + 1)) "$image" | zstd -dcq >"$work/vmlinux" 2>/dev/null || true
  fi
  objcopy --dump-section .BTF="$out" "$work/vmlinux" /dev/null
  rm -f "$work/vmlinux"
}

# Boot kernel $3 ($2 its series) of architecture $1 with kernel command-line extras $5 into
# log $4; sets rc (qemu's status).
boot() {
  local arch=$1 image=$3 log=$4 extra=$5 initrd=$work/$1/initramfs.gz
  set +e
  if [ "$arch" = amd64 ]; then
    # shellcheck disable=SC2086
    timeout "${GUEST_TIMEOUT:-900}" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024M ${QEMU_ARGS:-} \
      -nographic -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
      -kernel "$image" -initrd "$initrd" \
      -append "console=ttyS0 quiet panic=-1 rdinit=/init $extra" </dev/null >"$log" 2>&1
  else
    # pauth-impdef: emulating the architected pointer-authentication cipher made loading the
    # probes 5x slower
    # shellcheck disable=SC2086
    timeout "${GUEST_TIMEOUT:-900}" qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on ${QEMU_ARGS:-} \
      -smp 2 -m 1024M -nographic -no-reboot -kernel "$image" -initrd "$initrd" \
      -append "console=ttyAMA0 quiet panic=-1 rdinit=/init $extra" </dev/null >"$log" 2>&1
  fi
  rc=$?
  set -e
}

for arch in ${ARCHES:-amd64 arm64}; do
  if [ "$arch" = amd64 ]; then
    bash packaging/install-build-deps.sh qemu-system-x86 busybox-static cpio xz-utils zstd binutils
    qemu=qemu-system-x86_64
  else
    rc=0
    bash packaging/install-arm64-deps.sh || rc=$?
    if [ "$rc" -eq 3 ]; then
      echo "kernel matrix (arm64) SKIPPED: no arm64 Rust standard library here (see above)" >&2
      skipped+=(arm64)
      continue
    fi
    [ "$rc" -eq 0 ] || exit "$rc"
    bash packaging/install-build-deps.sh cpio
    qemu=qemu-system-aarch64
  fi
  if ! $qemu --version >/dev/null 2>&1; then
    echo "kernel matrix ($arch) SKIPPED: $qemu cannot run here" >&2
    skipped+=("$arch")
    continue
  fi
  kernels=$(ARCH=$arch bash tests/kernels/fetch-kernels.sh)
  build_initramfs "$arch"
  btf_series=${BTF_SERIES-6.1}
  if [ -n "$btf_series" ]; then
    extract_btf "$arch" "$(awk -v s="$btf_series" '$1 == s { print $2 }' <<<"$kernels")"
  fi
  (cd "$work/$arch/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/$arch/initramfs.gz"
  label=""
  [ "$arch" = amd64 ] || label="$arch "

  while read -r series image; do
    auto=$(auto_hooks "$arch" "$series")
    variants="auto tracepoint"
    if [ "$arch" = amd64 ] && [[ " ${PERF_SERIES-5.10} " == *" $series "* ]]; then
      variants="$variants perf"
    fi
    [ "$series" = "$btf_series" ] && variants="$variants btf"
    [ -z "${HOOKBENCH:-}" ] || variants=hookbench
    for variant in $variants; do
      case $variant in
        auto) extra="expecthooks=$auto" ;;
        tracepoint) extra="guestargs=--hooks,tracepoint expecthooks=tracepoint" ;;
        perf) extra="guestargs=--transport,perf expecthooks=$auto" ;;
        btf) extra="guestargs=--btf-path,/vmlinux.btf expecthooks=$auto" ;;
        hookbench) extra="" ;;
      esac
      name="${label:+$arch-}$series-$variant"
      log="$log_dir/$name.log"
      start=$(date +%s)
      for attempt in 1 2; do
        boot "$arch" "$series" "$image" "$log" "$extra"
        # A kernel that oopses while booting under TCG, before /init printed anything, says
        # nothing about the probes (seen: int3 text-patching oopses in sched_clock on a
        # loaded host); boot it once more. A failure after /init started is never retried.
        if [ "$attempt" -eq 1 ] && grep -q "Kernel panic" "$log" &&
          ! grep -qE "^(ok|FAIL) |GUEST RESULT|^guest: " "$log"; then
          echo "kernel $label$series ($variant): crashed while booting, before /init; booting it again"
          cp "$log" "$log.boot-crash"
          continue
        fi
        break
      done
      took=$(($(date +%s) - start))
      if [ "$variant" = hookbench ]; then
        echo "kernel $label$series: hookbench in ${took}s"
        sed -n '/^hookbench on/,/^events lost/p' "$log" | tr -d '\r'
        if grep -q "HOOKBENCH DONE" "$log"; then passed+=("$name"); else failed+=("$name"); fi
        continue
      fi
      # x86_64: isa-debug-exit turns the guest's 0 (pass) into qemu status 1; arm64 has no
      # such device and the verdict line alone tells
      verdict_ok=false
      if grep -q "GUEST RESULT: PASS" "$log" && ! grep -q "GUEST RESULT: FAIL" "$log"; then
        { [ "$arch" != amd64 ] || [ "$rc" -eq 1 ]; } && verdict_ok=true
      fi
      if $verdict_ok; then
        echo "kernel $label$series ($variant): PASS in ${took}s"
        passed+=("$name")
      else
        echo "kernel $label$series ($variant): FAIL (qemu status $rc) in ${took}s; console log $log:"
        grep -vE '^\[' "$log" | tail -60
        failed+=("$name")
      fi
    done
  done <<<"$kernels"
done
echo "kernel matrix: $(($(date +%s) - start_all))s, passed: ${passed[*]:-none}; failed: ${failed[*]:-none}; skipped: ${skipped[*]:-none}"
[ "${#failed[@]}" -eq 0 ]
