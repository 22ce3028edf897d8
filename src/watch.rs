//! `osquery-ebpf watch`: the same rows, streamed live to stdout without osquery.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::clock::{unix_now, Clock};
use crate::containers::Cgroups;
use crate::runtime::{Runtime, Stat};
use crate::store::Store;
use crate::tables::{cells, EventRow};

#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// JSON lines (the default when stdout is not a terminal)
    #[arg(long)]
    pub json: bool,
    /// Stop after this many seconds
    #[arg(long)]
    pub duration: Option<u64>,
    /// Print the counters to stderr every N seconds (0: only at the end)
    #[arg(long, default_value_t = 10)]
    pub stats_every: u64,
    /// Keep rows in the tables' stores as when serving osquery, but print only the counters
    /// (for measuring the extension's own cost)
    #[arg(long)]
    pub counters_only: bool,
    /// Show one table only
    #[arg(long, value_enum, default_value_t = WatchTable::Both)]
    pub table: WatchTable,
}

/// Which table's rows `watch` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchTable {
    Process,
    Socket,
    Both,
}

/// The local clock time of a CLOCK_BOOTTIME timestamp, with milliseconds ("14:03:27.512").
fn clock_time(clock: &Clock, ts_boot: u64) -> String {
    let ns = clock.unix_nanos(ts_boot);
    chrono::DateTime::from_timestamp_nanos(ns)
        .with_timezone(&chrono::Local)
        .format("%H:%M:%S%.3f")
        .to_string()
}

/// One row for a terminal: clock time, table and syscall in aligned columns, then the rest.
fn readable(kind: &str, clock: &Clock, cells: &BTreeMap<&str, &str>) -> String {
    let g = |k: &str| cells.get(k).copied().unwrap_or("");
    let head = format!(
        "{} {kind:<7} {:<10} pid={} tid={} parent={} uid={} ret={}{} path={}",
        clock_time(clock, g("ntime").parse().unwrap_or(0)),
        g("syscall"),
        g("pid"),
        g("tid"),
        g("parent"),
        g("uid"),
        g("exit_code"),
        if g("probe_error") == "1" {
            " probe_error"
        } else {
            ""
        },
        g("path"),
    );
    if cells.contains_key("family") {
        format!(
            "{head} fd={} family={} type={} proto={} local={}:{} remote={}:{}",
            g("fd"),
            g("family"),
            g("type"),
            g("protocol"),
            g("local_address"),
            g("local_port"),
            g("remote_address"),
            g("remote_port"),
        )
    } else {
        format!(
            "{head} cwd={} cmdline={}",
            g("cwd"),
            g("cmdline").escape_debug()
        )
    }
}

/// Print the rows of `store` newer than `*last_eid`.
fn print_new<R: EventRow>(
    out: &mut impl Write,
    (kind, table): (&str, &str),
    store: &Store<R>,
    cgroups: &Cgroups,
    last_eid: &mut u64,
    json: bool,
) -> std::io::Result<()> {
    let clock = Clock::now();
    let seen = *last_eid;
    for e in store.select(unix_now(), |e| e.eid > seen) {
        *last_eid = e.eid;
        let cells = cells(R::columns(), &e);
        // the cgroup and container behind cid, as bpf_process_containers_v2 gives them
        let cgroup = cgroups.get(e.row.base().cid);
        let line = if json {
            let mut obj = serde_json::Map::new();
            obj.insert("table".into(), table.into());
            for (name, v) in cells {
                obj.insert(name.into(), v.into());
            }
            if let Some(cg) = &cgroup {
                obj.insert("cgroup_path".into(), cg.path.clone().into());
                if let Some(c) = &cg.container {
                    obj.insert("container_runtime".into(), c.runtime.into());
                    obj.insert("container_id".into(), c.id.clone().into());
                }
            }
            serde_json::Value::Object(obj).to_string()
        } else {
            let by_name = cells.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut line = readable(kind, &clock, &by_name);
            if let Some(c) = cgroup.and_then(|cg| cg.container) {
                line.push_str(&format!(" container={}:{:.12}", c.runtime, c.id));
            }
            line
        };
        writeln!(out, "{line}")?;
    }
    out.flush()
}

pub fn print_stats(stats: &[Stat]) {
    let line: Vec<String> = stats
        .iter()
        .map(|s| format!("{}={}", s.name, s.value))
        .collect();
    eprintln!("stats: {}", line.join(" "));
}

pub fn run(rt: Arc<Runtime>, tables: (&str, &str), args: &WatchArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let json = args.json || !std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last_stats = Instant::now();
    let (mut last_process, mut last_socket) = (0, 0);
    let out = std::io::stdout();
    loop {
        let done = stop.load(Ordering::Acquire)
            || args
                .duration
                .is_some_and(|d| started.elapsed() >= Duration::from_secs(d));
        if done {
            // let the last records through the pipeline
            std::thread::sleep(Duration::from_millis(300));
        }
        let mut lock = out.lock();
        let show = |t| !args.counters_only && (args.table == WatchTable::Both || args.table == t);
        let mut printed = Ok(());
        if show(WatchTable::Process) {
            printed = print_new(
                &mut lock,
                ("process", tables.0),
                &rt.process_store,
                &rt.cgroups,
                &mut last_process,
                json,
            );
        }
        if printed.is_ok() && show(WatchTable::Socket) {
            printed = print_new(
                &mut lock,
                ("socket", tables.1),
                &rt.socket_store,
                &rt.cgroups,
                &mut last_socket,
                json,
            );
        }
        drop(lock);
        if printed.is_err() {
            break; // stdout closed
        }
        if args.stats_every > 0 && last_stats.elapsed() >= Duration::from_secs(args.stats_every) {
            print_stats(&rt.stats());
            last_stats = Instant::now();
        }
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    rt.shutdown();
    print_stats(&rt.stats());
    Ok(())
}
