//! Reading the kernel buffer: records are decoded into batches and handed to the pipeline.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::{SendTimeoutError, Sender};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::options::{ProbeOptions, Transport};
use crate::event::{decode, Event};
use crate::process_skel::{types, ProcessSkel};
use crate::stats::Counters;

/// How often the consumer collects records when the probes did not wake it (they do when the
/// ring is 1/8 full). 100 ms rather than 10 ms: larger batches took the extension's CPU per
/// event in an exec storm from 3.9 to 1.3-1.5 us; a row is in its table within ~100 ms.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Records decoded in one pass over the kernel buffer, handed to the pipeline together: one
/// channel operation and one wake-up per pass instead of one per record.
pub type Batch = Vec<Event>;

/// Records a batch holds at most; a fuller pass is sent in several.
pub const BATCH_MAX: usize = 1024;

/// Sums of the per-CPU kernel counters, indexed by `enum stat_id`.
#[derive(Clone)]
pub struct KernelStats {
    map: Arc<MapHandle>,
}

impl KernelStats {
    pub fn new(skel: &ProcessSkel<'_>) -> Result<KernelStats> {
        let map = MapHandle::try_from(&skel.maps.stats).context("opening the stats map")?;
        Ok(KernelStats { map: Arc::new(map) })
    }

    pub fn read(&self) -> Vec<u64> {
        let n = types::stat_id::STAT_MAX.0;
        (0..n)
            .map(|id| {
                self.map
                    .lookup_percpu(&id.to_ne_bytes(), MapFlags::ANY)
                    .ok()
                    .flatten()
                    .map(|cpus| {
                        cpus.iter()
                            .filter_map(|v| v.get(..8)?.try_into().ok().map(u64::from_ne_bytes))
                            .sum()
                    })
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// The consumer's side of the queue: the batch being filled, and where it goes.
pub struct Pending {
    batch: Batch,
    tx: Sender<Batch>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

/// Shared by the transport's callbacks and the loop that flushes.
pub type SharedPending = Rc<RefCell<Pending>>;

impl Pending {
    pub fn shared(
        tx: Sender<Batch>,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
    ) -> SharedPending {
        Rc::new(RefCell::new(Pending {
            batch: Vec::with_capacity(64),
            tx,
            counters,
            stop,
        }))
    }

    /// Decode one record into the batch, sending the batch when it is full.
    fn record(&mut self, data: &[u8]) {
        match decode(data) {
            Ok(ev) => {
                self.counters.received(&ev);
                self.batch.push(ev);
                if self.batch.len() >= BATCH_MAX {
                    self.flush();
                }
            }
            Err(e) => {
                self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("undecodable record: {e}");
            }
        }
    }

    /// Send the batch, waiting while the queue is full (so that back-pressure lands in the
    /// kernel buffer, where drops are counted); at shutdown or without a pipeline the batch
    /// is counted as dropped.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::replace(&mut self.batch, Vec::with_capacity(64));
        loop {
            match self.tx.send_timeout(batch, Duration::from_millis(100)) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(back)) => {
                    if self.stop.load(Ordering::Acquire) {
                        self.drop_batch(back.len());
                        return;
                    }
                    batch = back;
                }
                Err(SendTimeoutError::Disconnected(back)) => {
                    self.drop_batch(back.len());
                    return;
                }
            }
        }
    }

    fn drop_batch(&self, n: usize) {
        self.counters
            .queue_dropped
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The user-space end of the transport.
pub enum Output {
    Ring(libbpf_rs::RingBuffer<'static>),
    Perf(libbpf_rs::PerfBuffer<'static>),
}

impl Output {
    /// Set up the transport's user-space end for `skel`'s maps. For the perf buffer this must
    /// come before the programs attach: a perf event array has nowhere to write until its
    /// perf buffers exist, and records written before would be lost.
    pub fn build(
        skel: &ProcessSkel<'_>,
        opts: &ProbeOptions,
        pending: &SharedPending,
    ) -> Result<Output> {
        let p = pending.clone();
        if opts.transport == Transport::Perf {
            // the ring buffer's bytes, shared out among the CPUs' perf buffers
            let ncpu = libbpf_rs::num_possible_cpus().unwrap_or(1).max(1);
            let page = procfs::page_size() as usize;
            let per_cpu = (opts.ring_buffer_bytes as usize / ncpu / page).max(8);
            let pages = 1usize << per_cpu.ilog2();
            let lost = pending.borrow().counters.clone();
            let perf = libbpf_rs::PerfBufferBuilder::new(&skel.maps.events_perf)
                .pages(pages)
                .sample_cb(move |_cpu, data: &[u8]| p.borrow_mut().record(data))
                .lost_cb(move |_cpu, n| {
                    lost.perf_lost.fetch_add(n, Ordering::Relaxed);
                })
                .build()
                .context("setting up the perf buffers")?;
            return Ok(Output::Perf(perf));
        }
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        builder
            .add(&skel.maps.events, move |data: &[u8]| {
                p.borrow_mut().record(data);
                0
            })
            .context("setting up the ring buffer")?;
        Ok(Output::Ring(
            builder.build().context("setting up the ring buffer")?,
        ))
    }

    fn poll(&self) -> libbpf_rs::Result<()> {
        match self {
            Output::Ring(r) => r.poll(POLL_INTERVAL).and_then(|()| r.consume()),
            Output::Perf(p) => p.poll(POLL_INTERVAL),
        }
    }

    fn consume(&self) -> libbpf_rs::Result<()> {
        match self {
            Output::Ring(r) => r.consume(),
            Output::Perf(p) => p.consume(),
        }
    }
}

/// Collect records until `stop`, then deliver what is already in the buffer. The probes wake
/// the consumer only when the ring is filling up (see wakeup_flags in bpf/common.bpf.h);
/// otherwise records are collected every POLL_INTERVAL.
pub fn run(output: &Output, pending: &SharedPending, stop: &AtomicBool, pause: Option<&Path>) {
    while !stop.load(Ordering::Acquire) {
        if pause.is_some_and(Path::exists) {
            std::thread::sleep(POLL_INTERVAL);
            continue;
        }
        if let Err(e) = output.poll() {
            if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                tracing::error!("polling the kernel buffer failed: {e}");
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        pending.borrow_mut().flush();
    }
    let _ = output.consume();
    pending.borrow_mut().flush();
}
