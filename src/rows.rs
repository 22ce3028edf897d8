//! The rows the tables serve: what the enrichment stage builds from an event and its process
//! context, and what the stores keep.

use std::io::Write;
use std::sync::Arc;

use crate::event::{Endpoint, Header, Syscall, TaskContext};
use crate::format::text;

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
    /// euid, egid, auid, sid, tty, start_time (hidden columns).
    pub task: TaskContext,
}

impl RowBase {
    pub fn new(h: Header, path: Arc<str>) -> RowBase {
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
            task: h.task,
        }
    }
}

/// One `bpf_process_events_v2` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRow {
    pub base: RowBase,
    pub cwd: Arc<str>,
    pub args: Arc<[String]>,
    /// The parent's binary and arguments at the event, from the process context.
    pub parent_path: Arc<str>,
    pub parent_args: Arc<[String]>,
    /// Exec rows: the executed file was a memfd / had no link left.
    pub exe_memfd: bool,
    pub exe_deleted: bool,
    /// Exec rows: the file is on an overlayfs upper layer.
    pub exe_upper_layer: bool,
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
    /// Inode of the socket's network namespace (0: not a socket).
    pub netns: u32,
    /// The operation went through io_uring, not a system call.
    pub via_io_uring: bool,
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
pub fn write_endpoint(out: &mut Vec<u8>, e: &Endpoint) {
    match e {
        Endpoint::None => {}
        Endpoint::Inet(ip, _) => {
            let _ = write!(out, "{ip}"); // writing into a Vec cannot fail
        }
        Endpoint::Unix(name) => match name.split_first() {
            Some((0, rest)) => {
                out.push(b'@');
                let t = text(rest);
                out.extend(t.bytes().map(|b| if b == 0 { b'@' } else { b }));
            }
            _ => out.extend_from_slice(text(name).as_bytes()),
        },
    }
}

/// [`write_endpoint`] as a `String`.
pub fn endpoint_text(e: &Endpoint) -> String {
    let mut out = Vec::new();
    write_endpoint(&mut out, e);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
