//! The probes' lifecycle: options and preflight checks, the hook-set choice, loading and
//! attaching the precompiled CO-RE objects, and the consumer thread that reads the kernel
//! buffer.
//!
//! `start` spawns the consumer thread, which sets everything up (`set_up`), reports back, and
//! then reads records until stopped (`consume::run`); the loaded objects live on that thread.

mod consume;
pub mod hooks;
mod load;
mod options;
mod preflight;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use libbpf_rs::skel::Skel;

pub use consume::{Batch, KernelStats, BATCH_MAX};
pub use hooks::HookSet;
pub use options::{
    check_options, Hooks, ProbeOptions, TestHooks, Transport, ARGV_MAX_LIMIT, PERF_ARGV_MAX,
};

use crate::process_skel::ProcessSkel;
use crate::socket_skel::SocketSkel;
use crate::stats::Counters;
use consume::{Output, Pending, SharedPending};
use hooks::Choice;

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
    /// `hooks = trampoline` on a kernel where BPF trampolines do not work.
    NoTrampolines,
}

impl std::fmt::Display for StartupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartupKind::Privileges => "insufficient privileges",
            StartupKind::NoBtf => "no kernel BTF",
            StartupKind::NoTracefs => "no tracefs",
            StartupKind::Probes => "probes not loaded",
            StartupKind::NoTrampolines => "no BPF trampolines",
        })
    }
}

impl std::error::Error for StartupKind {}

/// An error of kind `kind` with `msg` as its message.
fn startup_error(kind: StartupKind, msg: String) -> anyhow::Error {
    anyhow::Error::new(kind).context(msg)
}

/// One program of the loaded objects: its hook set (None: the sched programs both sets use)
/// and, when it is not running, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramStatus {
    pub name: String,
    pub set: Option<HookSet>,
    pub error: Option<String>,
}

/// The hook set each table's probes use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookReport {
    pub process: HookSet,
    /// None when the socket probes are unavailable.
    pub socket: Option<HookSet>,
    pub why: String,
}

impl std::fmt::Display for HookReport {
    /// As the start-up log and `check` say it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} for the process table, {} for the socket table ({})",
            self.process,
            self.socket.map_or("none", HookSet::name),
            self.why
        )
    }
}

/// The running probes: a consumer thread owns the loaded objects and drains the kernel buffer.
pub struct Probes {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub kernel_stats: KernelStats,
    pub programs: Vec<ProgramStatus>,
    pub hooks: HookReport,
    /// The transport in use (never Auto).
    pub transport: Transport,
}

impl Probes {
    pub fn attached(&self) -> usize {
        self.programs.iter().filter(|p| p.error.is_none()).count()
    }

