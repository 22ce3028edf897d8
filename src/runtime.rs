//! Wiring: probes -> bounded queue -> process-context stage -> store, plus the loss monitor.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::Settings;
use crate::containers::Cgroups;
use crate::enrich::{self, Stores};
use crate::probes::{self, HookReport, HookSet, KernelStats, Probes, ProgramStatus};
use crate::procctx::ProcessContext;
use crate::rows::{ProcessRow, SocketRow};
pub use crate::stats::Stat;
use crate::stats::{kernel_stats, Counters};
use crate::store::Store;

pub struct Runtime {
    pub process_store: Arc<Store<ProcessRow>>,
    pub socket_store: Arc<Store<SocketRow>>,
    pub cgroups: Arc<Cgroups>,
    pub counters: Arc<Counters>,
    probes: Mutex<Probes>,
    kernel_stats: KernelStats,
    programs: Vec<ProgramStatus>,
    hooks: HookReport,
    ring_buffer_bytes: u32,
    perf: bool,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The extension's own CPU time and memory, from /proc/self.
fn own_usage(out: &mut Vec<Stat>) {
    let Ok(me) = procfs::process::Process::myself() else {
        return;
    };
    if let Ok(stat) = me.stat() {
        let tick_ms = 1000 / procfs::ticks_per_second().max(1);
        out.push(Stat::new(
            "cpu_user_ms",
            stat.utime * tick_ms,
            "user CPU time of the extension",
        ));
        out.push(Stat::new(
            "cpu_system_ms",
            stat.stime * tick_ms,
            "system CPU time of the extension",
        ));
        out.push(Stat::new(
            "rss_bytes",
            stat.rss * procfs::page_size(),
            "resident memory of the extension",
        ));
    }
}

fn store_stats<R>(out: &mut Vec<Stat>, table: &str, store: &Store<R>) {
    let c = &store.counters;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    out.push(Stat::new(
        format!("{table}_rows_buffered"),
        store.len() as u64,
        format!("{table} rows in the store now"),
    ));
    out.push(Stat::new(
        format!("{table}_rows_evicted_age"),
        g(&c.evicted_by_age),
        format!("{table} rows dropped from the store by events_expiry"),
    ));
    out.push(Stat::new(
        format!("{table}_rows_evicted_count"),
        g(&c.evicted_by_count),
        format!("{table} rows dropped from the store by events_max"),
    ));
}

impl Runtime {
    pub fn start(settings: &Settings) -> Result<Runtime> {
        let counters = Arc::new(Counters::default());
        // batches of up to BATCH_MAX records: at most queue_size records wait in the queue
        let (tx, rx) = crossbeam_channel::bounded((settings.queue_size / probes::BATCH_MAX).max(1));
        // Attach first and seed from /proc after, so that no process falls between the two:
        // events of the meantime wait in the queue and are applied on top of the seed.
        let probes = probes::start(&settings.probes, tx, counters.clone())?;
        tracing::info!(
            attached = probes.attached(),
            failed = probes.failed(),
            transport = ?probes.transport,
            "probes loaded"
        );
        let proc_root = Path::new("/proc");
        let ctx = ProcessContext::seed_from_proc(proc_root);
        tracing::info!(processes = ctx.len(), "process context seeded from /proc");

        let stores = Stores {
            process: Arc::new(Store::new(settings.events_max, settings.events_expiry)),
            socket: Arc::new(Store::new(settings.events_max, settings.events_expiry)),
            cgroups: Arc::new(Cgroups::new()),
        };
        let (process_store, socket_store) = (stores.process.clone(), stores.socket.clone());
        let cgroups = stores.cgroups.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let t = enrich::spawn(rx, ctx, stores, stop.clone(), proc_root)
            .context("spawning the pipeline thread")?;
        Ok(Runtime {
            process_store,
            socket_store,
            cgroups,
            counters,
            kernel_stats: probes.kernel_stats.clone(),
            programs: probes.programs.clone(),
            hooks: probes.hooks.clone(),
            ring_buffer_bytes: settings.probes.ring_buffer_bytes,
            perf: probes.transport == crate::probes::Transport::Perf,
            probes: Mutex::new(probes),
            stop,
            threads: Mutex::new(vec![t]),
        })
    }

