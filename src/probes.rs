//! Loading the precompiled CO-RE probes, attaching them, and the ring-buffer consumer thread.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use crossbeam_channel::{SendTimeoutError, Sender};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::event::{decode, Event};
use crate::filters::{FilterMaps, Filters};
use crate::process_skel::{types, ProcessSkel, ProcessSkelBuilder};
use crate::socket_skel::{SocketSkel, SocketSkelBuilder};
use crate::stats::Counters;

/// Why the probes could not start; each has its own exit status (see `extension::EXIT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupKind {
    /// Not root, and without CAP_BPF and CAP_PERFMON.
    Privileges,
    /// No kernel BTF, or the btf_path file is unusable.
    NoBtf,
    /// tracefs is not mounted and could not be mounted.
    NoTracefs,
    /// The kernel refused the process probes (or none of them attached).
    Probes,
}

impl std::fmt::Display for StartupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartupKind::Privileges => "insufficient privileges",
            StartupKind::NoBtf => "no kernel BTF",
            StartupKind::NoTracefs => "no tracefs",
            StartupKind::Probes => "probes not loaded",
        })
    }
}

impl std::error::Error for StartupKind {}

/// An error of kind `kind` with `msg` as its message.
fn startup_error(kind: StartupKind, msg: String) -> anyhow::Error {
    anyhow::Error::new(kind).context(msg)
}

/// How often the consumer collects records when the probes did not wake it (they do when the
/// ring is 1/8 full). 100 ms rather than 10 ms: larger batches took the extension's CPU per
/// event in an exec storm from 3.9 to 1.3-1.5 us; a row is in its table within ~100 ms.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The compile-time argv capacity of a record (`ARGV_CAP` in bpf/events.h) less its NUL.
pub const ARGV_MAX_LIMIT: u32 = 65535;

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOptions {
    /// argv bytes captured per exec.
    pub argv_max: u32,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
    /// Threads that can be inside a traced syscall at once.
    pub entries_max: u32,
    /// A BTF file for kernels without /sys/kernel/btf/vmlinux.
    pub btf_path: Option<PathBuf>,
    /// Events left out in the kernel.
    pub filters: Filters,
    /// How records leave the kernel.
    pub transport: Transport,
}

/// How records leave the kernel: the BPF ring buffer (Linux 5.8+), or per-CPU perf buffers
/// (every kernel with BPF; records from different CPUs may arrive out of order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The ring buffer when the kernel has it, else the perf buffer.
    #[default]
    Auto,
    #[serde(rename = "ringbuf")]
    #[value(name = "ringbuf")]
    RingBuf,
    Perf,
}

impl Transport {
    /// The transport to use on this kernel.
    pub fn resolve(self) -> Transport {
        match self {
            Transport::Auto => {
                if libbpf_rs::MapType::RingBuf.is_supported().unwrap_or(false) {
                    Transport::RingBuf
                } else {
                    Transport::Perf
                }
            }
            t => t,
        }
    }
}

/// The argv bound with the perf buffer: a perf sample holds at most 64 KiB, and an exec
/// record carries two paths of up to PATH_CAP bytes besides argv.
pub const PERF_ARGV_MAX: u32 = 57_000;

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            argv_max: 16384,
            ring_buffer_bytes: 16 << 20,
            entries_max: 16384,
            btf_path: None,
            filters: Filters::default(),
            transport: Transport::Auto,
        }
    }
}

/// Route libbpf's own messages into tracing.
/// Programs libbpf reported as failing to load, collected while an object loads.
static LOAD_FAILURES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The program a libbpf message says failed to load ("prog 'NAME': failed to load: -22").
fn failed_program(msg: &str) -> Option<String> {
    let (_, rest) = msg.split_once("prog '")?;
    let (name, tail) = rest.split_once("': ")?;
    tail.starts_with("failed to load").then(|| name.to_string())
}

fn libbpf_print(level: libbpf_rs::PrintLevel, msg: String) {
    let msg = msg.trim_end();
    if let Some(name) = failed_program(msg) {
        if let Ok(mut f) = LOAD_FAILURES.lock() {
            f.push(name);
        }
    }
    match level {
        libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Info => tracing::debug!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Debug => tracing::trace!(target: "libbpf", "{msg}"),
    }
}