    pub fn failed(&self) -> usize {
        self.programs.len() - self.attached()
    }

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

/// Load and attach the probes and start the consumer thread, which sends decoded events to
/// `tx`. Returns once the probes are attached, or with the first blocking problem.
pub fn start(opts: &ProbeOptions, tx: Sender<Batch>, counters: Arc<Counters>) -> Result<Probes> {
    check_options(opts)?;
    preflight::check_privileges()?;
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, load::libbpf_print)));
    if let Some(btf) = &opts.btf_path {
        tracing::info!("CO-RE relocations use the BTF file {}", btf.display());
    }

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
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<Report>>(1);
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ringbuf".into())
        .spawn(move || {
            let pending = Pending::shared(tx, counters, thread_stop.clone());
            let running = match set_up(&opts, &pending) {
                Ok((running, report)) => {
                    if ready_tx.send(Ok(report)).is_err() {
                        return;
                    }
                    running
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            consume::run(
                &running.output,
                &pending,
                &thread_stop,
                opts.test.pause_file.as_deref(),
            );
        })
        .context("spawning the ring-buffer consumer thread")?;
    let report = ready_rx
        .recv()
        .context("the ring-buffer consumer thread ended before loading the probes")?;
    match report {
        Ok(r) => Ok(Probes {
            stop,
            thread: Some(thread),
            kernel_stats: r.kernel_stats,
            programs: r.programs,
            hooks: r.hooks,
            transport,
        }),
        Err(e) => {
            let _ = thread.join();
            Err(e)
        }
    }
}

/// What the consumer thread owns while the probes run; dropping it detaches them.
struct Running {
    output: Output,
    _links: Vec<libbpf_rs::Link>,
    _socket: Option<SocketSkel<'static>>,
    _process: ProcessSkel<'static>,
}

/// What set-up reports to `start`.
struct Report {
    kernel_stats: KernelStats,
    programs: Vec<ProgramStatus>,
    hooks: HookReport,
}

/// Choose the hooks, load and attach both objects, seed the filters.
fn set_up(opts: &ProbeOptions, pending: &SharedPending) -> Result<(Running, Report)> {
    let choice = hooks::choose(opts.hooks, opts.btf_path.as_deref(), &opts.test)?;
    let ((process, output), mut links, mut programs, process_set) =
        first_complete("process", &choice, |set| {
            if set == HookSet::Tracepoint {
                preflight::ensure_tracefs()?;
            }
            let (skel, left_out) = load::load_process(opts, set)?;
            // the transport's user-space end before anything attaches (see Output::build)
            let output = Output::build(&skel, opts, pending)?;
            let (links, status) = load::attach_each(skel.object(), &left_out);
            Ok(((skel, output), links, status))
        })?;
    if programs.iter().all(|p| p.error.is_some()) {
        return Err(startup_error(
            StartupKind::Probes,
            format!("no process probe could be attached: {programs:?}"),
        ));
    }
    // A socket object that does not load leaves the process table working.
    let socket = first_complete("socket", &choice, |set| {
        if set == HookSet::Tracepoint {
            preflight::ensure_tracefs()?;
        }
        let (skel, left_out) = load::load_socket(opts, set, &process)?;
        let (links, status) = load::attach_each(skel.object(), &left_out);
        Ok((skel, links, status))
    });
    let (socket, socket_set) = match socket {
        Ok((skel, l, status, set)) => {
            links.extend(l);
            programs.extend(status);
            (Some(skel), Some(set))
        }
        Err(e) => {
            tracing::error!("socket events are unavailable: {e:#}");
            programs.push(ProgramStatus {
                name: "socket_object".into(),
                set: None,
                error: Some(format!("{e:#}")),
            });
            (None, None)
        }
    };
    let hooks = HookReport {
        process: process_set,
        socket: socket_set,
        why: choice.why.clone(),
    };
    tracing::info!("hooks: {hooks}");

    let muted = crate::filters::seed_muted(&opts.filters, &process.maps.muted);
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
    let kernel_stats = KernelStats::new(&process)?;
    Ok((
        Running {
            output,
            _links: links,
            _socket: socket,
            _process: process,
        },
        Report {
            kernel_stats,
            programs,
            hooks,
        },
    ))
}

/// Links and program statuses of one attempt at loading an object with a hook set.
type Attempt<T> = (T, Vec<libbpf_rs::Link>, Vec<ProgramStatus>);

/// Load and attach an object with the first of `choice`'s candidate sets that works. A
/// trampoline attempt that is not whole (a program left out or not attached) is dropped for
/// the next candidate when there is one (hooks = auto); the last candidate is taken as it is.
fn first_complete<T>(
    what: &str,
    choice: &Choice,
    mut attempt: impl FnMut(HookSet) -> Result<Attempt<T>>,
) -> Result<(T, Vec<libbpf_rs::Link>, Vec<ProgramStatus>, HookSet)> {
    let candidates = choice.candidates();
    for (i, &set) in candidates.iter().enumerate() {
        let last = i + 1 == candidates.len();
        match attempt(set) {
            Ok((obj, links, status)) => {
                let missing: Vec<&str> = status
                    .iter()
                    .filter(|p| p.error.is_some() && p.set == Some(set))
                    .map(|p| p.name.as_str())
                    .collect();
                if last || missing.is_empty() {
                    return Ok((obj, links, status, set));
                }
                tracing::warn!(
                    "the {what} probes' {set} hooks are incomplete on this kernel \
                     ({missing:?} did not load or attach); using the next hook set"
                );
            }
            Err(e) if !last => {
                tracing::warn!(
                    "the {what} probes' {set} hooks failed ({e:#}); using the next hook set"
                );
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("candidates() is never empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, set: Option<HookSet>, ok: bool) -> ProgramStatus {
        ProgramStatus {
            name: name.into(),
            set,
            error: (!ok).then(|| "rejected".to_string()),
        }
    }

    fn auto() -> Choice {
        Choice {
            set: HookSet::Trampoline,
            why: String::new(),
            may_fall_back: true,
        }
    }

    #[test]
    fn an_incomplete_trampoline_set_falls_back_under_auto_only() {
        let attempt = |set: HookSet| -> Result<Attempt<HookSet>> {
            let ok = set == HookSet::Tracepoint;
            Ok((
                set,
                Vec::new(),
                vec![
                    status("on_exec", None, true),
                    status("exit_connect", Some(set), ok),
                ],
            ))
        };
        let (obj, _, st, set) = first_complete("test", &auto(), attempt).expect("loads");
        assert_eq!((obj, set), (HookSet::Tracepoint, HookSet::Tracepoint));
        assert!(st.iter().all(|p| p.error.is_none()));
        // forced: the trampoline set as it loaded, degraded
        let forced = Choice {
            may_fall_back: false,
            ..auto()
        };
        let (_, _, st, set) = first_complete("test", &forced, attempt).expect("loads");
        assert_eq!(set, HookSet::Trampoline);
        assert_eq!(st.iter().filter(|p| p.error.is_some()).count(), 1);
    }

    #[test]
    fn a_failed_trampoline_load_tries_tracepoints_and_the_last_error_stands() {
        let mut tried = Vec::new();
        let r = first_complete("test", &auto(), |set| -> Result<Attempt<()>> {
            tried.push(set);
            anyhow::bail!("{set} failed")
        });
        assert_eq!(tried, [HookSet::Trampoline, HookSet::Tracepoint]);
        let err = format!("{:#}", r.expect_err("both fail"));
        assert!(err.contains("tracepoint failed"), "{err}");
        // a complete trampoline set is taken at once
        let mut tried = Vec::new();
        let (_, _, _, set) = first_complete("test", &auto(), |set| -> Result<Attempt<()>> {
            tried.push(set);
            Ok((
                (),
                Vec::new(),
                vec![status("exit_connect", Some(set), true)],
            ))
        })
        .expect("loads");
        assert_eq!((set, tried.len()), (HookSet::Trampoline, 1));
    }
}
