//! The two hook sets and the choice between them.
//!
//! Both sets feed the same record builders in bpf/ and give the same rows:
//! - **trampoline**: fentry programs on the syscall wrappers of execve, execveat, fork, vfork,
//!   clone, clone3, exit and exit_group (the name, start time and arguments the sched
//!   programs read back), fexit on execve/execveat (failed execs) and one fexit program per
//!   socket call (connect, bind, listen, accept, accept4; no entry state). Nothing on
//!   `syscalls:*`, so unrelated system calls pay nothing.
//! - **tracepoint**: `syscalls:sys_enter_*`/`sys_exit_*` programs for the same calls. Every
//!   kernel has them, but while any program is on a syscall tracepoint every system call of
//!   every task takes the traced slow path.
//!
//! Both use the `tp_btf` sched_process_exec/fork/exit programs, which cost nothing
//! system-wide. The choice is made per object (one per table), never per program: one syscall
//! tracepoint anywhere already puts every system call on the slow path, so a mix would pay
//! the whole tax while being a third combination to test.

use std::io::BufRead;
use std::mem::MaybeUninit;
use std::path::Path;

use anyhow::Result;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use std::sync::atomic::Ordering;

use super::load::{break_for_test, QUIET};
use super::options::{Hooks, TestHooks};
use super::preflight::object_builder;
use super::{startup_error, StartupKind};
use crate::feature_skel::FeatureSkelBuilder;

/// The hooks an object's syscall programs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookSet {
    Trampoline,
    Tracepoint,
}

impl HookSet {
    pub fn name(self) -> &'static str {
        match self {
            HookSet::Trampoline => "trampoline",
            HookSet::Tracepoint => "tracepoint",
        }
    }
}

impl std::fmt::Display for HookSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The set a program belongs to, from its ELF section; None for the sched programs both
/// sets use (and anything else that is not a syscall hook).
pub fn set_of(section: &str) -> Option<HookSet> {
    if section.starts_with("fentry/") || section.starts_with("fexit/") {
        Some(HookSet::Trampoline)
    } else if section.starts_with("tp/") {
        Some(HookSet::Tracepoint)
    } else {
        None
    }
}

/// Load only `set`'s programs (and the shared ones) of `obj`.
pub fn select(obj: &mut libbpf_rs::OpenObject, set: HookSet) {
    for mut prog in obj.progs_mut() {
        let section = prog.section().to_string_lossy().into_owned();
        if let Some(s) = set_of(&section) {
            prog.set_autoload(s == set);
        }
    }
}

/// What `auto` or the setting chose, and why (logged once at start-up, shown by the stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub set: HookSet,
    pub why: String,
    /// `hooks = auto`: an object whose trampoline set does not load and attach whole falls
    /// back to its tracepoint set.
    pub may_fall_back: bool,
}

impl Choice {
    /// The sets to try for an object, in order.
    pub fn candidates(&self) -> Vec<HookSet> {
        match (self.set, self.may_fall_back) {
            (HookSet::Trampoline, true) => vec![HookSet::Trampoline, HookSet::Tracepoint],
            (set, _) => vec![set],
        }
    }
}

/// Decide the hook set for `hooks` on this kernel.
pub fn choose(hooks: Hooks, btf_path: Option<&Path>, test: &TestHooks) -> Result<Choice> {
    if hooks == Hooks::Tracepoint {
        return Ok(Choice {
            set: HookSet::Tracepoint,
            why: "hooks = tracepoint".into(),
            may_fall_back: false,
        });
    }
    match trampolines_usable(btf_path, test) {
        Ok(()) => Ok(Choice {
            set: HookSet::Trampoline,
            why: format!(
                "hooks = {}: BPF trampolines attach on this kernel",
                if hooks == Hooks::Auto {
                    "auto"
                } else {
                    "trampoline"
                }
            ),
            may_fall_back: hooks == Hooks::Auto,
        }),
        Err(reason) if hooks == Hooks::Auto => Ok(Choice {
            set: HookSet::Tracepoint,
            why: format!("hooks = auto: {reason}"),
            may_fall_back: false,
        }),
        Err(reason) => Err(startup_error(
            StartupKind::NoTrampolines,
            format!(
                "hooks = trampoline, but {reason}; set hooks to auto (tracepoints where \
                 trampolines do not work) or tracepoint"
            ),
        )),
    }
}

