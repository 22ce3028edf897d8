//! The storm benchmark: an exec storm and a connect storm, each run alternately without and
//! with the extension (release build, registered with a fake osqueryd, default settings), in
//! one invocation. Reports medians and with/without ratios, rows expected vs found, every loss
//! counter, the extension's CPU per event and peak RSS, per-program BPF cost, event-to-row
//! latency, and `generate` latency. Needs root.
//!
//!     sudo cargo bench --bench storm -- [--seconds 10] [--rounds 3] [--json PATH] [--only exec|connect]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/storms.rs"]
mod storms;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    boot_ns, context, stats, status_kib, unix_now, Harness, PROCESS_COLUMNS, PROCESS_TABLE,
    SOCKET_TABLE,
};
use serde_json::{json, Value};
use storms::{connect_storm, exec_storm};

struct Opts {
    seconds: u64,
    rounds: usize,
    json: String,
    /// Run one storm only (more rounds in the same time when one ratio is in question).
    only: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        seconds: 10,
        rounds: 3,
        json: "target/storm.json".into(),
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--seconds" => o.seconds = args[i + 1].parse().expect("--seconds N"),
            "--rounds" => o.rounds = args[i + 1].parse().expect("--rounds N"),
            "--json" => o.json = args[i + 1].clone(),
            "--only" => o.only = Some(args[i + 1].clone()),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// user+system CPU ns of a process.
fn cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

fn losses(s: &BTreeMap<String, u64>) -> u64 {
    s.iter()
        .filter(|(k, _)| osquery_ebpf::stats::is_loss(k))
        .map(|(_, v)| v)
        .sum()
}

/// (name -> (run_cnt, run_time_ns)) of this project's BPF programs.
fn bpf_costs() -> BTreeMap<String, (u64, u64)> {
    let ours = ["enter_", "exit_", "on_exec", "on_fork", "on_exit"];
    let mut out = BTreeMap::new();
    for p in libbpf_rs::query::ProgInfoIter::default() {
        let name = p.name.to_string_lossy().into_owned();
        if ours.iter().any(|o| name.starts_with(o)) {
            let e = out.entry(name).or_insert((0, 0));
            e.0 += p.run_cnt;
            e.1 += p.run_time_ns;
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Event-to-row latency: spawn marked execs and time until each row is served.
fn latencies(h: &mut Harness, samples: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..samples {
        let t0 = boot_ns();
        let mut c = Command::new("/bin/true")
            .arg(format!("lat-{i}"))
            .spawn()
            .expect("spawn");
        let pid = c.id();
        c.wait().expect("wait");
        let ctx = context(
            &["pid", "syscall", "ntime"],
            &[("pid", 2, &pid.to_string())],
        );
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let rows = h.client.generate(PROCESS_TABLE, &ctx);
            if rows.iter().any(|r| r["syscall"] == "execve") {
                out.push((boot_ns() - t0) as f64 / 1e6);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    out
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("storm: needs root (it loads the probes)");
        std::process::exit(2);
    }
    let o = opts();
    // BPF run-time statistics for as long as this fd is open (BPF_ENABLE_STATS): unlike the
    // kernel.bpf_stats_enabled sysctl they end with the benchmark, and do not go on taxing
    // every BPF program of the host
    // SAFETY: a plain bpf(2) command; the fd it returns, if any, is owned here.
    let stats_fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
    };
    let _stats = (stats_fd >= 0).then(|| {
        // SAFETY: stats_fd was just returned by the kernel and is not owned elsewhere.
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(stats_fd) }
    });
    if stats_fd < 0 {
        eprintln!("storm: BPF run-time statistics unavailable: per-program figures will be 0");
    }
    let mut rate = BTreeMap::<(&str, &str), Vec<f64>>::new();
    let mut report = serde_json::Map::new();
    let mut found = Vec::new();
    let (mut cpu_per_event, mut rss, mut loss_total) = (Vec::new(), 0u64, 0u64);
    let mut bpf_total: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut lat = Vec::new();
    let mut gen_full = Vec::new();
    let mut gen_narrow = Vec::new();

    for round in 0..o.rounds {
        let order: [bool; 2] = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with in order {
            let mut h = with.then(|| Harness::start(&[]));
            let marker = format!("storm{}-{round}", std::process::id());
            let ext_pid = h.as_ref().map(|h| h.ext.child.id());
            let cpu0 = ext_pid.map(cpu_ns).unwrap_or(0);
            let bpf0 = bpf_costs();
            let t = Instant::now();
            let run = |kind: &str| o.only.as_deref().is_none_or(|k| k == kind);
            let execs = if run("exec") {
                exec_storm(o.seconds, &marker)
            } else {
                0
            };
            let exec_rate = execs as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            let (connects, port) = if run("connect") {
                connect_storm(o.seconds)
            } else {
                (0, 0)
            };
            let connect_rate = connects as f64 / t.elapsed().as_secs_f64();
            let label = if with { "with" } else { "without" };
            rate.entry(("exec", label)).or_default().push(exec_rate);
            rate.entry(("connect", label))
                .or_default()
                .push(connect_rate);
            eprintln!(
                "round {round} {label:>7}: {exec_rate:.0} exec/s, {connect_rate:.0} connect/s"
            );
            let Some(h) = h.as_mut() else { continue };
            let pid = h.ext.child.id();
            std::thread::sleep(Duration::from_secs(1));
            // CPU of the storms only: the queries below cost CPU too
            let cpu = cpu_ns(pid).saturating_sub(cpu0);
            let bpf1 = bpf_costs();
            for (name, (cnt, ns)) in &bpf1 {
                let (c0, n0) = bpf0.get(name).copied().unwrap_or((0, 0));
                let e = bpf_total.entry(name.clone()).or_insert((0, 0));
                e.0 += cnt.saturating_sub(c0);
                e.1 += ns.saturating_sub(n0);
            }
            // rows expected vs found (the store keeps the last 50,000 rows per table)
            let rows = h
                .client
                .generate(PROCESS_TABLE, &context(&["syscall", "cmdline"], &[]));
            let exec_rows = rows
                .iter()
                .filter(|r| r["syscall"] == "execve" && r["cmdline"].contains(&marker))
                .count();
            let srows = h
                .client
                .generate(SOCKET_TABLE, &context(&["syscall", "remote_port"], &[]));
            let connect_rows = srows
                .iter()
                .filter(|r| {
                    port != 0 && r["syscall"] == "connect" && r["remote_port"] == port.to_string()
                })
                .count();
            let st = stats(h);
            let events = st.get("exec_received").copied().unwrap_or(0)
                + st.get("fork_received").copied().unwrap_or(0)
                + st.get("exit_received").copied().unwrap_or(0)
                + st.get("socket_received").copied().unwrap_or(0);
            cpu_per_event.push(cpu as f64 / events.max(1) as f64 / 1000.0);
            loss_total += losses(&st);
            found.push(json!({
                "round": round, "execs": execs, "exec_rows": exec_rows,
                "connects": connects, "connect_rows": connect_rows,
                "losses": losses(&st), "events": events,
                "process_rows_evicted_count": st.get("process_rows_evicted_count"),
                "socket_rows_evicted_count": st.get("socket_rows_evicted_count"),
            }));
            // generate latency with a full store, then for a narrow time window
            for _ in 0..3 {
                let t = Instant::now();
                let n = h
                    .client
                    .generate(PROCESS_TABLE, &context(PROCESS_COLUMNS, &[]))
                    .len();
                gen_full.push((t.elapsed().as_secs_f64() * 1000.0, n));
                let t = Instant::now();
                let since = (unix_now() - 1).to_string();
                let _ = h.client.generate(
                    PROCESS_TABLE,
                    &context(PROCESS_COLUMNS, &[("time", 4, &since)]),
                );
                gen_narrow.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat.extend(latencies(h, 50));
            // the peak includes the full-store generates above
            rss = rss.max(status_kib(pid, "VmHWM:"));
        }
    }

    let mut table = Vec::new();
    for kind in ["exec", "connect"] {
        let w = median(rate.entry((kind, "with")).or_default());
        let wo = median(rate.entry((kind, "without")).or_default());
        table.push((kind, wo, w, if wo > 0.0 { w / wo } else { 0.0 }));
        report.insert(format!("{kind}_rate_without"), json!(wo));
        report.insert(format!("{kind}_rate_with"), json!(w));
        report.insert(
            format!("{kind}_rate_ratio"),
            json!(if wo > 0.0 { w / wo } else { 0.0 }),
        );
    }
    let bpf: BTreeMap<String, f64> = bpf_total
        .iter()
        .filter(|(_, (c, _))| *c > 0)
        .map(|(n, (c, ns))| (n.clone(), *ns as f64 / *c as f64))
        .collect();
    let gen_full_ms = median(&mut gen_full.iter().map(|g| g.0).collect::<Vec<_>>());
    let gen_full_rows = gen_full.iter().map(|g| g.1).max().unwrap_or(0);
    let gen_narrow_ms = median(&mut gen_narrow);
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    let cpu_us = median(&mut cpu_per_event);

    println!(
        "\nstorm benchmark: {} rounds of {} s per storm, alternating without/with",
        o.rounds, o.seconds
    );
    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "workload", "without (/s)", "with (/s)", "ratio"
    );
    for (k, wo, w, r) in &table {
        println!("{k:<10} {wo:>14.0} {w:>14.0} {r:>8.3}");
    }
    for f in &found {
        println!(
            "round {}: exec rows {}/{}, connect rows {}/{} (store evictions by count: process {}, socket {}), losses {}",
            f["round"],
            f["exec_rows"],
            f["execs"],
            f["connect_rows"],
            f["connects"],
            f["process_rows_evicted_count"],
            f["socket_rows_evicted_count"],
            f["losses"]
        );
    }
    println!("events lost (kernel + user space, all rounds): {loss_total}");
    println!("extension CPU per event: {cpu_us:.2} us (user+system, median of rounds)");
    println!("extension peak RSS: {:.1} MiB", rss as f64 / 1024.0);
    println!(
        "event-to-row latency: p50 {p50:.1} ms, p99 {p99:.1} ms ({} samples)",
        lat.len()
    );
    println!("generate: {gen_full_ms:.1} ms for {gen_full_rows} rows, {gen_narrow_ms:.1} ms for `time > now-1`");
    println!("BPF cost per invocation (ns):");
    for (n, ns) in &bpf {
        println!("  {n:<18} {ns:>8.0}");
    }
    let (runs, ns) = bpf_total
        .values()
        .fold((0u64, 0u64), |(c, n), &(c1, n1)| (c + c1, n + n1));
    let bpf_avg = ns as f64 / runs.max(1) as f64;
    println!("  {:<18} {bpf_avg:>8.0}", "all, by runs");
    report.insert("rounds".into(), json!(o.rounds));
    report.insert("seconds".into(), json!(o.seconds));
    report.insert("found".into(), Value::Array(found));
    report.insert("losses".into(), json!(loss_total));
    report.insert("cpu_us_per_event".into(), json!(cpu_us));
    report.insert("peak_rss_kib".into(), json!(rss));
    report.insert("latency_ms_p50".into(), json!(p50));
    report.insert("latency_ms_p99".into(), json!(p99));
    report.insert("generate_full_ms".into(), json!(gen_full_ms));
    report.insert("generate_full_rows".into(), json!(gen_full_rows));
    report.insert("generate_narrow_ms".into(), json!(gen_narrow_ms));
    report.insert("bpf_ns_per_run".into(), json!(bpf));
    report.insert("bpf_ns_per_run_all".into(), json!(bpf_avg));
    let text = serde_json::to_string_pretty(&Value::Object(report)).expect("json");
    if let Some(dir) = std::path::Path::new(&o.json).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&o.json, text).expect("write json");
    println!("JSON: {}", o.json);
}
