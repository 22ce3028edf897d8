//! The enrichment stage: turns decoded events into complete rows with the process context
//! (seeded from /proc, kept by fork/exec/exit) and writes them into the stores.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::clock::{unix_now, Clock};
use crate::containers::Cgroups;
use crate::event::{Endpoint, Event, ExecEvent, Flags, Header, SocketEvent, Syscall, AT_FDCWD};
use crate::format::{args_lossy, text};
use crate::procctx::{ProcInfo, ProcessContext};
use crate::rows::{ProcessRow, Row, RowBase, SocketRow};
use crate::store::Store;

fn socket_row(ctx: &ProcessContext, ev: SocketEvent) -> SocketRow {
    let SocketEvent {
        hdr: h,
        fd,
        is_socket,
        family,
        sock_type,
        protocol,
        mut local,
        mut remote,
        user_addr,
        netns,
    } = ev;
    // The caller's sockaddr stands in where the kernel socket no longer holds the address
    // (a failed connect resets the port; a failed bind leaves the socket unbound).
    let partial = |e: &Endpoint| matches!(e, Endpoint::None | Endpoint::Inet(_, 0));
    if user_addr != Endpoint::None {
        match h.syscall {
            Syscall::Connect if partial(&remote) => remote = user_addr,
            Syscall::Bind if partial(&local) => local = user_addr,
            _ => {}
        }
    }
    let via_io_uring = h.flags & Flags::FLAG_IO_URING.0 != 0;
    let path = ctx.get(h.pid).map(|p| p.path.clone()).unwrap_or_default();
    SocketRow {
        base: RowBase::new(h, path),
        fd,
        family: if is_socket { i64::from(family) } else { -1 },
        sock_type,
        protocol,
        local,
        remote,
        netns,
        via_io_uring,
    }
}

/// The path column of an exec row. A failed exec's filename is as the caller passed it; a
/// relative one is joined to the cwd when it was relative to the cwd.
fn exec_path(ev: &ExecEvent, cwd: &str) -> String {
    let path = text(&ev.path);
    if !ev.path_is_raw || path.starts_with('/') || path.is_empty() || ev.dirfd != AT_FDCWD {
        return path;
    }
    let rel = path.strip_prefix("./").unwrap_or(&path);
    if cwd.ends_with('/') {
        format!("{cwd}{rel}")
    } else {
        format!("{cwd}/{rel}")
    }
}

/// Build the row for an event, updating the process context.
pub fn enrich(ctx: &mut ProcessContext, ev: Event) -> Row {
    match ev {
        Event::Socket(s) => Row::Socket(socket_row(ctx, s)),
        ev => Row::Process(process_row(ctx, ev)),
    }
}

fn process_row(ctx: &mut ProcessContext, ev: Event) -> ProcessRow {
    // the parent as the context knows it at this event (before this event changes it)
    let (parent_path, parent_args) = ctx
        .get(ev.header().ppid)
        .map(|p| (p.path.clone(), p.args.clone()))
        .unwrap_or_default();
    // called once, in whichever arm the event takes, with the event's header
    let base = move |h: Header, info: Option<&ProcInfo>| {
        let info = info.cloned().unwrap_or_default();
        let flag = |f: Flags| h.flags & f.0 != 0;
        let (exe_memfd, exe_deleted, exe_upper_layer) = (
            flag(Flags::FLAG_EXE_MEMFD),
            flag(Flags::FLAG_EXE_DELETED),
            flag(Flags::FLAG_EXE_UPPER),
        );
        ProcessRow {
            base: RowBase::new(h, info.path),
            cwd: info.cwd,
            args: info.args,
            parent_path,
            parent_args,
            exe_memfd,
            exe_deleted,
            exe_upper_layer,
        }
    };
    match ev {
        Event::Exec(e) => {
            let cwd = text(&e.cwd);
            let path = exec_path(&e, &cwd);
            let (pid, ok) = (e.hdr.pid, e.hdr.ret == 0);
            let info = ProcInfo {
                ppid: e.hdr.ppid,
                path: path.into(),
                cwd: cwd.into(),
                args: args_lossy(e.argv).into(),
            };
            let row = base(e.hdr, Some(&info));
            if ok {
                ctx.on_exec(pid, info);
            }
            row
        }
        Event::Fork(f) => {
            let (pid, child) = (f.hdr.pid, f.child_pid);
            let row = base(f.hdr, ctx.get(pid));
            ctx.on_fork(pid, child);
            row
        }
        Event::Exit(x) => {
            let info = ctx.on_exit(x.hdr.pid);
            base(x.hdr, info.as_ref())
        }
        Event::Socket(s) => {
            let pid = s.hdr.pid;
            base(s.hdr, ctx.get(pid))
        }
    }
}

