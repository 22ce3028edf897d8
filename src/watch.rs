//! `osquery-ebpf watch`: the same rows, streamed live to stdout without osquery.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::constraints::Query;
use crate::pipeline::unix_now;
use crate::runtime::{Runtime, Stat};
use crate::tables::{process_cells, PROCESS_COLUMNS};

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
}

fn readable(cells: &std::collections::BTreeMap<String, String>) -> String {
    let g = |k: &str| cells.get(k).map(String::as_str).unwrap_or("");
    format!(
        "{} {:<10} pid={} tid={} parent={} uid={} ret={}{} path={} cwd={} cmdline={}",
        g("time"),
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
        g("cwd"),
        g("cmdline").escape_debug(),
    )
}

pub fn print_stats(stats: &[Stat]) {
    let line: Vec<String> = stats.iter().map(|(n, v, _)| format!("{n}={v}")).collect();
    eprintln!("stats: {}", line.join(" "));
}

pub fn run(rt: Arc<Runtime>, table: &str, args: &WatchArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let json = args.json || !std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_eid = 0;
    let all = Query::default();
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
        let rows = rt.process_store.select(unix_now(), |e| e.eid > last_eid);
        let mut lock = out.lock();
        for e in &rows {
            last_eid = e.eid;
            let cells = process_cells(e, &all);
            let line = if json {
                let mut obj = serde_json::Map::new();
                obj.insert("table".into(), table.into());
                for (name, _, _) in PROCESS_COLUMNS {
                    if let Some(v) = cells.get(*name) {
                        obj.insert((*name).into(), v.clone().into());
                    }
                }
                serde_json::Value::Object(obj).to_string()
            } else {
                readable(&cells)
            };
            if writeln!(lock, "{line}").is_err() {
                return Ok(()); // stdout closed
            }
        }
        let _ = lock.flush();
        drop(lock);
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