/// Whether BPF trampolines can be used here: the kernel has the trampoline fix of Linux 5.12,
/// and an fentry program on a syscall wrapper loads and attaches for real. The reason when not.
fn trampolines_usable(btf_path: Option<&Path>, test: &TestHooks) -> Result<(), String> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    if !has_trampoline_fix(&release, Path::new("/proc/kallsyms")) {
        return Err(format!(
            "kernel {release} may lack the fix for BPF trampoline images being freed while in \
             use (Linux 5.12, backported to 5.10.y as __bpf_tramp_image_put_rcu; not in \
             /proc/kallsyms), so trampolines are not used"
        ));
    }
    attach_probe(btf_path, test)
}

/// Linux 5.12 and later have it; an older kernel has it when the function the fix added
/// (`__bpf_tramp_image_put_rcu`) is in its symbols. DeepFlow gates fentry the same way
/// (deepflowio/deepflow PR #9739): attaching or detaching on an unfixed kernel can crash it.
pub fn has_trampoline_fix(release: &str, kallsyms: &Path) -> bool {
    if kernel_version(release).is_some_and(|v| v >= (5, 12)) {
        return true;
    }
    let Ok(f) = std::fs::File::open(kallsyms) else {
        return false;
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .any(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|sym| sym.starts_with("__bpf_tramp_image_put_rcu"))
        })
}

/// (major, minor) of a release string such as "5.10.0-32-amd64".
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Load the one-program feature object and attach it (then detach): a program of type
/// tracing that loads may still not attach (arm64 kernels before 6.4: -ENOTSUPP).
fn attach_probe(btf_path: Option<&Path>, test: &TestHooks) -> Result<(), String> {
    QUIET.store(true, Ordering::Relaxed);
    let result = try_attach_probe(btf_path, test);
    QUIET.store(false, Ordering::Relaxed);
    result
}

fn try_attach_probe(btf_path: Option<&Path>, test: &TestHooks) -> Result<(), String> {
    let builder = FeatureSkelBuilder {
        obj_builder: object_builder(btf_path).map_err(|e| format!("{e:#}"))?,
    };
    let mut storage = MaybeUninit::uninit();
    let mut open = builder
        .open(&mut storage)
        .map_err(|e| format!("the feature probe does not open: {e}"))?;
    break_for_test(open.open_object_mut(), test);
    let skel = open
        .load()
        .map_err(|e| format!("an fentry program does not load on this kernel ({e})"))?;
    let link = skel
        .progs
        .trampoline_probe
        .attach()
        .map_err(|e| format!("an fentry program loads but does not attach ({e})"))?;
    drop(link);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_by_section() {
        assert_eq!(set_of("fentry/__x64_sys_execve"), Some(HookSet::Trampoline));
        assert_eq!(set_of("fexit/__x64_sys_connect"), Some(HookSet::Trampoline));
        assert_eq!(
            set_of("tp/syscalls/sys_enter_execve"),
            Some(HookSet::Tracepoint)
        );
        assert_eq!(set_of("tp_btf/sched_process_exec"), None);
    }

    #[test]
    fn versions_and_the_trampoline_fix() {
        assert_eq!(kernel_version("5.10.0-32-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("6.18.44-fc-v857"), Some((6, 18)));
        assert_eq!(kernel_version("garbage"), None);
        let dir = tempfile::tempdir().expect("tmp");
        let none = dir.path().join("none");
        assert!(has_trampoline_fix("6.1.0-40-amd64", &none));
        assert!(!has_trampoline_fix("5.10.0-32-amd64", &none));
        let syms = dir.path().join("kallsyms");
        std::fs::write(&syms, "0000000000000000 t bpf_tramp_image_put\n").expect("write");
        assert!(!has_trampoline_fix("5.10.0-32-amd64", &syms));
        std::fs::write(
            &syms,
            "0000000000000000 t bpf_tramp_image_put\n0000000000000000 t __bpf_tramp_image_put_rcu\n",
        )
        .expect("write");
        assert!(has_trampoline_fix("5.10.0-32-amd64", &syms));
    }

    #[test]
    fn auto_falls_back_only_from_trampolines() {
        let c = |set, may_fall_back| Choice {
            set,
            why: String::new(),
            may_fall_back,
        };
        assert_eq!(
            c(HookSet::Trampoline, true).candidates(),
            [HookSet::Trampoline, HookSet::Tracepoint]
        );
        assert_eq!(
            c(HookSet::Trampoline, false).candidates(),
            [HookSet::Trampoline]
        );
        assert_eq!(
            c(HookSet::Tracepoint, false).candidates(),
            [HookSet::Tracepoint]
        );
    }
}