/// Classic `tp/` attachment finds tracepoint ids in tracefs, which is not always mounted.
fn ensure_tracefs() -> Result<()> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    tracing::info!("tracefs is not mounted; mounting it at /sys/kernel/tracing");
    nix::mount::mount(
        Some("tracefs"),
        tracing,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        startup_error(
            StartupKind::NoTracefs,
            format!(
                "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({e}); \
                 mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
            ),
        )
    })
}

pub fn check_options(opts: &ProbeOptions) -> Result<()> {
    if opts.argv_max == 0 || opts.argv_max > ARGV_MAX_LIMIT {
        bail!(
            "argv_max: must be between 1 and {ARGV_MAX_LIMIT}, not {}",
            opts.argv_max
        );
    }
    let ring = opts.ring_buffer_bytes;
    if !ring.is_power_of_two() || ring < 4096 {
        bail!("ring_buffer_size: must be a power of two of at least 4096 bytes, not {ring}");
    }
    if opts.entries_max == 0 {
        bail!("entries_max: must be positive");
    }
    opts.filters.check()
}

/// Sums of the per-CPU kernel counters, indexed by `enum stat_id`.
#[derive(Clone)]
pub struct KernelStats {
    map: Arc<MapHandle>,
}

impl KernelStats {
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

/// The running probes: a consumer thread owns the loaded object and drains the ring buffer.
pub struct Probes {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub kernel_stats: KernelStats,
    /// Programs that attached, and those that did not (with the reason).
    pub attached: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// The transport in use (never Auto).
    pub transport: Transport,
}

impl Probes {
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Loaded {
    stats: MapHandle,
    attached: Vec<String>,
    failed: Vec<(String, String)>,
}

/// Load and attach the process probes and start the consumer thread, which sends decoded
/// events to `tx`. Returns once the probes are attached, or with the load error.
/// Loading and attaching needs CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON (root has all).
fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(startup_error(
        StartupKind::Privileges,
        "osquery-ebpf needs root (or CAP_BPF and CAP_PERFMON) to load its BPF programs; \
         run it as root, as osqueryd does"
            .into(),
    ))
}

pub fn start(opts: &ProbeOptions, tx: Sender<Batch>, counters: Arc<Counters>) -> Result<Probes> {
    check_options(opts)?;
    check_privileges()?;
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, libbpf_print)));
    ensure_tracefs()?;

    let mut opts = opts.clone();
    opts.transport = opts.transport.resolve();
    if opts.transport == Transport::Perf && opts.argv_max > PERF_ARGV_MAX {
        tracing::warn!(
            "argv_max {} is more than a perf-buffer record holds: {PERF_ARGV_MAX} is used",
            opts.argv_max
        );
        opts.argv_max = PERF_ARGV_MAX;
    }
    let transport = opts.transport;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<Loaded>>(1);
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ringbuf".into())
        .spawn(move || consumer(opts, tx, counters, thread_stop, ready_tx))
        .context("spawning the ring-buffer consumer thread")?;
    let loaded = ready_rx
        .recv()
        .context("the ring-buffer consumer thread ended before loading the probes")?;
    match loaded {
        Ok(l) => Ok(Probes {
            stop,
            thread: Some(thread),
            kernel_stats: KernelStats {
                map: Arc::new(l.stats),
            },
            attached: l.attached,
            failed: l.failed,
            transport,
        }),
        Err(e) => {
            let _ = thread.join();
            Err(e)
        }
    }
}