    /// Every counter, kernel and user space.
    pub fn stats(&self) -> Vec<Stat> {
        let mut out = self.counters.snapshot();
        out.extend(kernel_stats(&self.kernel_stats.read()));
        store_stats(&mut out, "process", &self.process_store);
        store_stats(&mut out, "socket", &self.socket_store);
        let attached = self.programs.iter().filter(|p| p.error.is_none()).count();
        out.push(Stat::new(
            "probes_attached",
            attached as u64,
            "BPF programs attached",
        ));
        out.push(Stat::new(
            "probes_failed",
            (self.programs.len() - attached) as u64,
            "BPF programs that failed to attach",
        ));
        out.push(Stat::new(
            "ring_buffer_size",
            u64::from(self.ring_buffer_bytes),
            "BPF ring buffer bytes (with the perf transport: shared out among the CPUs)",
        ));
        out.push(Stat::new(
            "transport_perf_buffer",
            u64::from(self.perf),
            "1: records come through per-CPU perf buffers; 0: through the BPF ring buffer",
        ));
        for (table, set) in [
            ("process", Some(self.hooks.process)),
            ("socket", self.hooks.socket),
        ] {
            out.push(Stat::new(
                format!("{table}_hooks_trampoline"),
                u64::from(set == Some(HookSet::Trampoline)),
                format!(
                    "1: the {table} table's syscall hooks are BPF trampolines (fentry/fexit); \
                     0: {} ({})",
                    if set.is_some() {
                        "syscall tracepoints"
                    } else {
                        "not loaded"
                    },
                    self.hooks.why
                ),
            ));
        }
        // one row per program: 1 attached, 0 not (with the reason), and its hook set
        for p in &self.programs {
            let set = match p.set {
                Some(HookSet::Trampoline) => "trampoline set",
                Some(HookSet::Tracepoint) => "tracepoint set",
                None => "tp_btf tracepoint, both sets",
            };
            let (v, desc) = match &p.error {
                None => (1, format!("attached ({set})")),
                Some(why) => (0, format!("{why} ({set})")),
            };
            out.push(Stat::new(format!("probe_{}", p.name), v, desc));
        }
        own_usage(&mut out);
        out
    }

    /// Sum of the counters that mean a lost row.
    pub fn losses(stats: &[Stat]) -> u64 {
        stats.iter().filter(|s| s.loss).map(|s| s.value).sum()
    }

    /// Log a warning, at most every `every`, when a loss counter moved.
    pub fn spawn_loss_monitor(self: &Arc<Self>, every: Duration) -> Result<()> {
        let rt = Arc::downgrade(self);
        let stop = self.stop.clone();
        std::thread::Builder::new()
            .name("loss-monitor".into())
            .spawn(move || {
                let mut last = 0;
                let mut tick = Instant::now();
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(200));
                    if tick.elapsed() < every {
                        continue;
                    }
                    tick = Instant::now();
                    let Some(rt) = rt.upgrade() else { break };
                    let stats = rt.stats();
                    let lost = Runtime::losses(&stats);
                    if lost > last {
                        let detail: Vec<String> = stats
                            .iter()
                            .filter(|s| s.value > 0 && s.loss)
                            .map(|s| format!("{}={}", s.name, s.value))
                            .collect();
                        tracing::warn!("events were lost: {} in all ({})", lost, detail.join(", "));
                        last = lost;
                    }
                }
            })
            .context("spawning the loss monitor")?;
        Ok(())
    }

    /// Stop the consumer (draining the ring), then the pipeline once its queue is empty.
    pub fn shutdown(&self) {
        if let Ok(mut p) = self.probes.lock() {
            p.stop();
        }
        self.stop.store(true, Ordering::Release);
        let threads: Vec<_> = self
            .threads
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}
