#!/usr/bin/env bash
# The kernel matrix: boots each Debian kernel (5.10, 6.1, 6.12, 7.3 by default; SERIES=...
# to choose) under qemu with software emulation and runs the in-guest test
# (tests/kernels/guest.rs) against the real extension binary: load and attach every probe, run
# a workload with known answers, check the rows. Exits non-zero if any kernel fails.
#
# Every kernel boots twice: with hooks = auto, which must pick BPF trampolines there
# (fentry/fexit attach on every x86_64 kernel of the matrix), and with the tracepoint set
# forced; both runs check the same known-answer rows.
#
# Environment: SERIES (kernels), PERF_SERIES (kernels also tested with the perf-buffer
# transport forced; default 5.10), BTF_SERIES (the kernel also tested with --btf-path and a
# BTF file taken from its image; default 6.1), KERNEL_CACHE (see fetch-kernels.sh), EBPF (the extension
# binary; default target/release/osquery-ebpf, built if missing), GUEST_TIMEOUT (seconds per
# kernel, default 900), MATRIX_LOG_DIR (console logs; default target/kernel-matrix).
#
# HOOKBENCH="ARGS" runs the hook-cost benchmark (benches/hookbench.rs) in each guest instead
# of the test, with those arguments, and prints its table: `HOOKBENCH="--rounds 5" SERIES=6.12
# bash tests/kernels/run-matrix.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash packaging/install-build-deps.sh qemu-system-x86 busybox-static cpio xz-utils zstd binutils
if ! qemu-system-x86_64 --version >/dev/null 2>&1; then
  echo "kernel matrix SKIPPED: qemu-system-x86_64 cannot run here" >&2
  exit 0
fi

EBPF=${EBPF:-target/release/osquery-ebpf}
[ -x "$EBPF" ] || cargo build --release --bin osquery-ebpf
cargo build --example guest --example workload
[ -z "${HOOKBENCH:-}" ] || cargo build --release --example hookbench
log_dir=${MATRIX_LOG_DIR:-target/kernel-matrix}
mkdir -p "$log_dir"

kernels=$(bash tests/kernels/fetch-kernels.sh)

# The initramfs: static busybox, the three binaries and the shared libraries they use.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc}
cp "$(command -v busybox || echo /bin/busybox)" "$root/bin/busybox"
cp "$EBPF" "$root/bin/osquery-ebpf"
cp target/debug/examples/workload "$root/bin/workload"
cp target/debug/examples/guest "$root/bin/guest"
[ -z "${HOOKBENCH:-}" ] || cp target/release/examples/hookbench "$root/bin/hookbench"
for bin in "$root"/bin/*; do
  [ "$bin" = "$root/bin/busybox" ] && continue
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' \
    | while read -r lib; do cp --parents -L "$lib" "$root"; done
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
/bin/guest /bin/osquery-ebpf /bin/workload $args
# the guest reports through the debug-exit port; reaching here means it could not
echo "GUEST RESULT: FAIL (no verdict)"
poweroff -f
INIT
chmod +x "$root/init"
[ -z "${HOOKBENCH:-}" ] || echo "$HOOKBENCH" > "$root/hookbench.args"
# A BTF file taken from the image of one kernel (BTF_SERIES, default 6.1), for a run with
# --btf-path: what a user of a kernel without /sys/kernel/btf/vmlinux gets from BTFHub.
btf_series=${BTF_SERIES-6.1}
if [ -n "$btf_series" ]; then
  image=$(awk -v s="$btf_series" '$1 == s { print $2 }' <<<"$kernels")
  # the ELF vmlinux is compressed inside the bzImage: find the xz or zstd stream
  off=$(LC_ALL=C grep -aboP '\xfd\x37\x7a\x58\x5a\x00' "$image" | head -1 | cut -d: -f1)
  if [ -n "$off" ]; then
    tail -c +$((off + 1)) "$image" | xz -dc >"$work/vmlinux" 2>/dev/null || true
  else
    off=$(LC_ALL=C grep -aboP '\x28\xb5\x2f\xfd' "$image" | head -1 | cut -d: -f1)
    tail -c +$((off + 1)) "$image" | zstd -dcq >"$work/vmlinux" 2>/dev/null || true
  fi
  objcopy --dump-section .BTF="$root/vmlinux.btf" "$work/vmlinux" /dev/null
  rm -f "$work/vmlinux"
fi
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.gz"

failed=()
start_all=$(date +%s)
while read -r series image; do
  # every kernel with the ring buffer; PERF_SERIES (default 5.10) also with the perf buffer
  variants="auto tracepoint"
  [[ " ${PERF_SERIES-5.10} " == *" $series "* ]] && variants="$variants perf"
  [ "$series" = "$btf_series" ] && variants="$variants btf"
  [ -z "${HOOKBENCH:-}" ] || variants=hookbench
  for variant in $variants; do
    # auto (the default) must choose trampolines on every kernel of the matrix
    case $variant in
      auto) args="expecthooks=trampoline" ;;
      tracepoint) args="guestargs=--hooks,tracepoint expecthooks=tracepoint" ;;
      perf) args="guestargs=--transport,perf expecthooks=trampoline" ;;
      btf) args="guestargs=--btf-path,/vmlinux.btf expecthooks=trampoline" ;;
      hookbench) args="" ;;
    esac
    log="$log_dir/$series-$variant.log"
    start=$(date +%s)
    for attempt in 1 2; do
      set +e
      timeout "${GUEST_TIMEOUT:-900}" qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1024M \
        -nographic -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -kernel "$image" -initrd "$work/initramfs.gz" \
        -append "console=ttyS0 quiet panic=-1 rdinit=/init $args" </dev/null >"$log" 2>&1
      rc=$?
      set -e
      # A kernel that oopses while booting under TCG, before /init printed anything, says
      # nothing about the probes (seen: int3 text-patching oopses in sched_clock on a loaded
      # host); boot it once more. A failure after /init started is never retried.
      if [ "$attempt" -eq 1 ] && grep -q "Kernel panic" "$log" &&
        ! grep -qE "^(ok|FAIL) |GUEST RESULT" "$log"; then
        echo "kernel $series ($variant): crashed while booting, before /init; booting it again"
        cp "$log" "$log.boot-crash"
        continue
      fi
      break
    done
    took=$(( $(date +%s) - start ))
    if [ "$variant" = hookbench ]; then
      echo "kernel $series: hookbench in ${took}s"
      sed -n '/^hookbench on/,/^events lost/p' "$log" | tr -d '\r'
      grep -q "HOOKBENCH DONE" "$log" || failed+=("$series-hookbench")
      continue
    fi
    # isa-debug-exit: the guest wrote 0 (pass) -> qemu exits 1; 1 (fail) -> 3
    if [ "$rc" -eq 1 ] && grep -q "GUEST RESULT: PASS" "$log"; then
      echo "kernel $series ($variant): PASS in ${took}s"
    else
      echo "kernel $series ($variant): FAIL (qemu status $rc) in ${took}s; console log $log:"
      grep -vE '^\[' "$log" | tail -60
      failed+=("$series-$variant")
    fi
  done
done <<<"$kernels"
echo "kernel matrix: $(( $(date +%s) - start_all ))s, failed: ${failed[*]:-none}"
[ "${#failed[@]}" -eq 0 ]
