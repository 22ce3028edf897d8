//! The process context: what is known about every live process (parent, binary, command line,
//! cwd), seeded from /proc at start and kept current by fork, exec and exit events. It fills
//! the columns a kernel record leaves to user space (fork and exit rows, socket rows).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::event::split_argv;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcInfo {
    pub ppid: u32,
    pub path: Arc<str>,
    pub cwd: Arc<str>,
    pub args: Arc<[String]>,
}

#[derive(Debug, Default)]
pub struct ProcessContext {
    procs: HashMap<u32, ProcInfo>,
}

fn link_text(p: std::io::Result<std::path::PathBuf>) -> Arc<str> {
    p.map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
        .into()
}

impl ProcessContext {
    /// Read every process under `root` (normally /proc). Processes that vanish while being
    /// read, and fields that cannot be read (kernel threads have no exe), are skipped.
    pub fn seed_from_proc(root: &Path) -> ProcessContext {
        let mut ctx = ProcessContext::default();
        let Ok(iter) = procfs::process::all_processes_with_root(root) else {
            tracing::warn!(root = %root.display(), "cannot list processes; starting with an empty process context");
            return ctx;
        };
        for proc in iter.flatten() {
            let Ok(stat) = proc.stat() else { continue };
            let dir = root.join(proc.pid().to_string());
            // procfs's cmdline() drops empty arguments and rejects non-UTF-8: read it raw.
            let args = std::fs::read(dir.join("cmdline"))
                .map(|b| crate::format::args_lossy(split_argv(&b)))
                .unwrap_or_default();
            let info = ProcInfo {
                ppid: u32::try_from(stat.ppid).unwrap_or(0),
                path: link_text(std::fs::read_link(dir.join("exe"))),
                cwd: link_text(std::fs::read_link(dir.join("cwd"))),
                args: args.into(),
            };
            ctx.procs.insert(proc.pid() as u32, info);
        }
        ctx
    }

    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.procs.get(&pid)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn on_exec(&mut self, pid: u32, info: ProcInfo) {
        self.procs.insert(pid, info);
    }

    /// A new process starts as a copy of its creator.
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        let info = match self.procs.get(&parent) {
            Some(p) => ProcInfo {
                ppid: parent,
                ..p.clone()
            },
            None => ProcInfo {
                ppid: parent,
                ..ProcInfo::default()
            },
        };
        self.procs.insert(child, info);
    }

    pub fn on_exit(&mut self, pid: u32) -> Option<ProcInfo> {
        self.procs.remove(&pid)
    }

    /// Drop processes whose exit was never seen (e.g. lost), by asking `alive`.
    pub fn prune(&mut self, alive: impl Fn(u32) -> bool) -> usize {
        let before = self.procs.len();
        self.procs.retain(|&pid, _| alive(pid));
        before - self.procs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake_proc(root: &Path, pid: u32, ppid: u32, cmdline: &[u8], exe: Option<&str>) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).expect("mkdir");
        let stat = format!(
            "{pid} (name with spaces) S {ppid} {pid} {pid} 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 100 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        );
        std::fs::write(dir.join("stat"), stat).expect("stat");
        std::fs::write(dir.join("cmdline"), cmdline).expect("cmdline");
        if let Some(exe) = exe {
            symlink(exe, dir.join("exe")).expect("exe");
            symlink("/work/dir", dir.join("cwd")).expect("cwd");
        }
    }

    #[test]
    fn seeds_from_a_fake_tree() {
        let tmp = tempfile::tempdir().expect("tmp");
        fake_proc(
            tmp.path(),
            1,
            0,
            b"/sbin/init\0splash\0",
            Some("/usr/lib/systemd/systemd"),
        );
        fake_proc(
            tmp.path(),
            200,
            1,
            b"sh\0-c\0\0a b\xff\0",
            Some("/usr/bin/dash"),
        );
        fake_proc(tmp.path(), 2, 0, b"", None); // a kernel thread
        std::fs::create_dir_all(tmp.path().join("self")).expect("self");
        std::fs::write(tmp.path().join("uptime"), "1.0 1.0\n").expect("uptime");

        let ctx = ProcessContext::seed_from_proc(tmp.path());
        assert_eq!(ctx.len(), 3);
        let sh = ctx.get(200).expect("pid 200");
        assert_eq!(sh.ppid, 1);
        assert_eq!(&*sh.path, "/usr/bin/dash");
        assert_eq!(&*sh.cwd, "/work/dir");
        assert_eq!(
            sh.args.to_vec(),
            vec!["sh", "-c", "", "a b\u{fffd}"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        );
        let kthread = ctx.get(2).expect("pid 2");
        assert_eq!((&*kthread.path, kthread.args.len()), ("", 0));
    }

    #[test]
    fn missing_root_gives_empty_context() {
        let ctx = ProcessContext::seed_from_proc(Path::new("/nonexistent/proc"));
        assert!(ctx.is_empty());
    }

    #[test]
    fn fork_exec_exit_keep_it_current() {
        let mut ctx = ProcessContext::default();
        ctx.on_exec(
            10,
            ProcInfo {
                ppid: 1,
                path: "/bin/bash".into(),
                cwd: "/".into(),
                args: vec!["bash".to_string()].into(),
            },
        );
        ctx.on_fork(10, 11);
        let child = ctx.get(11).expect("child");
        assert_eq!((child.ppid, &*child.path), (10, "/bin/bash"));
        ctx.on_fork(99, 12); // unknown parent: still known to exist
        assert_eq!(ctx.get(12).map(|p| p.ppid), Some(99));
        assert!(ctx.on_exit(11).is_some());
        assert!(ctx.get(11).is_none());
        assert_eq!(ctx.prune(|pid| pid == 10), 1);
        assert_eq!(ctx.len(), 1);
    }
}