/// Where the stage puts rows, and the cgroups it has seen.
pub struct Stores {
    pub process: Arc<Store<ProcessRow>>,
    pub socket: Arc<Store<SocketRow>>,
    pub cgroups: Arc<Cgroups>,
}

/// The stage's thread: drain the queue, enrich, store. Stops when `stop` is set and the queue
/// is empty, or when every sender is gone.
pub fn spawn(
    rx: Receiver<crate::probes::Batch>,
    mut ctx: ProcessContext,
    stores: Stores,
    stop: Arc<AtomicBool>,
    proc_root: &Path,
) -> std::io::Result<JoinHandle<()>> {
    let proc_root = proc_root.to_path_buf();
    std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            let mut clock = Clock::now();
            let mut last_clock = Instant::now();
            let mut last_prune = Instant::now();
            loop {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(first) => {
                        if last_clock.elapsed() > Duration::from_secs(1) {
                            clock = Clock::now();
                            last_clock = Instant::now();
                        }
                        // One batch of the consumer (one pass over the kernel buffer): one
                        // clock read and one store lock per batch, not per event.
                        let (mut procs, mut socks) = (Vec::new(), Vec::new());
                        let mut cids: Vec<u64> = Vec::new();
                        for ev in first {
                            let cid = ev.header().cgroup_id;
                            if !cids.contains(&cid) {
                                cids.push(cid);
                            }
                            let row = enrich(&mut ctx, ev);
                            let time = clock.unix_secs(row.ntime());
                            match row {
                                Row::Process(r) => procs.push((time, r)),
                                Row::Socket(r) => socks.push((time, r)),
                            }
                        }
                        let now = unix_now();
                        stores.cgroups.observe(&cids, now);
                        stores.process.push_batch(procs, now);
                        stores.socket.push_batch(socks, now);
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if last_prune.elapsed() > Duration::from_secs(60) {
                    let root = proc_root.clone();
                    let gone = ctx.prune(|pid| root.join(pid.to_string()).exists());
                    tracing::debug!(gone, known = ctx.len(), "pruned the process context");
                    last_prune = Instant::now();
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExitEvent, ForkEvent, Header, TaskContext};
    use crate::rows::endpoint_text;

    fn hdr(syscall: Syscall, pid: u32, ppid: u32, ret: i64) -> Header {
        Header {
            syscall,
            ts_boot: 5_000_000_000,
            duration: 1000,
            ret,
            cgroup_id: 3,
            tid: pid,
            pid,
            ppid,
            uid: 0,
            gid: 0,
            flags: 0,
            task: TaskContext::default(),
        }
    }

    fn exec(pid: u32, ret: i64, path: &[u8], raw: bool) -> Event {
        Event::Exec(ExecEvent {
            hdr: hdr(Syscall::Execve, pid, 1, ret),
            argv: vec![b"prog".to_vec(), b"a b".to_vec()],
            path: path.to_vec(),
            cwd: b"/srv".to_vec(),
            path_is_raw: raw,
            dirfd: AT_FDCWD,
            at_flags: 0,
        })
    }

    #[test]
    fn exec_fork_exit_rows_are_complete() {
        let mut ctx = ProcessContext::default();
        let row = process_row(&mut ctx, exec(10, 0, b"/usr/bin/prog", false));
        assert_eq!(
            (&*row.base.path, &*row.cwd, row.base.parent),
            ("/usr/bin/prog", "/srv", 1)
        );
        assert_eq!(row.args.len(), 2);

        let fork = Event::Fork(ForkEvent {
            hdr: hdr(Syscall::Clone3, 10, 1, 11),
            child_pid: 11,
            child_tid: 11,
            clone_flags: 0,
        });
        let row = process_row(&mut ctx, fork);
        assert_eq!(
            (row.base.pid, row.base.exit_code, &*row.base.path),
            (10, 11, "/usr/bin/prog")
        );
        assert_eq!(row.base.syscall.name(), "clone3");

        let exit = Event::Exit(ExitEvent {
            hdr: hdr(Syscall::ExitGroup, 11, 10, 3),
            exit_code: 3 << 8,
            core_dumped: false,
        });
        let row = process_row(&mut ctx, exit);
        assert_eq!(
            (row.base.pid, row.base.parent, row.base.exit_code),
            (11, 10, 3)
        );
        assert_eq!(&*row.base.path, "/usr/bin/prog");
        assert_eq!(
            row.args.to_vec(),
            vec!["prog".to_string(), "a b".to_string()]
        );
        assert!(ctx.get(11).is_none());
    }

    #[test]
    fn failed_exec_joins_relative_path_and_does_not_change_context() {
        let mut ctx = ProcessContext::default();
        let row = process_row(&mut ctx, exec(20, -2, b"./missing", true));
        assert_eq!(&*row.base.path, "/srv/missing");
        assert_eq!(row.base.exit_code, -2);
        assert!(ctx.get(20).is_none());
        let row = process_row(&mut ctx, exec(20, -2, b"/abs/missing", true));
        assert_eq!(&*row.base.path, "/abs/missing");
    }

    fn sock(syscall: Syscall, local: Endpoint, remote: Endpoint, user: Endpoint) -> SocketEvent {
        SocketEvent {
            hdr: hdr(syscall, 30, 1, -111),
            fd: 3,
            is_socket: true,
            family: crate::event::AF_INET,
            sock_type: 1,
            protocol: 6,
            local,
            remote,
            user_addr: user,
            netns: 4026531840,
        }
    }

    #[test]
    fn socket_rows_fall_back_to_the_callers_address() {
        let mut ctx = ProcessContext::default();
        ctx.on_exec(
            30,
            ProcInfo {
                path: "/usr/bin/curl".into(),
                ..ProcInfo::default()
            },
        );
        let dst = Endpoint::Inet("127.0.0.1".parse().expect("ip"), 9);
        let Row::Socket(r) = enrich(
            &mut ctx,
            Event::Socket(sock(
                Syscall::Connect,
                Endpoint::None,
                Endpoint::None,
                dst.clone(),
            )),
        ) else {
            panic!("not a socket row");
        };
        assert_eq!(
            (
                endpoint_text(&r.remote),
                r.remote.port(),
                endpoint_text(&r.local)
            ),
            ("127.0.0.1".to_string(), 9, String::new())
        );
        assert_eq!(
            (&*r.base.path, r.base.exit_code, r.family),
            ("/usr/bin/curl", -111, 2)
        );
        let kernel = Endpoint::Inet("10.1.1.1".parse().expect("ip"), 80);
        let Row::Socket(r) = enrich(
            &mut ctx,
            Event::Socket(sock(Syscall::Connect, Endpoint::None, kernel, dst.clone())),
        ) else {
            panic!("not a socket row");
        };
        assert_eq!(
            endpoint_text(&r.remote),
            "10.1.1.1",
            "the kernel's view wins"
        );
        let Row::Socket(r) = enrich(
            &mut ctx,
            Event::Socket(sock(Syscall::Bind, Endpoint::None, Endpoint::None, dst)),
        ) else {
            panic!("not a socket row");
        };
        assert_eq!(
            (endpoint_text(&r.local), r.local.port()),
            ("127.0.0.1".to_string(), 9)
        );
    }
}
