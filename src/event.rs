//! Decoding of ring-buffer records (layouts from `bpf/events.h`, through the skeleton's
//! generated types) into owned Rust values.

use crate::process_skel::types;

pub use types::event_flags as Flags;
pub use types::event_kind as Kind;
pub use types::syscall_id as SyscallId;

// SAFETY: these are plain `repr(C)` structs of integers generated from the BPF object's BTF;
// every bit pattern is a valid value, and they contain no pointers or padding invariants.
unsafe impl plain::Plain for types::event_header {}
// SAFETY: as above.
unsafe impl plain::Plain for types::exec_event {}
// SAFETY: as above.
unsafe impl plain::Plain for types::fork_event {}
// SAFETY: as above.
unsafe impl plain::Plain for types::exit_event {}
// SAFETY: as above.
unsafe impl plain::Plain for crate::socket_skel::types::socket_event {}

/// execveat's "current directory" dirfd.
pub const AT_FDCWD: i32 = -100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Syscall {
    Execve,
    Execveat,
    Fork,
    Vfork,
    Clone,
    Clone3,
    Exit,
    ExitGroup,
    /// Not a system call: the process was killed by a signal.
    Signal,
    Connect,
    Accept,
    Accept4,
    Bind,
    Listen,
    Unknown,
}

impl Syscall {
    pub fn from_id(id: u32) -> Syscall {
        match SyscallId(id) {
            SyscallId::SC_EXECVE => Syscall::Execve,
            SyscallId::SC_EXECVEAT => Syscall::Execveat,
            SyscallId::SC_FORK => Syscall::Fork,
            SyscallId::SC_VFORK => Syscall::Vfork,
            SyscallId::SC_CLONE => Syscall::Clone,
            SyscallId::SC_CLONE3 => Syscall::Clone3,
            SyscallId::SC_EXIT => Syscall::Exit,
            SyscallId::SC_EXIT_GROUP => Syscall::ExitGroup,
            SyscallId::SC_SIGNAL => Syscall::Signal,
            SyscallId::SC_CONNECT => Syscall::Connect,
            SyscallId::SC_ACCEPT => Syscall::Accept,
            SyscallId::SC_ACCEPT4 => Syscall::Accept4,
            SyscallId::SC_BIND => Syscall::Bind,
            SyscallId::SC_LISTEN => Syscall::Listen,
            _ => Syscall::Unknown,
        }
    }

    /// The value of the `syscall` column.
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Execve => "execve",
            Syscall::Execveat => "execveat",
            Syscall::Fork => "fork",
            Syscall::Vfork => "vfork",
            Syscall::Clone => "clone",
            Syscall::Clone3 => "clone3",
            Syscall::Exit => "exit",
            Syscall::ExitGroup => "exit_group",
            Syscall::Signal => "signal",
            Syscall::Connect => "connect",
            Syscall::Accept => "accept",
            Syscall::Accept4 => "accept4",
            Syscall::Bind => "bind",
            Syscall::Listen => "listen",
            Syscall::Unknown => "unknown",
        }
    }
}

/// The calling task's context at the event, read in the kernel (hidden columns of both
/// tables).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskContext {
    pub euid: u32,
    pub egid: u32,
    /// The audit login uid; u32::MAX when unset.
    pub auid: u32,
    /// The session id: the session leader's host pid.
    pub sid: u32,
    /// The process's start, CLOCK_BOOTTIME ns.
    pub start_time: u64,
    /// The controlling terminal's name ("pts/3"), empty when none.
    pub tty: Box<str>,
}

/// Fields every record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub syscall: Syscall,
    pub ts_boot: u64,
    pub duration: u64,
    pub ret: i64,
    pub cgroup_id: u64,
    pub tid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    pub task: TaskContext,
}

impl Header {
    /// probe_error: a buffer could not be captured whole.
    pub fn probe_error(&self) -> bool {
        let bits = Flags::FLAG_ARGV_TRUNCATED.0
            | Flags::FLAG_PATH_TRUNCATED.0
            | Flags::FLAG_CWD_TRUNCATED.0
            | Flags::FLAG_READ_FAILED.0;
        self.flags & bits != 0
    }
}

