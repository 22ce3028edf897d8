//! `osquery-ebpf check`: what this host offers and what the extension would use, answered by
//! loading and attaching the probes for real (and detaching them again), without serving
//! osquery. For operators before a rollout, by hand or from a fleet script (`--json`).

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::Settings;
use crate::extension::{ExitError, EXIT_OK, EXIT_PROBES};
use crate::probes::{self, HookSet, ProgramStatus};
use crate::stats::Counters;

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// One JSON object on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

/// What was found, in the order it is printed.
struct Report {
    facts: Vec<(&'static str, String)>,
    programs: Vec<ProgramStatus>,
    /// The hook set of each table, for scripts ("trampoline", "tracepoint", "none").
    hooks: Option<(String, String)>,
    /// Start-up status and what it means: 0 when both tables would work.
    status: i32,
    verdict: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Facts that need nothing loaded (read before loading: loading may mount tracefs).
fn host_facts(settings: &Settings) -> Vec<(&'static str, String)> {
    let uname = nix::sys::utsname::uname().ok();
    let os_text =
        |v: Option<&std::ffi::OsStr>| v.map_or(String::new(), |s| s.to_string_lossy().into_owned());
    let btf = match &settings.probes.btf_path {
        Some(p) => format!("{} (btf_path)", p.display()),
        None if Path::new("/sys/kernel/btf/vmlinux").exists() => "/sys/kernel/btf/vmlinux".into(),
        None => "missing: no /sys/kernel/btf/vmlinux and no btf_path".into(),
    };
    let tracefs = if Path::new("/sys/kernel/tracing/events").exists() {
        "mounted at /sys/kernel/tracing".to_string()
    } else if Path::new("/sys/kernel/debug/tracing/events").exists() {
        "mounted at /sys/kernel/debug/tracing".to_string()
    } else {
        "not mounted (the tracepoint set mounts it at /sys/kernel/tracing)".to_string()
    };
    let privileges = if nix::unistd::geteuid().is_root() {
        "root".to_string()
    } else {
        format!("uid {} (not root)", nix::unistd::geteuid())
    };
    vec![
        ("kernel", os_text(uname.as_ref().map(|u| u.release()))),
        ("architecture", os_text(uname.as_ref().map(|u| u.machine()))),
        ("btf", btf),
        ("tracefs", tracefs),
        ("privileges", privileges),
        (
            "lockdown",
            read_trimmed("/sys/kernel/security/lockdown")
                .unwrap_or_else(|| "unknown (/sys/kernel/security/lockdown cannot be read)".into()),
        ),
        (
            "cgroup_v2",
            crate::filters::cgroup2_root()
                .map_or("not mounted".into(), |p| p.display().to_string()),
        ),
    ]
}

fn set_name(set: Option<HookSet>) -> &'static str {
    match set {
        Some(HookSet::Trampoline) => "trampoline",
        Some(HookSet::Tracepoint) => "tracepoint",
        None => "tp_btf (both sets)",
    }
}

fn examine(settings: &Settings) -> Report {
    let mut facts = host_facts(settings);
    // the probes, loaded and attached as the extension would; dropped (detached) at once
    let (tx, _rx) = crossbeam_channel::bounded(1);
    match probes::start(&settings.probes, tx, Arc::new(Counters::default())) {
        Ok(mut p) => {
            p.stop();
            facts.push((
                "transport",
                match p.transport {
                    probes::Transport::Perf => "perf buffer".into(),
                    _ => "ring buffer".into(),
                },
            ));
            facts.push(("hooks", p.hooks.to_string()));
            let failed: Vec<&str> = p
                .programs
                .iter()
                .filter(|s| s.error.is_some())
                .map(|s| s.name.as_str())
                .collect();
            let (status, verdict) = if failed.is_empty() {
                (EXIT_OK, "both tables would work".to_string())
            } else {
                (
                    EXIT_PROBES,
                    format!(
                        "the extension would start, but without {}: their rows would be missing",
                        failed.join(", ")
                    ),
                )
            };
            Report {
                facts,
                programs: p.programs.clone(),
                hooks: Some((
                    p.hooks.process.name().into(),
                    p.hooks.socket.map_or("none", HookSet::name).into(),
                )),
                status,
                verdict,
            }
        }
        Err(e) => {
            let e = ExitError::from(e);
            Report {
                facts,
                programs: Vec::new(),
                hooks: None,
                status: e.code,
                verdict: format!("the extension would not start: {:#}", e.error),
            }
        }
    }
}

fn text(r: &Report) -> String {
    let mut out = String::from("osquery-ebpf check\n");
    for (k, v) in &r.facts {
        out.push_str(&format!("{k:<13} {v}\n"));
    }
    if !r.programs.is_empty() {
        let ok = r.programs.iter().filter(|p| p.error.is_none()).count();
        out.push_str(&format!(
            "programs      {ok} attached, {} not\n",
            r.programs.len() - ok
        ));
        for p in &r.programs {
            let state = p.error.as_deref().unwrap_or("attached");
            out.push_str(&format!(
                "  {:<22} {:<18} {state}\n",
                p.name,
                set_name(p.set)
            ));
        }
    }
    out.push_str(&format!(
        "verdict       {} (status {})\n",
        r.verdict, r.status
    ));
    out
}

fn to_json(r: &Report) -> Value {
    let mut obj = serde_json::Map::new();
    for (k, v) in &r.facts {
        obj.insert((*k).into(), v.clone().into());
    }
    obj.insert(
        "programs".into(),
        r.programs
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "hooks": set_name(p.set),
                    "attached": p.error.is_none(),
                    "error": p.error,
                })
            })
            .collect(),
    );
    if let Some((process, socket)) = &r.hooks {
        obj.insert("process_hooks".into(), process.clone().into());
        obj.insert("socket_hooks".into(), socket.clone().into());
    }
    obj.insert("status".into(), r.status.into());
    obj.insert("verdict".into(), r.verdict.clone().into());
    Value::Object(obj)
}

/// Print the report; the result is the exit status (0: both tables would work; else the
/// start-up status of the first blocking problem, 7 for a program that would be missing).
pub fn run(settings: &Settings, args: &CheckArgs) -> i32 {
    let report = examine(settings);
    let out = if args.json {
        to_json(&report).to_string() + "\n"
    } else {
        text(&report)
    };
    // a closed pipe (`check | head`) is not an error of the check
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    report.status
}
