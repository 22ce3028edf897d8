//! Opening, loading and attaching the probe objects.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::MapCore;

use super::hooks::{self, HookSet};
use super::options::{ProbeOptions, TestHooks, Transport};
use super::preflight::object_builder;
use super::{startup_error, ProgramStatus, StartupKind};
use crate::filters::FilterMaps;
use crate::process_skel::{ProcessSkel, ProcessSkelBuilder};
use crate::socket_skel::{SocketSkel, SocketSkelBuilder};

/// Programs libbpf reported as failing to load, collected while an object loads.
static LOAD_FAILURES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// While set, libbpf's warnings are logged at debug level: the feature probe's failure is an
/// expected answer, not a problem (hooks.rs reports it in one line).
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The program a libbpf message says failed to load ("prog 'NAME': failed to load: -22").
fn failed_program(msg: &str) -> Option<String> {
    let (_, rest) = msg.split_once("prog '")?;
    let (name, tail) = rest.split_once("': ")?;
    tail.starts_with("failed to load").then(|| name.to_string())
}

/// Route libbpf's own messages into tracing, noting the programs that fail to load.
pub fn libbpf_print(level: libbpf_rs::PrintLevel, msg: String) {
    let msg = msg.trim_end();
    if let Some(name) = failed_program(msg) {
        if let Ok(mut f) = LOAD_FAILURES.lock() {
            f.push(name);
        }
    }
    let quiet = QUIET.load(std::sync::atomic::Ordering::Relaxed);
    match level {
        libbpf_rs::PrintLevel::Warn if quiet => tracing::debug!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Info => tracing::debug!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Debug => tracing::trace!(target: "libbpf", "{msg}"),
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

/// Programs a table cannot do without; the others (syscall entries, failed execs, single
/// socket calls) are left out on a kernel that rejects them, and their rows go missing or lose
/// their entry time.
const ESSENTIAL_PROGRAMS: &[&str] = &["on_exec", "on_fork", "on_exit"];

/// A loaded object and the programs left out of it, with why.
pub type LoadedObject<S> = (S, Vec<(String, String)>);

/// Load an object, leaving out the non-essential programs this kernel rejects: each attempt
/// opens a fresh object (`attempt` gets the names to leave out), and a failure names its
/// programs in libbpf's log.
fn load_leaving_out<S>(
    what: &str,
    mut attempt: impl FnMut(&[String]) -> Result<Result<S, libbpf_rs::Error>>,
) -> Result<LoadedObject<S>> {
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

/// Test hook: break the programs `test.fail_probes` names, as a kernel that rejects them
/// would (an XDP program may not call the tracing helpers they use).
pub fn break_for_test(obj: &mut libbpf_rs::OpenObject, test: &TestHooks) {
    for mut prog in obj.progs_mut() {
        if test.fails(&prog.name().to_string_lossy()) {
            prog.set_prog_type(libbpf_rs::ProgramType::Xdp);
        }
    }
}

/// Load `set`'s programs only, and none of `names`.
fn choose_programs(obj: &mut libbpf_rs::OpenObject, set: HookSet, names: &[String]) {
    hooks::select(obj, set);
    for mut prog in obj.progs_mut() {
        if names.contains(&prog.name().to_string_lossy().into_owned()) {
            prog.set_autoload(false);
        }
    }
}

pub fn load_process(
    opts: &ProbeOptions,
    set: HookSet,
) -> Result<LoadedObject<ProcessSkel<'static>>> {
    let ncpu = libbpf_rs::num_possible_cpus().context("counting possible CPUs")? as u32;
    let ncpu = ncpu.max(1);
    let (skel, left_out) = load_leaving_out("process", |left_out| {
        let builder = ProcessSkelBuilder {
            obj_builder: object_builder(opts.btf_path.as_deref())?,
        };
        let mut open = builder
            .open(object_storage())
            .context("opening the process probes")?;
        // one scratch area per CPU for each kind of program (enum scratch_slot)
        open.maps
            .exec_scratch
            .set_max_entries(2 * ncpu)
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
            rodata.nr_cpus = ncpu;
        }
        if opts.transport == Transport::Perf {
            // kernels before 5.8 cannot create it; the code that uses it is dead
            open.maps
                .events
                .set_autocreate(false)
                .context("leaving out the ring buffer")?;
        }
        choose_programs(open.open_object_mut(), set, left_out);
        break_for_test(open.open_object_mut(), &opts.test);
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
pub fn load_socket(
    opts: &ProbeOptions,
    set: HookSet,
    process: &ProcessSkel<'_>,
) -> Result<LoadedObject<SocketSkel<'static>>> {
    if opts.test.fails("socket") {
        anyhow::bail!("the socket probes were disabled by OSQUERY_EBPF_TEST_FAIL_PROBES");
    }
    let absent = hooks_absent(opts.btf_path.as_deref());
    load_leaving_out("socket", |left_out| {
        let builder = SocketSkelBuilder {
            obj_builder: object_builder(opts.btf_path.as_deref())?,
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
            rodata.nr_cpus = libbpf_rs::num_possible_cpus().unwrap_or(1).max(1) as u32;
        }
        let skip: Vec<String> = left_out.iter().chain(&absent).cloned().collect();
        choose_programs(open.open_object_mut(), set, &skip);
        break_for_test(open.open_object_mut(), &opts.test);
        Ok(open.load())
    })
}

/// Programs on a tracepoint this kernel does not have, or has with another prototype, which
/// are left out without a word of failure: the io_uring submission programs need the request
/// as the tracepoint's first argument, which `io_uring_submit_req` (6.3+) and
/// `io_uring_submit_sqe` (5.18 to 6.2) pass; before 5.18 no io_uring rows are made (see
/// on_uring_complete in bpf/socket.bpf.c). Read from the kernel's BTF (or btf_path's), where
/// each tracepoint's prototype is the type `btf_trace_<name>`; when that cannot be read,
/// libbpf decides.
fn hooks_absent(btf_path: Option<&std::path::Path>) -> Vec<String> {
    const NEEDS_REQUEST_FIRST: &[(&str, &str)] = &[
        ("on_uring_submit", "io_uring_submit_req"),
        ("on_uring_submit_sqe", "io_uring_submit_sqe"),
    ];
    let btf = match btf_path {
        Some(path) => libbpf_rs::btf::Btf::from_path(path),
        None => libbpf_rs::btf::Btf::from_vmlinux(),
    };
    let Ok(btf) = btf else {
        return Vec::new();
    };
    NEEDS_REQUEST_FIRST
        .iter()
        .filter(|(_, tp)| first_argument(&btf, tp).as_deref() != Some("io_kiocb"))
        .map(|(prog, tp)| {
            tracing::debug!("this kernel's {tp} does not pass the request: {prog} is not loaded");
            prog.to_string()
        })
        .collect()
}

/// The struct that tracepoint `name`'s first argument points to, from its BTF prototype
/// (`typedef void (*btf_trace_<name>)(void *, struct io_kiocb *req, ...)`); None when the
/// kernel has no such tracepoint or the argument is not a struct pointer.
fn first_argument(btf: &libbpf_rs::btf::Btf, name: &str) -> Option<String> {
    use libbpf_rs::btf::{types::FuncProto, BtfType};
    let typedef: BtfType = btf.type_by_name(&format!("btf_trace_{name}"))?;
    let pointer = typedef.skip_mods_and_typedefs();
    let proto = FuncProto::try_from(pointer.next_type()?.skip_mods_and_typedefs()).ok()?;
    // parameter 0 is the tracepoint's own `void *`
    let arg: BtfType = btf.type_by_id(proto.get(1)?.ty)?;
    let pointee = arg
        .skip_mods_and_typedefs()
        .next_type()?
        .skip_mods_and_typedefs();
    Some(pointee.name()?.to_string_lossy().into_owned())
}

/// Attach every loaded program of `obj` on its own: one that fails is logged and reported,
/// the rest keep working. Returns the links and each program's status (those left out
/// included).
pub fn attach_each(
    obj: &libbpf_rs::Object,
    left_out: &[(String, String)],
) -> (Vec<libbpf_rs::Link>, Vec<ProgramStatus>) {
    let mut links = Vec::new();
    let mut status = Vec::new();
    let set_of = |obj: &libbpf_rs::Object, name: &str| {
        obj.progs()
            .find(|p| p.name().to_string_lossy() == name)
            .and_then(|p| hooks::set_of(&p.section().to_string_lossy()))
    };
    for (name, why) in left_out {
        status.push(ProgramStatus {
            name: name.clone(),
            set: set_of(obj, name),
            error: Some(why.clone()),
        });
    }
    for prog in obj.progs_mut() {
        if !prog.autoload() {
            continue;
        }
        let name = prog.name().to_string_lossy().into_owned();
        let set = hooks::set_of(&prog.section().to_string_lossy());
        let error = match prog.attach() {
            Ok(link) => {
                links.push(link);
                None
            }
            Err(e) => {
                tracing::warn!(program = %name, "probe did not attach, its events will be missing: {e}");
                Some(e.to_string())
            }
        };
        status.push(ProgramStatus { name, set, error });
    }
    (links, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (needs the kernel's BTF, as the extension itself does)
    #[test]
    fn a_tracepoint_prototype_names_its_first_argument() {
        let btf = libbpf_rs::btf::Btf::from_vmlinux().expect("kernel BTF");
        // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
        assert_eq!(
            first_argument(&btf, "sched_process_exec").as_deref(),
            Some("task_struct")
        );
        assert_eq!(first_argument(&btf, "no_such_tracepoint"), None);
        // exactly one io_uring submission program is kept on a kernel with io_uring rows
        // (6.3+ this one, 5.18 to 6.2 the other)
        let absent = hooks_absent(None);
        assert_eq!(absent.len(), 1, "{absent:?}");
    }
}