fn consumer(
    opts: ProbeOptions,
    tx: Sender<Batch>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    ready: Sender<Result<Loaded>>,
) {
    let (process, process_left_out) = match load_process(&opts) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // The transport's user-space end first: a perf event array has nowhere to write until
    // its perf buffers exist, and records written before would be lost.
    let pending = std::rc::Rc::new(std::cell::RefCell::new(Pending {
        batch: Vec::with_capacity(64),
        tx,
        counters: counters.clone(),
        stop: stop.clone(),
    }));
    let output = match Output::build(&process, &opts, &pending) {
        Ok(o) => o,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // A socket object that does not load leaves the process table working.
    let socket = load_socket(&opts, &process).map_err(|e| {
        tracing::error!("socket events are unavailable: {e:#}");
        format!("{e:#}")
    });
    let mut att = Attached {
        links: Vec::new(),
        attached: Vec::new(),
        failed: Vec::new(),
    };
    attach_each(process.object(), &process_left_out, &mut att);
    if att.attached.is_empty() {
        let _ = ready.send(Err(startup_error(
            StartupKind::Probes,
            format!("no process probe could be attached: {:?}", att.failed),
        )));
        return;
    }
    match &socket {
        Ok((s, left_out)) => attach_each(s.object(), left_out, &mut att),
        Err(e) => att.failed.push(("socket_object".into(), e.clone())),
    }
    let Attached {
        links: _links,
        attached,
        failed,
    } = att;
    let skel = &process;
    let muted = crate::filters::seed_muted(&opts.filters, &skel.maps.muted);
    if !opts.filters.is_empty() {
        tracing::info!(
            muted_processes = muted,
            "exclude settings in force: uids {:?}, comms {:?}, cgroups {:?}, paths {:?}",
            opts.filters.uids,
            opts.filters.comms,
            opts.filters.cgroups,
            opts.filters.paths
        );
    }

    let stats = match MapHandle::try_from(&skel.maps.stats) {
        Ok(h) => h,
        Err(e) => {
            let _ = ready.send(Err(anyhow::Error::new(e).context("opening the stats map")));
            return;
        }
    };
    if ready
        .send(Ok(Loaded {
            stats,
            attached,
            failed,
        }))
        .is_err()
    {
        return;
    }
    // The probes wake us only when the ring is filling up (see wakeup_flags in
    // bpf/common.bpf.h); otherwise records are collected every POLL_INTERVAL.
    // Test hook: while this file exists the consumer stalls, as a slow consumer would.
    let pause = std::env::var_os("OSQUERY_EBPF_TEST_PAUSE_FILE").map(std::path::PathBuf::from);
    while !stop.load(Ordering::Acquire) {
        if pause.as_deref().is_some_and(Path::exists) {
            std::thread::sleep(POLL_INTERVAL);
            continue;
        }
        if let Err(e) = output.poll() {
            if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                tracing::error!("polling the {:?} transport failed: {e}", opts.transport);
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        pending.borrow_mut().flush();
    }
    // Deliver what is already in the ring before the probes are detached.
    let _ = output.consume();
    pending.borrow_mut().flush();
}

/// Records decoded in one pass over the kernel buffer, handed to the pipeline together: one
/// channel operation and one wake-up per pass instead of one per record.
pub type Batch = Vec<Event>;

/// Records a batch holds at most; a fuller pass is sent in several.
pub const BATCH_MAX: usize = 1024;

/// The consumer's side of the queue: the batch being filled, and where it goes.
struct Pending {
    batch: Batch,
    tx: Sender<Batch>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl Pending {
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
enum Output<'a> {
    Ring(libbpf_rs::RingBuffer<'a>),
    Perf(libbpf_rs::PerfBuffer<'a>),
}

impl<'a> Output<'a> {
    fn build(
        skel: &'a ProcessSkel<'_>,
        opts: &ProbeOptions,
        pending: &std::rc::Rc<std::cell::RefCell<Pending>>,
    ) -> Result<Output<'a>> {
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

struct Attached {
    links: Vec<libbpf_rs::Link>,
    attached: Vec<String>,
    failed: Vec<(String, String)>,
}

/// Attach every program of `obj` on its own: one that fails is logged and counted, the rest
/// keep working.
fn attach_each(obj: &libbpf_rs::Object, left_out: &[(String, String)], into: &mut Attached) {
    into.failed.extend(left_out.iter().cloned());
    for prog in obj.progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        if left_out.iter().any(|(n, _)| *n == name) {
            continue;
        }
        match prog.attach() {
            Ok(link) => {
                into.links.push(link);
                into.attached.push(name);
            }
            Err(e) => {
                tracing::warn!(program = %name, "probe did not attach, its events will be missing: {e}");
                into.failed.push((name, e.to_string()));
            }
        }
    }
}

fn load_error(what: &str, e: libbpf_rs::Error) -> anyhow::Error {
    let hint = if nix::unistd::geteuid().is_root() {
        ""
    } else {
        " (loading BPF programs needs root, or CAP_BPF and CAP_PERFMON)"
    };
    startup_error(
        StartupKind::Probes,
        format!("loading the {what} probes into the kernel failed{hint}: {e}"),
    )
}

/// A btf_path file must be raw BTF (as in /sys/kernel/btf/vmlinux or from BTFHub) or an ELF
/// file with a .BTF section (a vmlinux image), as libbpf accepts.
fn check_btf_file(btf: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    let read =
        std::fs::File::open(btf).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    if let Err(e) = read {
        return Err(startup_error(
            StartupKind::NoBtf,
            format!("btf_path: cannot read the BTF file {}: {e}", btf.display()),
        ));
    }
    let raw_btf = magic[..2] == 0xeb9f_u16.to_le_bytes() || magic[..2] == 0xeb9f_u16.to_be_bytes();
    if !raw_btf && magic != *b"\x7fELF" {
        return Err(startup_error(
            StartupKind::NoBtf,
            format!(
                "btf_path: {} is neither a BTF file nor an ELF image with BTF",
                btf.display()
            ),
        ));
    }
    Ok(())
}

fn object_builder(opts: &ProbeOptions) -> Result<libbpf_rs::ObjectBuilder> {
    let mut builder = libbpf_rs::ObjectBuilder::default();
    if let Some(btf) = &opts.btf_path {
        check_btf_file(btf)?;
        tracing::info!("CO-RE relocations use the BTF file {}", btf.display());
        builder
            .btf_custom_path(btf)
            .with_context(|| format!("using BTF file {}", btf.display()))?;
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(startup_error(
            StartupKind::NoBtf,
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); \
             pass a BTF file for it with --btf-path (see the README)"
                .into(),
        ));
    }
    Ok(builder)
}

/// Programs a table cannot do without; the others (syscall entries, failed execs, single
/// socket calls) are left out on a kernel that rejects them, and their rows go missing or lose
/// their entry time.
const ESSENTIAL_PROGRAMS: &[&str] = &["on_exec", "on_fork", "on_exit"];

/// Load an object, leaving out the non-essential programs this kernel rejects: each attempt
/// opens a fresh object (`attempt` gets the names to leave out), and a failure names its
/// programs in libbpf's log. Returns the loaded skeleton and the programs left out, with why.
fn load_leaving_out<S>(
    what: &str,
    mut attempt: impl FnMut(&[String]) -> Result<Result<S, libbpf_rs::Error>>,
) -> Result<(S, Vec<(String, String)>)> {
    let mut left_out: Vec<String> = Vec::new();
    loop {
        if let Ok(mut f) = LOAD_FAILURES.lock() {
            f.clear();
        }
        let err = match attempt(&left_out)? {
            Ok(skel) => {
                let why = "not loaded: this kernel rejected it (see the log)".to_string();
                let out = left_out.into_iter().map(|n| (n, why.clone())).collect();
                return Ok((skel, out));
            }
            Err(e) => e,
        };
        let mut failed: Vec<String> = LOAD_FAILURES
            .lock()
            .map(|mut f| f.drain(..).collect())
            .unwrap_or_default();
        failed.sort();
        failed.dedup();
        failed.retain(|n| !left_out.contains(n));
        if failed.is_empty()
            || failed
                .iter()
                .any(|n| ESSENTIAL_PROGRAMS.contains(&n.as_str()))
        {
            return Err(load_error(what, err));
        }
        for name in &failed {
            tracing::warn!(
                program = %name,
                "this kernel rejected the {what} probe {name}; loading the others without it: {err}"
            );
        }
        left_out.extend(failed);
    }
}

/// A fresh object's storage: the loaded programs live as long as the process.
fn object_storage() -> &'static mut MaybeUninit<libbpf_rs::OpenObject> {
    Box::leak(Box::new(MaybeUninit::uninit()))
}

fn leave_out(obj: &mut libbpf_rs::OpenObject, names: &[String]) {
    // Test hook: OSQUERY_EBPF_TEST_FAIL_PROBES names programs to break, as a kernel that
    // rejects them would (an XDP program may not call the tracing helpers they use).
    let broken = std::env::var("OSQUERY_EBPF_TEST_FAIL_PROBES").unwrap_or_default();
    for mut prog in obj.progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        if names.contains(&name) {
            prog.set_autoload(false);
        } else if broken.split(',').any(|b| b == name) {
            prog.set_prog_type(libbpf_rs::ProgramType::Xdp);
        }
    }
}

type LoadedObject<S> = (S, Vec<(String, String)>);

fn load_process(opts: &ProbeOptions) -> Result<LoadedObject<ProcessSkel<'static>>> {
    let ncpu = libbpf_rs::num_possible_cpus().context("counting possible CPUs")? as u32;
    let (skel, left_out) = load_leaving_out("process", |left_out| {
        let builder = ProcessSkelBuilder {
            obj_builder: object_builder(opts)?,
        };
        let mut open = builder
            .open(object_storage())
            .context("opening the process probes")?;
        open.maps
            .exec_scratch
            .set_max_entries(ncpu.max(1))
            .context("sizing the scratch map")?;
        open.maps
            .events
            .set_max_entries(opts.ring_buffer_bytes)
            .context("sizing the ring buffer")?;
        open.maps
            .entries
            .set_max_entries(opts.entries_max)
            .context("sizing the syscall entry map")?;
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.argv_max = opts.argv_max;
            rodata.filters = opts.filters.bits();
            rodata.use_perf = u32::from(opts.transport == Transport::Perf);
        }
        if opts.transport == Transport::Perf {
            // kernels before 5.8 cannot create it; the code that uses it is dead
            open.maps
                .events
                .set_autocreate(false)
                .context("leaving out the ring buffer")?;
        }
        leave_out(open.open_object_mut(), left_out);
        Ok(open.load())
    })?;
    crate::filters::install(
        &opts.filters,
        &FilterMaps {
            uids: &skel.maps.filter_uids,
            comms: &skel.maps.filter_comms,
            cgroups: &skel.maps.filter_cgroups,
            paths: &skel.maps.filter_paths,
            muted: &skel.maps.muted,
        },
    )?;
    Ok((skel, left_out))
}

