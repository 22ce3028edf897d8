//! The process-context stage: turns decoded events into complete rows and stores them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::containers::Cgroups;
use crate::event::{Endpoint, Event, ExecEvent, Header, SocketEvent, Syscall, AT_FDCWD};
use crate::format::{args_lossy, text};
use crate::procctx::{ProcInfo, ProcessContext};
use crate::store::Store;

/// The columns both tables share (eid and time live in the store entry).
#[derive(Debug, Clone, PartialEq)]
pub struct RowBase {
    pub tid: u32,
    pub pid: u32,
    pub parent: u32,
    pub uid: u32,
    pub gid: u32,
    pub cid: u64,
    pub exit_code: i64,
    pub probe_error: bool,
    pub syscall: Syscall,
    /// The process's binary.
    pub path: Arc<str>,
    pub duration: u64,
    /// CLOCK_BOOTTIME ns at syscall entry.
    pub ntime: u64,
}

impl RowBase {
    fn new(h: &Header, path: Arc<str>) -> RowBase {
        RowBase {
            tid: h.tid,
            pid: h.pid,
            parent: h.ppid,
            uid: h.uid,
            gid: h.gid,
            cid: h.cgroup_id,
            exit_code: h.ret,
            probe_error: h.probe_error(),
            syscall: h.syscall,
            path,
            duration: h.duration,
            ntime: h.ts_boot,
        }
    }
}

/// One `bpf_process_events_v2` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    pub base: RowBase,
    pub cwd: Arc<str>,
    pub args: Arc<[String]>,
}

/// One `bpf_socket_events_v2` row.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketRow {
    pub base: RowBase,
    pub fd: i32,
    /// -1 when the fd was not a socket.
    pub family: i64,
    pub sock_type: i32,
    pub protocol: i32,
    /// Endpoints are kept as values and turned into text by `generate`.
    pub local: Endpoint,
    pub remote: Endpoint,
}

/// A finished row for one of the tables.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Process(ProcessRow),
    Socket(SocketRow),
}

impl Row {
    pub fn ntime(&self) -> u64 {
        match self {
            Row::Process(r) => r.base.ntime,
            Row::Socket(r) => r.base.ntime,
        }
    }
}

/// Address text: IPv4 dotted, IPv6 in RFC 5952 form (IPv4-mapped as ::ffff:a.b.c.d), a Unix
/// path as it is, an abstract Unix name with a leading '@' (NULs inside it shown as '@').
pub fn endpoint_text(e: &Endpoint) -> String {
    match e {
        Endpoint::None => String::new(),
        Endpoint::Inet(ip, _) => ip.to_string(),
        Endpoint::Unix(name) => match name.split_first() {
            Some((0, rest)) => {
                let t: String = text(rest)
                    .chars()
                    .map(|c| if c == '\0' { '@' } else { c })
                    .collect();
                format!("@{t}")
            }
            _ => text(name),
        },
    }
}

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
    SocketRow {
        base: RowBase::new(
            &h,
            ctx.get(h.pid).map(|p| p.path.clone()).unwrap_or_default(),
        ),
        fd,
        family: if is_socket { i64::from(family) } else { -1 },
        sock_type,
        protocol,
        local,
        remote,
    }
}

/// Converts CLOCK_BOOTTIME nanoseconds (the probes' clock) to UNIX time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// realtime - boottime, ns
    offset_ns: i128,
}

fn clock_ns(id: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(id)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0)
}

impl Clock {
    pub fn now() -> Clock {
        let boot = clock_ns(nix::time::ClockId::CLOCK_BOOTTIME);
        let real = clock_ns(nix::time::ClockId::CLOCK_REALTIME);
        Clock {
            offset_ns: real - boot,
        }
    }

    #[cfg(test)]
    pub fn with_offset(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// UNIX time in ns (0 before 1970), for display.
    pub fn unix_nanos(&self, ts_boot: u64) -> i64 {
        i64::try_from((i128::from(ts_boot) + self.offset_ns).max(0)).unwrap_or(i64::MAX)
    }

    pub fn unix_secs(&self, ts_boot: u64) -> u64 {
        let ns = i128::from(ts_boot) + self.offset_ns;
        u64::try_from(ns.max(0) / 1_000_000_000).unwrap_or(0)
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
    let h = ev.header().clone();
    let h = &h;
    let base = |info: Option<&ProcInfo>| {
        let info = info.cloned().unwrap_or_default();
        ProcessRow {
            base: RowBase::new(h, info.path),
            cwd: info.cwd,
            args: info.args,
        }
    };
    match ev {
        Event::Exec(e) => {
            let cwd = text(&e.cwd);
            let path = exec_path(&e, &cwd);
            let info = ProcInfo {
                ppid: h.ppid,
                path: path.into(),
                cwd: cwd.into(),
                args: args_lossy(e.argv).into(),
            };
            let row = base(Some(&info));
            if h.ret == 0 {
                ctx.on_exec(h.pid, info);
            }
            row
        }
        Event::Fork(f) => {
            let row = base(ctx.get(h.pid));
            ctx.on_fork(h.pid, f.child_pid);
            row
        }
        Event::Exit(_) => {
            let info = ctx.on_exit(h.pid);
            base(info.as_ref())
        }
        Event::Socket(_) => base(ctx.get(h.pid)),
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
    use crate::event::{ExitEvent, ForkEvent};

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

    #[test]
    fn endpoint_texts() {
        let v6 = Endpoint::Inet("::ffff:127.0.0.1".parse().expect("ip"), 1);
        assert_eq!(
            (endpoint_text(&v6), v6.port()),
            ("::ffff:127.0.0.1".to_string(), 1)
        );
        let v6 = Endpoint::Inet("2001:db8:0:0:1:0:0:1".parse().expect("ip"), 2);
        assert_eq!(endpoint_text(&v6), "2001:db8::1:0:0:1");
        assert_eq!(
            endpoint_text(&Endpoint::Unix(b"\0name\0x".to_vec())),
            "@name@x"
        );
        let unix = Endpoint::Unix(b"/run/a.sock".to_vec());
        assert_eq!(
            (endpoint_text(&unix), unix.port()),
            ("/run/a.sock".to_string(), 0)
        );
        assert_eq!(
            (endpoint_text(&Endpoint::None), Endpoint::None.port()),
            (String::new(), 0)
        );
    }

    #[test]
    fn clock_converts_boot_time() {
        let c = Clock::with_offset(1_700_000_000_000_000_000);
        assert_eq!(c.unix_secs(5_500_000_000), 1_700_000_005);
        let now = Clock::now();
        let boot = clock_ns(nix::time::ClockId::CLOCK_BOOTTIME) as u64;
        assert!(now.unix_secs(boot).abs_diff(unix_now()) <= 1);
    }
}
