#!/usr/bin/env bash
# Burst check: N fork+execs and C TCP connect/accept pairs on loopback while the release
# binary runs in `watch --json` mode; reports rows expected vs found and every loss counter.
# Needs root. Usage: benches/burst.sh [N_EXECS=10000] [N_CONNECTS=10000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
C=${2:-10000}

bash packaging/install-build-deps.sh
cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

OSQUERY_EBPF_CONFIG=/dev/null OSQUERY_EBPF_EVENTS_MAX=200000 \
  target/release/osquery-ebpf watch --json --stats-every 0 >"$work/rows" 2>"$work/log" &
watcher=$!
for _ in $(seq 100); do grep -q "process context seeded" "$work/log" && break; sleep 0.1; done

marker="burst$$"
start=$(date +%s%N)
for i in $(seq "$N"); do /bin/true "$marker-$i"; done
end=$(date +%s%N)
echo "exec burst: $N fork+execs in $(( (end - start) / 1000000 )) ms"

port=$(python3 - "$C" <<'PY'
import socket, sys, time
n = int(sys.argv[1])
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(128)
port = l.getsockname()[1]
t = time.time()
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port)); a, _ = l.accept(); c.close(); a.close()
print(port)
print(f"connect storm: {n} connect+accept in {time.time() - t:.2f} s", file=sys.stderr)
PY
)

sleep 2
kill -INT "$watcher"
wait "$watcher" || true

python3 - "$work/rows" "$work/log" "$marker" "$N" "$port" "$C" <<'PY'
import json, sys
rows_path, log_path, marker, n, port, c = sys.argv[1:]
n, c = int(n), int(c)
execs, exits, forks, connects, accepts = set(), set(), set(), 0, 0
for line in open(rows_path):
    r = json.loads(line)
    if r["table"].startswith("bpf_process"):
        if r["syscall"] == "execve" and f"{marker}-" in r["cmdline"] and r["parent"] != "0" and r["path"].endswith("/true"):
            execs.add(r["pid"])
        elif r["syscall"] == "exit_group" and f"{marker}-" in r["cmdline"]:
            exits.add(r["pid"])
        elif r["syscall"] in ("clone", "clone3", "fork", "vfork"):
            forks.add(r["exit_code"])
    else:
        if r["syscall"] == "connect" and r["remote_port"] == port and r["exit_code"] == "0" and r["local_port"] != "0":
            connects += 1
        elif r["syscall"] in ("accept", "accept4") and r["local_port"] == port and r["remote_port"] != "0":
            accepts += 1
stats = [l for l in open(log_path) if l.startswith("stats:")][-1].split()[1:]
stats = dict(kv.split("=") for kv in stats)
print(f"exec rows (complete): expected {n}, found {len(execs)}")
print(f"exit rows:            expected {n}, found {len(exits & execs)}")
print(f"fork rows:            expected {n}, found {len(execs & forks)}")
print(f"connect rows:         expected {c}, found {connects}")
print(f"accept rows:          expected {c}, found {accepts}")
loss = {k: v for k, v in stats.items() if "dropped" in k or k in ("decode_errors", "kernel_scratch_missing", "kernel_entry_map_full")}
print("loss counters:", " ".join(f"{k}={v}" for k, v in loss.items()))
PY