/// The socket probes share the process probes' ring buffer, stats and entry maps, so that
/// every record travels through one ordered ring.
fn load_socket(
    opts: &ProbeOptions,
    process: &ProcessSkel<'_>,
) -> Result<LoadedObject<SocketSkel<'static>>> {
    // Test hook: make this object fail as a kernel without one of its hooks would.
    if std::env::var("OSQUERY_EBPF_TEST_FAIL_PROBES")
        .is_ok_and(|v| v.split(',').any(|p| p == "socket"))
    {
        bail!("the socket probes were disabled by OSQUERY_EBPF_TEST_FAIL_PROBES");
    }
    load_leaving_out("socket", |left_out| {
        let builder = SocketSkelBuilder {
            obj_builder: object_builder(opts)?,
        };
        let mut open = builder
            .open(object_storage())
            .context("opening the socket probes")?;
        if opts.transport == Transport::Perf {
            open.maps
                .events
                .set_autocreate(false)
                .context("leaving out the ring buffer")?;
        } else {
            open.maps
                .events
                .reuse_fd(process.maps.events.as_fd())
                .context("sharing the ring buffer")?;
        }
        for (map, shared) in [
            (&mut open.maps.events_perf, &process.maps.events_perf),
            (&mut open.maps.stats, &process.maps.stats),
            (&mut open.maps.entries, &process.maps.entries),
            (&mut open.maps.filter_uids, &process.maps.filter_uids),
            (&mut open.maps.filter_comms, &process.maps.filter_comms),
            (&mut open.maps.filter_cgroups, &process.maps.filter_cgroups),
            (&mut open.maps.muted, &process.maps.muted),
        ] {
            map.reuse_fd(shared.as_fd()).with_context(|| {
                format!(
                    "sharing the process probes' map {}",
                    shared.name().to_string_lossy()
                )
            })?;
        }
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.filters = opts.filters.bits();
            rodata.use_perf = u32::from(opts.transport == Transport::Perf);
        }
        leave_out(open.open_object_mut(), left_out);
        Ok(open.load())
    })
}
