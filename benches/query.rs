//! The query benchmark: full-store `SELECT *` of both tables, one at a time and eight at
//! once with a pinger, against one or more builds of the extension side by side in one run
//! (each registered with a fake osqueryd, its stores filled by real exec and connect storms).
//! Reports per build: end-to-end time with the test client (which decodes every row into a
//! map), with a caller that only reads the bytes, the time the extension spent from request to
//! last byte written (its debug log, where the build logs it), RSS before, peak growth during
//! the queries, RSS after, and the slowest ping during the concurrent queries. Needs root.
//!
//!     sudo cargo bench --bench query -- [--ext PATH]... [--rows 50000] [--rounds 5] [--json PATH]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/storms.rs"]
mod storms;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    context, generate_request, stats, status_kib, ExtClient, Harness, PROCESS_COLUMNS,
    PROCESS_TABLE, SOCKET_COLUMNS, SOCKET_TABLE,
};
use serde_json::{json, Value};
use storms::{connect_storm, exec_storm};

struct Opts {
    exes: Vec<PathBuf>,
    rows: u64,
    rounds: usize,
    json: String,
}

fn opts() -> Opts {
    let mut o = Opts {
        exes: Vec::new(),
        rows: 50_000,
        rounds: 5,
        json: "target/query.json".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--ext" => o.exes.push(args[i + 1].clone().into()),
            "--rows" => o.rows = args[i + 1].parse().expect("--rows N"),
            "--rounds" => o.rounds = args[i + 1].parse().expect("--rounds N"),
            "--json" => o.json = args[i + 1].clone(),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if o.exes.is_empty() {
        o.exes.push(env!("CARGO_BIN_EXE_osquery-ebpf").into());
    }
    o
}

/// Reset the peak RSS (VmHWM) to the current RSS.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Storm until the table's store holds `rows` rows (or two minutes pass).
fn fill(h: &mut Harness, stat: &str, rows: u64, storm: impl Fn()) -> u64 {
    let start = Instant::now();
    loop {
        let have = stats(h).get(stat).copied().unwrap_or(0);
        if have >= rows || start.elapsed() > Duration::from_secs(120) {
            return have;
        }
        storm();
    }
}

/// The extension's own times for writing `generate` replies of `table`, from its debug log.
fn logged_ms(log: &str, table: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("generate answered") && l.contains(&format!("table={table}")))
        .filter_map(|l| l.split("ms=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect()
}

fn skip(r: &mut impl std::io::BufRead, n: usize) {
    let mut left = n;
    while left > 0 {
        let avail = r.fill_buf().expect("read").len().min(left);
        assert!(avail > 0, "reply cut short");
        r.consume(avail);
        left -= avail;
    }
}

fn be32(r: &mut impl std::io::Read) -> usize {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).expect("read");
    u32::from_be_bytes(b) as usize
}

/// A caller that reads the reply as fast as the socket delivers it and keeps nothing (rows
/// are counted, not decoded into maps): the time is the extension's, not a client's.
fn skim(socket: &Path, table: &str) -> (f64, u64) {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    let t = Instant::now();
    s.write_all(&generate_request(table, &full(table)))
        .expect("request");
    let r = &mut std::io::BufReader::with_capacity(1 << 20, s);
    // envelope (header, name, seqid), result field 0, response field 1: the status struct
    // (code field, message field, stop)
    be32(r);
    let name = be32(r);
    skip(r, name + 4 + 3 + 3 + 3 + 4 + 3);
    let message = be32(r);
    skip(r, message + 1);
    // response field 2: the list of rows, each a map of strings
    skip(r, 3 + 1);
    let rows = be32(r);
    for _ in 0..rows {
        skip(r, 2);
        let cells = be32(r);
        for _ in 0..2 * cells {
            let n = be32(r);
            skip(r, n);
        }
    }
    skip(r, 2); // the stops of the response and of the result
    (t.elapsed().as_secs_f64() * 1e3, rows as u64)
}

fn full(table: &str) -> String {
    let cols = if table == PROCESS_TABLE {
        PROCESS_COLUMNS
    } else {
        SOCKET_COLUMNS
    };
    context(cols, &[])
}

fn bench(exe: &Path, o: &Opts) -> Value {
    let mut h = Harness::start_exe(exe, &[]);
    let pid = h.ext.child.id();
    let socket = h.manager.ext_socket(h.uuid);
    let process_rows = fill(&mut h, "process_rows_buffered", o.rows, || {
        exec_storm(5, "query-bench");
    });
    let socket_rows = fill(&mut h, "socket_rows_buffered", o.rows, || {
        connect_storm(5);
    });
    eprintln!(
        "{}: {process_rows} process rows, {socket_rows} socket rows",
        exe.display()
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut out = serde_json::Map::new();
    for (table, store_rows) in [(PROCESS_TABLE, process_rows), (SOCKET_TABLE, socket_rows)] {
        let before = status_kib(pid, "VmRSS:");
        reset_peak(pid);
        let (mut e2e, mut skimmed, mut server) = (Vec::new(), Vec::new(), Vec::new());
        let mut got = 0;
        for _ in 0..o.rounds {
            let t = Instant::now();
            let rows = h.client.generate(table, &full(table));
            // decoded and in hand; freeing them is the caller's business, not the answer's
            e2e.push(t.elapsed().as_secs_f64() * 1e3);
            got = rows.len();
            drop(rows);
            let (ms, rows) = skim(&socket, table);
            assert_eq!(rows, got as u64, "the skimming caller counts the same rows");
            skimmed.push(ms);
            // the extension's own time for the reply to the caller that only reads (its log
            // line follows the last byte)
            let logged = 2 * e2e.len();
            let start = Instant::now();
            while logged_ms(&h.ext.log_text(), table).len() < logged
                && start.elapsed() < Duration::from_secs(2)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            server.extend(logged_ms(&h.ext.log_text(), table).get(logged - 1));
        }
        let peak = status_kib(pid, "VmHWM:");
        std::thread::sleep(Duration::from_secs(1));
        let after = status_kib(pid, "VmRSS:");
        out.insert(
            table.into(),
            json!({
                "store_rows": store_rows, "rows": got,
                "end_to_end_ms": median(e2e),
                "fast_caller_ms": median(skimmed),
                "extension_ms": (!server.is_empty()).then(|| median(server)),
                "rss_before_mib": mib(before), "peak_growth_mib": mib(peak.saturating_sub(before)),
                "rss_after_mib": mib(after),
            }),
        );
    }

    // eight full-store queries at once, both tables, while a pinger measures
    let before = status_kib(pid, "VmRSS:");
    reset_peak(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (stop, socket) = (stop.clone(), socket.clone());
        std::thread::spawn(move || {
            let mut c = ExtClient::connect(&socket, Duration::from_secs(5));
            let mut worst = 0f64;
            let mut pings = 0u64;
            while !stop.load(Ordering::Acquire) {
                let t = Instant::now();
                let ok = c.ping().is_ok_and(|s| s.code == Some(0));
                worst = worst.max(if ok {
                    t.elapsed().as_secs_f64() * 1e3
                } else {
                    f64::INFINITY
                });
                pings += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (worst, pings)
        })
    };
    let t = Instant::now();
    let queries: Vec<_> = (0..8)
        .map(|i| {
            let socket = socket.clone();
            let table = if i % 2 == 0 {
                PROCESS_TABLE
            } else {
                SOCKET_TABLE
            };
            std::thread::spawn(move || {
                let mut c = ExtClient::connect(&socket, Duration::from_secs(5));
                let rows = c.generate(table, &full(table));
                let cols = if table == PROCESS_TABLE { 17 } else { 22 };
                (table, rows.len(), rows.iter().all(|r| r.len() == cols))
            })
        })
        .collect();
    let answers: Vec<_> = queries
        .into_iter()
        .map(|q| q.join().expect("query"))
        .collect();
    let wall = t.elapsed().as_secs_f64() * 1e3;
    stop.store(true, Ordering::Release);
    let (worst_ping, pings) = pinger.join().expect("pinger");
    let peak = status_kib(pid, "VmHWM:");
    let correct = answers.iter().all(|&(table, n, complete)| {
        let want = if table == PROCESS_TABLE {
            process_rows
        } else {
            socket_rows
        };
        complete && n as u64 >= want.min(o.rows)
    });
    out.insert(
        "concurrent".into(),
        json!({
            "queries": 8, "wall_ms": wall, "all_correct": correct,
            "slowest_ping_ms": worst_ping, "pings": pings,
            "peak_growth_mib": mib(peak.saturating_sub(before)),
        }),
    );
    Value::Object(out)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("query: needs root (the extension loads its probes)");
        std::process::exit(2);
    }
    let o = opts();
    let mut report = serde_json::Map::new();
    for exe in &o.exes {
        let r = bench(exe, &o);
        println!("{}", exe.display());
        for table in [PROCESS_TABLE, SOCKET_TABLE] {
            let t = &r[table];
            let ext_ms = t["extension_ms"]
                .as_f64()
                .map_or("(not logged)".to_string(), |v| format!("{v:.1} ms"));
            println!(
                "  {table}: {} rows, end to end {:.1} ms (a caller that only reads: {:.1} ms), in the extension {ext_ms}; RSS {:.1} MiB before, +{:.1} MiB peak, {:.1} MiB after",
                t["rows"], t["end_to_end_ms"].as_f64().unwrap_or(0.0),
                t["fast_caller_ms"].as_f64().unwrap_or(0.0),
                t["rss_before_mib"].as_f64().unwrap_or(0.0),
                t["peak_growth_mib"].as_f64().unwrap_or(0.0),
                t["rss_after_mib"].as_f64().unwrap_or(0.0),
            );
        }
        let c = &r["concurrent"];
        println!(
            "  8 concurrent full-store queries: {:.0} ms, all correct: {}, slowest ping {:.1} ms of {}, RSS +{:.1} MiB peak",
            c["wall_ms"].as_f64().unwrap_or(0.0),
            c["all_correct"],
            c["slowest_ping_ms"].as_f64().unwrap_or(0.0),
            c["pings"],
            c["peak_growth_mib"].as_f64().unwrap_or(0.0),
        );
        report.insert(exe.display().to_string(), r);
    }
    let text = serde_json::to_string_pretty(&Value::Object(report)).expect("json");
    std::fs::write(&o.json, text).expect("write report");
    println!("report: {}", o.json);
}