impl From<&types::event_header> for Header {
    fn from(h: &types::event_header) -> Self {
        Header {
            syscall: Syscall::from_id(h.syscall),
            ts_boot: h.ts_boot,
            duration: h.duration,
            ret: h.ret,
            cgroup_id: h.cgroup_id,
            tid: h.tid,
            pid: h.pid,
            ppid: h.ppid,
            uid: h.uid,
            gid: h.gid,
            flags: h.flags,
            task: TaskContext {
                euid: h.euid,
                egid: h.egid,
                auid: h.auid,
                sid: h.sid,
                start_time: h.start_time,
                tty: tty_name(&c_text(&h.tty)).into(),
            },
        }
    }
}

/// A terminal's name as `ps` and /dev show it: the kernel names pseudo-terminals `pts<N>`,
/// their device is /dev/pts/<N>.
fn tty_name(kernel: &str) -> String {
    match kernel.strip_prefix("pts") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("pts/{n}"),
        _ => kernel.to_string(),
    }
}

/// A NUL-terminated kernel string as text (lossy).
fn c_text(chars: &[i8]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecEvent {
    pub hdr: Header,
    /// The arguments, as the raw bytes of each.
    pub argv: Vec<Vec<u8>>,
    /// Absolute path of the executed file; for a failed exec, the filename as passed.
    pub path: Vec<u8>,
    pub cwd: Vec<u8>,
    pub path_is_raw: bool,
    pub dirfd: i32,
    pub at_flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkEvent {
    pub hdr: Header,
    pub child_pid: u32,
    pub child_tid: u32,
    pub clone_flags: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    pub hdr: Header,
    pub exit_code: u32,
    pub core_dumped: bool,
}

/// One end of a socket, as the kernel socket holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Endpoint {
    /// Not bound / not connected, or not an address family we decode.
    #[default]
    None,
    Inet(std::net::IpAddr, u16),
    /// A Unix socket name: a path, or an abstract name (leading NUL).
    Unix(Vec<u8>),
}

impl Endpoint {
    /// The port of an IP endpoint, 0 for others.
    pub fn port(&self) -> u16 {
        match self {
            Endpoint::Inet(_, port) => *port,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEvent {
    pub hdr: Header,
    pub fd: i32,
    /// The fd resolved to a socket in the kernel.
    pub is_socket: bool,
    pub family: u32,
    pub sock_type: i32,
    pub protocol: i32,
    pub local: Endpoint,
    pub remote: Endpoint,
    /// The caller's sockaddr (connect, bind), decoded.
    pub user_addr: Endpoint,
    /// Inode of the socket's network namespace (0: not a socket).
    pub netns: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exec(ExecEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    Socket(SocketEvent),
}

impl Event {
    pub fn header(&self) -> &Header {
        match self {
            Event::Exec(e) => &e.hdr,
            Event::Fork(e) => &e.hdr,
            Event::Exit(e) => &e.hdr,
            Event::Socket(e) => &e.hdr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Short {
        kind: u32,
        len: usize,
    },
    UnknownKind(u32),
    BadLengths {
        kind: u32,
        len: usize,
        declared: usize,
    },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short { kind, len } => {
                write!(f, "record of kind {kind} is too short ({len} bytes)")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            DecodeError::BadLengths {
                kind,
                len,
                declared,
            } => write!(
                f,
                "record of kind {kind} declares {declared} bytes but has {len}"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

fn read<T: plain::Plain + Default>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let mut v = T::default();
    plain::copy_from_bytes(&mut v, bytes).map_err(|_| DecodeError::Short {
        kind,
        len: bytes.len(),
    })?;
    Ok(v)
}

/// Split NUL-separated argv bytes into arguments. A trailing NUL ends the last argument; an
/// argument cut by truncation (no trailing NUL) is kept as it is.
pub fn split_argv(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let body = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    body.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

/// A NUL-terminated string field, without its terminator (and anything after it).
fn c_field(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end].to_vec()
}

pub const AF_UNIX: u32 = 1;
pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;

fn inet(family: u32, addr: &[u8; 16], port: u16) -> Endpoint {
    let ip = match family {
        AF_INET => std::net::IpAddr::from([addr[0], addr[1], addr[2], addr[3]]),
        AF_INET6 => std::net::IpAddr::from(*addr),
        _ => return Endpoint::None,
    };
    if ip.is_unspecified() && port == 0 {
        Endpoint::None
    } else {
        Endpoint::Inet(ip, port)
    }
}

fn unix(path: &[i8], len: u32) -> Endpoint {
    let len = (len as usize).min(path.len());
    if len == 0 {
        return Endpoint::None;
    }
    let bytes: Vec<u8> = path[..len].iter().map(|&b| b as u8).collect();
    // A path name ends at its NUL; an abstract name (leading NUL) uses every byte.
    if bytes[0] == 0 {
        Endpoint::Unix(bytes)
    } else {
        Endpoint::Unix(c_field(&bytes))
    }
}

/// Decode a `struct sockaddr` the caller passed (first `len` bytes of `raw`).
pub fn decode_sockaddr(raw: &[u8]) -> Endpoint {
    let Some(fam) = raw
        .get(..2)
        .map(|f| u32::from(u16::from_ne_bytes([f[0], f[1]])))
    else {
        return Endpoint::None;
    };
    let port = |r: &[u8]| r.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    match fam {
        AF_INET => match (port(raw), raw.get(4..8)) {
            (Some(p), Some(a)) => {
                Endpoint::Inet(std::net::IpAddr::from([a[0], a[1], a[2], a[3]]), p)
            }
            _ => Endpoint::None,
        },
        AF_INET6 => match (port(raw), raw.get(8..24)) {
            (Some(p), Some(a)) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(a);
                Endpoint::Inet(std::net::IpAddr::from(b), p)
            }
            _ => Endpoint::None,
        },
        AF_UNIX => {
            let path = raw.get(2..).unwrap_or(&[]);
            let signed: Vec<i8> = path.iter().map(|&b| b as i8).collect();
            unix(&signed, path.len() as u32)
        }
        _ => Endpoint::None,
    }
}

/// Decode one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let kind = bytes
        .get(..4)
        .map(|k| u32::from_ne_bytes([k[0], k[1], k[2], k[3]]))
        .ok_or(DecodeError::Short {
            kind: 0,
            len: bytes.len(),
        })?;
    match Kind(kind) {
        Kind::EVENT_EXEC => {
            let ev: types::exec_event = read(bytes, kind)?;
            let fixed = std::mem::size_of::<types::exec_event>();
            let (a, p, c) = (
                ev.argv_len as usize,
                ev.path_len as usize,
                ev.cwd_len as usize,
            );
            let declared = fixed + a + p + c;
            if bytes.len() < declared {
                return Err(DecodeError::BadLengths {
                    kind,
                    len: bytes.len(),
                    declared,
                });
            }
            let tail = &bytes[fixed..];
            Ok(Event::Exec(ExecEvent {
                hdr: Header::from(&ev.hdr),
                argv: split_argv(&tail[..a]),
                path: c_field(&tail[a..a + p]),
                cwd: c_field(&tail[a + p..a + p + c]),
                path_is_raw: ev.path_is_raw != 0,
                dirfd: ev.dirfd,
                at_flags: ev.at_flags,
            }))
        }
        Kind::EVENT_FORK => {
            let ev: types::fork_event = read(bytes, kind)?;
            Ok(Event::Fork(ForkEvent {
                hdr: Header::from(&ev.hdr),
                child_pid: ev.child_pid,
                child_tid: ev.child_tid,
                clone_flags: ev.clone_flags,
            }))
        }
        Kind::EVENT_EXIT => {
            let ev: types::exit_event = read(bytes, kind)?;
            Ok(Event::Exit(ExitEvent {
                hdr: Header::from(&ev.hdr),
                exit_code: ev.exit_code,
                core_dumped: ev.core_dumped != 0,
            }))
        }
        Kind::EVENT_SOCKET => {
            let ev: crate::socket_skel::types::socket_event = read(bytes, kind)?;
            let hdr: types::event_header = read(bytes, kind)?;
            let family = ev.family;
            let (local, remote) = if family == AF_UNIX {
                (
                    unix(&ev.local_path, ev.local_path_len),
                    unix(&ev.remote_path, ev.remote_path_len),
                )
            } else {
                (
                    inet(family, &ev.local_addr, ev.local_port),
                    inet(family, &ev.remote_addr, ev.remote_port),
                )
            };
            let ulen = (ev.user_addr_len as usize).min(ev.user_addr.len());
            Ok(Event::Socket(SocketEvent {
                hdr: Header::from(&hdr),
                fd: ev.fd,
                is_socket: ev.is_socket != 0,
                family,
                sock_type: ev.r#type,
                protocol: ev.protocol,
                local,
                remote,
                user_addr: decode_sockaddr(&ev.user_addr[..ulen]),
                netns: ev.netns,
            }))
        }
        _ => Err(DecodeError::UnknownKind(kind)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn as_bytes<T: plain::Plain>(v: &T) -> Vec<u8> {
        // SAFETY: T is Plain (repr(C) integers only), so viewing it as bytes is sound.
        unsafe { plain::as_bytes(v) }.to_vec()
    }

    pub(crate) fn header(kind: Kind, syscall: SyscallId) -> types::event_header {
        types::event_header {
            kind: kind.0,
            syscall: syscall.0,
            ts_boot: 1_000,
            duration: 50,
            ret: 0,
            cgroup_id: 7,
            tid: 11,
            pid: 10,
            ppid: 1,
            uid: 1000,
            gid: 100,
            flags: 0,
            euid: 0,
            egid: 100,
            auid: 1000,
            sid: 9,
            start_time: 900,
            tty: [
                b'p' as i8, b't' as _, b's' as _, b'/' as _, b'4' as _, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0,
            ],
        }
    }

    pub(crate) fn exec_record(argv: &[u8], path: &[u8], cwd: &[u8], flags: u32) -> Vec<u8> {
        let mut hdr = header(Kind::EVENT_EXEC, SyscallId::SC_EXECVE);
        hdr.flags = flags;
        let ev = types::exec_event {
            hdr,
            argv_len: argv.len() as u32,
            path_len: path.len() as u32,
            cwd_len: cwd.len() as u32,
            path_is_raw: 0,
            dirfd: AT_FDCWD,
            at_flags: 0,
        };
        let mut out = as_bytes(&ev);
        out.extend_from_slice(argv);
        out.extend_from_slice(path);
        out.extend_from_slice(cwd);
        out
    }

    #[test]
    fn decodes_exec_with_tail() {
        let rec = exec_record(b"ls\0-l\0\0a b\0", b"/usr/bin/ls\0", b"/tmp\0", 0);
        let Ok(Event::Exec(ev)) = decode(&rec) else {
            panic!("not an exec: {:?}", decode(&rec));
        };
        assert_eq!(
            ev.argv,
            vec![
                b"ls".to_vec(),
                b"-l".to_vec(),
                b"".to_vec(),
                b"a b".to_vec()
            ]
        );
        assert_eq!(ev.path, b"/usr/bin/ls");
        assert_eq!(ev.cwd, b"/tmp");
        assert_eq!(ev.hdr.syscall, Syscall::Execve);
        assert_eq!(ev.hdr.pid, 10);
        assert!(!ev.hdr.probe_error());
    }

    #[test]
    fn truncated_argv_keeps_cut_argument_and_sets_probe_error() {
        let rec = exec_record(
            b"echo\0abc",
            b"/bin/echo\0",
            b"/\0",
            Flags::FLAG_ARGV_TRUNCATED.0,
        );
        let Ok(Event::Exec(ev)) = decode(&rec) else {
            panic!("not an exec");
        };
        assert_eq!(ev.argv, vec![b"echo".to_vec(), b"abc".to_vec()]);
        assert!(ev.hdr.probe_error());
    }

    #[test]
    fn no_entry_flag_is_not_a_probe_error() {
        let rec = exec_record(b"x\0", b"/x\0", b"/\0", Flags::FLAG_NO_ENTRY.0);
        let Ok(ev) = decode(&rec) else {
            panic!("decode failed");
        };
        assert!(!ev.header().probe_error());
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert!(matches!(decode(&[1, 0]), Err(DecodeError::Short { .. })));
        let rec = exec_record(b"ls\0", b"/bin/ls\0", b"/\0", 0);
        assert!(matches!(
            decode(&rec[..rec.len() - 1]),
            Err(DecodeError::BadLengths { .. })
        ));
        let hdr_only = as_bytes(&header(Kind::EVENT_EXEC, SyscallId::SC_EXECVE));
        assert!(matches!(decode(&hdr_only), Err(DecodeError::Short { .. })));
        let mut bad = as_bytes(&header(Kind(99), SyscallId::SC_EXECVE));
        bad.resize(200, 0);
        assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn decodes_fork_and_exit() {
        let fork = types::fork_event {
            hdr: header(Kind::EVENT_FORK, SyscallId::SC_CLONE3),
            child_pid: 42,
            child_tid: 42,
            clone_flags: 0x11,
        };
        let Ok(Event::Fork(f)) = decode(&as_bytes(&fork)) else {
            panic!("not a fork");
        };
        assert_eq!((f.child_pid, f.hdr.syscall), (42, Syscall::Clone3));
        let exit = types::exit_event {
            hdr: header(Kind::EVENT_EXIT, SyscallId::SC_SIGNAL),
            exit_code: 9,
            core_dumped: 0,
        };
        let Ok(Event::Exit(x)) = decode(&as_bytes(&exit)) else {
            panic!("not an exit");
        };
        assert_eq!((x.exit_code, x.hdr.syscall.name()), (9, "signal"));
    }

    #[test]
    fn decodes_socket_records() {
        use crate::socket_skel::types::socket_event;
        let hdr = header(Kind::EVENT_SOCKET, SyscallId::SC_CONNECT);
        // SAFETY: the generated type is plain data; all-zero is a valid value.
        let mut ev: socket_event = unsafe { std::mem::zeroed() };
        // the header is the first member: copy it in through bytes
        let hb = as_bytes(&hdr);
        let mut bytes = as_bytes(&ev);
        bytes[..hb.len()].copy_from_slice(&hb);
        plain::copy_from_bytes(&mut ev, &bytes).expect("copy");
        ev.family = AF_INET6;
        ev.fd = 5;
        ev.is_socket = 1;
        ev.local_addr[15] = 1;
        ev.local_port = 40000;
        ev.remote_addr = std::net::Ipv6Addr::from(0xffff_7f00_0001u128).octets();
        ev.remote_port = 80;
        let Ok(Event::Socket(s)) = decode(&as_bytes(&ev)) else {
            panic!("not a socket");
        };
        assert_eq!(s.hdr.syscall, Syscall::Connect);
        assert_eq!(s.local, Endpoint::Inet("::1".parse().expect("ip"), 40000));
        assert_eq!(
            s.remote,
            Endpoint::Inet("::ffff:127.0.0.1".parse().expect("ip"), 80)
        );

        ev.family = AF_UNIX;
        for (i, b) in b"\0abstract".iter().enumerate() {
            ev.local_path[i] = *b as i8;
        }
        ev.local_path_len = 9;
        let Ok(Event::Socket(s)) = decode(&as_bytes(&ev)) else {
            panic!("not a socket");
        };
        assert_eq!(s.local, Endpoint::Unix(b"\0abstract".to_vec()));
        assert_eq!(s.remote, Endpoint::None);
    }

    #[test]
    fn decodes_user_sockaddrs() {
        let mut v4 = vec![2u8, 0, 0x1f, 0x90, 10, 0, 0, 1];
        v4.resize(16, 0);
        assert_eq!(
            decode_sockaddr(&v4),
            Endpoint::Inet("10.0.0.1".parse().expect("ip"), 8080)
        );
        let mut un = vec![1u8, 0];
        un.extend_from_slice(b"/run/x.sock\0junk");
        assert_eq!(
            decode_sockaddr(&un),
            Endpoint::Unix(b"/run/x.sock".to_vec())
        );
        assert_eq!(decode_sockaddr(&[2, 0, 1]), Endpoint::None);
        assert_eq!(decode_sockaddr(&[]), Endpoint::None);
        assert_eq!(decode_sockaddr(&[16, 0, 0, 0]), Endpoint::None);
    }

    #[test]
    fn split_argv_edge_cases() {
        assert!(split_argv(b"").is_empty());
        assert_eq!(split_argv(b"\0"), vec![b"".to_vec()]);
        assert_eq!(split_argv(b"a\0\0"), vec![b"a".to_vec(), b"".to_vec()]);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Arbitrary bytes decode or fail cleanly.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
                let _ = decode(&bytes);
            }

            /// A valid record with corrupted lengths and tail fails cleanly or decodes.
            #[test]
            fn corrupted_exec_records_never_panic(
                argv_len in any::<u32>(), path_len in any::<u32>(), cwd_len in any::<u32>(),
                tail in prop::collection::vec(any::<u8>(), 0..300),
            ) {
                let mut rec = exec_record(b"", b"", b"", 0);
                let fixed = std::mem::size_of::<types::exec_event>();
                let hdr = std::mem::size_of::<types::event_header>();
                rec[hdr..hdr + 4].copy_from_slice(&argv_len.to_ne_bytes());
                rec[hdr + 4..hdr + 8].copy_from_slice(&path_len.to_ne_bytes());
                rec[hdr + 8..hdr + 12].copy_from_slice(&cwd_len.to_ne_bytes());
                rec.truncate(fixed);
                rec.extend_from_slice(&tail);
                let _ = decode(&rec);
            }

            /// Any sockaddr bytes decode or give no endpoint.
            #[test]
            fn arbitrary_sockaddrs_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..130)) {
                let _ = decode_sockaddr(&bytes);
            }
        }
    }
}
