//! What each hook set costs the rest of the machine, side by side in one run: a tight loop of
//! an unrelated system call (getppid), io_uring requests that are not socket calls (NOPs:
//! what the io_uring programs cost a program that uses io_uring for its I/O), an exec storm
//! and a connect storm, measured with
//! nothing attached, with the extension on each hook set, and (where bpftrace exists) with
//! count-only bpftrace programs on the tracepoint set's own tracepoints: the floor of any
//! syscall-tracepoint design. Conditions alternate within each round; figures are medians of
//! the rounds and ratios to "none". Needs root. Runs here and in a kernel-matrix guest.
//!
//!     cargo build --release && sudo cargo run --release --example hookbench -- \
//!         --ext target/release/osquery-ebpf [--rounds 5] [--seconds 3] [--sets auto,tracepoint]
//!         [--floor] [--json PATH] [--baseline OTHER-BUILD]

#[path = "support/storms.rs"]
mod storms;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

struct Opts {
    ext: String,
    /// Another build, measured on the same hook sets in the same rounds ("baseline:hooks=SET").
    baseline: Option<String>,
    rounds: usize,
    seconds: u64,
    sets: Vec<String>,
    floor: bool,
    loop_calls: u64,
    json: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        ext: "target/release/osquery-ebpf".into(),
        baseline: None,
        rounds: 5,
        seconds: 3,
        sets: vec!["auto".into(), "tracepoint".into()],
        floor: false,
        loop_calls: 2_000_000,
        json: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--ext" => o.ext = val(),
            "--baseline" => o.baseline = Some(val()),
            "--rounds" => o.rounds = val().parse().expect("--rounds N"),
            "--seconds" => o.seconds = val().parse().expect("--seconds N"),
            "--sets" => o.sets = val().split(',').map(str::to_string).collect(),
            "--floor" => o.floor = true,
            "--loop-calls" => o.loop_calls = val().parse().expect("--loop-calls N"),
            "--json" => o.json = Some(val()),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// Nanoseconds per getppid(2) over `calls` calls on this thread.
fn syscall_ns(calls: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..calls {
        // SAFETY: getppid has no preconditions.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    t.elapsed().as_nanos() as f64 / calls as f64
}

/// Nanoseconds per io_uring request over `requests` NOP requests, submitted and reaped 32 at a
/// time on this thread (None where io_uring cannot be set up).
fn uring_nop_ns(requests: u64) -> Option<f64> {
    let mut ring = io_uring::IoUring::new(64).ok()?;
    let nop = io_uring::opcode::Nop::new().build();
    let t = Instant::now();
    let mut done = 0;
    while done < requests {
        for _ in 0..32 {
            // SAFETY: a NOP points at no buffer.
            unsafe { ring.submission().push(&nop).ok()? };
        }
        ring.submit_and_wait(32).ok()?;
        done += ring.completion().count() as u64;
    }
    Some(t.elapsed().as_nanos() as f64 / done as f64)
}

/// Count-only programs on the tracepoint set's syscall tracepoints and the sched tracepoints.
fn floor_script() -> String {
    let mut probes: Vec<String> = [
        "execve",
        "execveat",
        "clone",
        "clone3",
        "exit",
        "exit_group",
        "connect",
        "bind",
        "listen",
        "accept",
        "accept4",
    ]
    .iter()
    .map(|s| format!("tracepoint:syscalls:sys_enter_{s}"))
    .collect();
    if cfg!(target_arch = "x86_64") {
        probes.push("tracepoint:syscalls:sys_enter_fork".into());
        probes.push("tracepoint:syscalls:sys_enter_vfork".into());
    }
    for s in [
        "execve", "execveat", "connect", "bind", "listen", "accept", "accept4",
    ] {
        probes.push(format!("tracepoint:syscalls:sys_exit_{s}"));
    }
    for s in ["exec", "fork", "exit"] {
        probes.push(format!("tracepoint:sched:sched_process_{s}"));
    }
    format!("{} {{ @[probe] = count(); }}", probes.join(", "))
}

/// A running condition: the extension or bpftrace, ready once it said so on `ready`'s stream.
struct Running {
    child: Child,
    log: mpsc::Receiver<String>,
}

fn start(cmd: &mut Command, ready: &str, from_stdout: bool) -> Option<Running> {
    cmd.stdin(Stdio::null());
    if from_stdout {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().ok()?;
    let stream: Box<dyn std::io::Read + Send> = if from_stdout {
        Box::new(child.stdout.take()?)
    } else {
        Box::new(child.stderr.take()?)
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains(ready) => return Some(Running { child, log: rx }),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Running {
    /// Stop it; returns its log lines after readiness.
    fn stop(mut self) -> Vec<String> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let mut lines = Vec::new();
        while let Ok(l) = self.log.recv_timeout(Duration::from_secs(5)) {
            lines.push(l);
        }
        lines
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[derive(Default)]
struct Figures {
    syscall_ns: Vec<f64>,
    uring_ns: Vec<f64>,
    exec_rate: Vec<f64>,
    connect_rate: Vec<f64>,
    /// The extension's loss counters at its end, summed over rounds.
    losses: u64,
    /// The hook set the extension reported ("trampoline"/"tracepoint"; "-" otherwise).
    hooks: String,
}

fn main() {
    let o = opts();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("hookbench: needs root (it loads the probes)");
        std::process::exit(2);
    }
    let mut conditions: Vec<String> = vec!["none".into()];
    conditions.extend(o.sets.iter().map(|s| format!("hooks={s}")));
    if o.baseline.is_some() {
        conditions.extend(o.sets.iter().map(|s| format!("baseline:hooks={s}")));
    }
    let have_bpftrace = Command::new("bpftrace").arg("--version").output().is_ok();
    if o.floor && have_bpftrace {
        conditions.push("floor".into());
    } else if o.floor {
        eprintln!("hookbench: no bpftrace here: the floor is not measured");
    }
    let mut figures: BTreeMap<String, Figures> = BTreeMap::new();
    for round in 0..o.rounds {
        // rotate the order so that no condition always runs first
        let n = conditions.len();
        for i in 0..n {
            let cond = &conditions[(i + round) % n];
            let running = match cond.as_str() {
                "none" => None,
                "floor" => {
                    let mut cmd = Command::new("bpftrace");
                    cmd.args(["-e", &floor_script()]);
                    Some(start(&mut cmd, "Attaching", true).expect("bpftrace starts"))
                }
                c => {
                    let (exe, set) = match c.strip_prefix("baseline:") {
                        Some(rest) => (o.baseline.as_deref().unwrap_or(&o.ext), rest),
                        None => (o.ext.as_str(), c),
                    };
                    let set = set.trim_start_matches("hooks=");
                    let mut cmd = Command::new(exe);
                    cmd.args([
                        "watch",
                        "--counters-only",
                        "--stats-every",
                        "0",
                        "--hooks",
                        set,
                    ])
                    .env("OSQUERY_EBPF_CONFIG", "/dev/null");
                    match start(&mut cmd, "process context seeded", false) {
                        Some(r) => Some(r),
                        None => {
                            eprintln!("hookbench: the extension does not start with {c}");
                            continue;
                        }
                    }
                }
            };
            std::thread::sleep(Duration::from_millis(500));
            let f = figures.entry(cond.clone()).or_default();
            let ns = (0..3)
                .map(|_| syscall_ns(o.loop_calls))
                .fold(f64::MAX, f64::min);
            let uring = (0..3)
                .filter_map(|_| uring_nop_ns(o.loop_calls / 4))
                .fold(f64::MAX, f64::min);
            let t = Instant::now();
            let execs = storms::exec_storm(o.seconds, "hookbench");
            let exec_rate = execs as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            let (connects, _) = storms::connect_storm(o.seconds);
            let connect_rate = connects as f64 / t.elapsed().as_secs_f64();
            f.syscall_ns.push(ns);
            if uring < f64::MAX {
                f.uring_ns.push(uring);
            }
            f.exec_rate.push(exec_rate);
            f.connect_rate.push(connect_rate);
            eprintln!(
                "round {round} {cond:<18} getppid {ns:6.1} ns  uring nop {uring:6.1} ns  exec {exec_rate:7.0}/s  connect {connect_rate:7.0}/s"
            );
            if let Some(r) = running {
                let log = r.stop();
                if let Some(line) = log.iter().rev().find_map(|l| l.strip_prefix("stats: ")) {
                    let stats: BTreeMap<&str, u64> = line
                        .split_whitespace()
                        .filter_map(|kv| kv.split_once('='))
                        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
                        .collect();
                    f.losses += stats
                        .iter()
                        .filter(|(k, _)| osquery_ebpf::stats::is_loss(k))
                        .map(|(_, v)| v)
                        .sum::<u64>();
                    f.hooks = match stats.get("process_hooks_trampoline") {
                        Some(1) => "trampoline".into(),
                        Some(_) => "tracepoint".into(),
                        None => "?".into(),
                    };
                }
            }
        }
    }

    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = figures.get("none").map(|f| {
        (
            median(&f.syscall_ns),
            median(&f.uring_ns),
            median(&f.exec_rate),
            median(&f.connect_rate),
        )
    });
    let Some((base_ns, base_uring, base_exec, base_connect)) = base else {
        eprintln!("hookbench: no baseline");
        std::process::exit(1);
    };
    println!(
        "\nhookbench on {kernel}: {} rounds, {} s per storm, {} getppid calls (best of 3) per loop",
        o.rounds, o.seconds, o.loop_calls
    );
    println!(
        "{:<18} {:>11} {:>12} {:>16} {:>12} {:>16} {:>10} {:>12} {:>10} {:>7}",
        "condition",
        "hooks",
        "getppid ns",
        "extra ns",
        "uring nop ns",
        "extra ns",
        "exec/s",
        "exec ratio",
        "connect/s",
        "ratio"
    );
    let mut report = serde_json::Map::new();
    for cond in &conditions {
        let Some(f) = figures.get(cond) else { continue };
        let (ns, uring, exec, connect) = (
            median(&f.syscall_ns),
            median(&f.uring_ns),
            median(&f.exec_rate),
            median(&f.connect_rate),
        );
        let hooks = if f.hooks.is_empty() { "-" } else { &f.hooks };
        println!(
            "{cond:<18} {hooks:>11} {ns:>12.1} {:>+7.1} ({:>+5.1}%) {uring:>12.1} {:>+7.1} ({:>+5.1}%) {exec:>10.0} {:>12.3} {connect:>10.0} {:>7.3}",
            ns - base_ns,
            (ns - base_ns) / base_ns * 100.0,
            uring - base_uring,
            (uring - base_uring) / base_uring * 100.0,
            exec / base_exec,
            connect / base_connect,
        );
        report.insert(
            cond.clone(),
            json!({
                "hooks": hooks, "getppid_ns": ns, "getppid_extra_ns": ns - base_ns,
                "uring_nop_ns": uring, "uring_nop_extra_ns": uring - base_uring,
                "exec_rate": exec, "exec_ratio": exec / base_exec,
                "connect_rate": connect, "connect_ratio": connect / base_connect,
                "losses": f.losses,
            }),
        );
    }
    let losses: u64 = figures.values().map(|f| f.losses).sum();
    println!("events lost by the extension (all rounds): {losses}");
    if let Some(path) = &o.json {
        report.insert("kernel".into(), json!(kernel));
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(report)).expect("json");
        std::fs::write(path, text).expect("write json");
    }
}
