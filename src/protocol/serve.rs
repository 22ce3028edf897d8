//! The extension's side of osquery's protocol: the `Extension` service (`ping`, `call`,
//! `shutdown`) on the extension's own socket, one thread per connection.
//!
//! Our own processor rather than osquery-rust-ng's server, for a measured reason: its table
//! API answers `generate` with a list of string maps, so a 50,000-row `SELECT *` built, encoded
//! and freed 1.7 million heap strings (1.1-1.3 s, the RSS from 50 to 193 MiB and staying
//! there). Here `generate` writes each selected row's cells from the store straight into the
//! reply: the same bytes on the wire (the generated `ExtensionResponse` decodes them), written
//! through a bounded buffer that is flushed to the socket as it fills.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thrift::protocol::{
    TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol, TListIdentifier, TMapIdentifier,
    TMessageIdentifier, TMessageType, TOutputProtocol, TSerializable, TStructIdentifier, TType,
};
use thrift::{ApplicationError, ApplicationErrorKind};

use super::bounded::{BoundedInput, MAX_REQUEST};
use super::osquery::{ExtensionRegistry, ExtensionResponse, ExtensionStatus};
use crate::constraints::parse_context;
use crate::stats::Stat;
use crate::tables::{routes, RowSink, Table};

/// Connections served at once; more are closed at once (osquery opens a few).
pub const MAX_CONNECTIONS: usize = 64;
/// The reply buffer: a `generate` reply reaches the socket in pieces of this size.
const OUT_BUFFER: usize = 64 << 10;
/// A caller that stops reading its reply for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened on the extension's side of the protocol (rows of `osquery_ebpf_stats`).
#[derive(Debug, Default)]
pub struct ServeCounters {
    pub registrations: AtomicU64,
    pub requests_refused: AtomicU64,
    pub connections_refused: AtomicU64,
}

impl ServeCounters {
    pub fn stats(&self) -> Vec<Stat> {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            Stat::new(
                "osquery_registrations",
                v(&self.registrations),
                "registrations osquery accepted (more than 1: osquery stopped listing the \
                 extension and it registered again)",
            ),
            Stat::new(
                "requests_refused",
                v(&self.requests_refused),
                "connections closed on a request that was malformed, not osquery's binary \
                 protocol, or larger than 16 MiB",
            ),
            Stat::new(
                "connections_refused",
                v(&self.connections_refused),
                "connections closed at once because 64 were open",
            ),
        ]
    }
}

/// What the extension serves, shared by every connection.
pub struct Extension {
    tables: Vec<Arc<dyn Table>>,
    pub counters: Arc<ServeCounters>,
    /// The uuid osquery gave the current registration (ping replies carry it).
    pub uuid: AtomicI64,
    /// Set by osquery's `shutdown` call.
    pub shutdown: Arc<AtomicBool>,
}

impl Extension {
    pub fn new(
        tables: Vec<Arc<dyn Table>>,
        counters: Arc<ServeCounters>,
        shutdown: Arc<AtomicBool>,
    ) -> Extension {
        Extension {
            tables,
            counters,
            uuid: AtomicI64::new(0),
            shutdown,
        }
    }

    pub fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name().to_string()).collect()
    }

    /// The registry sent with `registerExtension`: every table with its columns.
    pub fn registry(&self) -> ExtensionRegistry {
        let tables = self
            .tables
            .iter()
            .map(|t| (t.name().to_string(), routes(&t.specs())))
            .collect();
        BTreeMap::from([("table".to_string(), tables)])
    }

    fn table(&self, registry: &str, item: &str) -> Option<&dyn Table> {
        if registry != "table" {
            return None;
        }
        self.tables.iter().find(|t| t.name() == item).map(|t| &**t)
    }
}

/// A listening extension socket (`SOCKET.<uuid>`), served until dropped.
pub struct Listener {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Bind `path` with mode 0600 before it accepts a connection, whatever the umask.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &nix::sys::socket::UnixAddr::new(path)?)?;
    // Connecting needs write permission on the file; nothing can connect before listen().
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listen(&fd, Backlog::new(128)?)?;
    Ok(UnixListener::from(fd))
}

impl Listener {
    pub fn bind(path: PathBuf, ext: Arc<Extension>) -> std::io::Result<Listener> {
        let listener = bind_private(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("osquery-listen".into())
            .spawn(move || accept_loop(&listener, &ext, &stopped))?;
        Ok(Listener {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // wake the blocking accept
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: &UnixListener, ext: &Arc<Extension>, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else {
            // out of descriptors, say: do not spin
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            ext.counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("{MAX_CONNECTIONS} connections already open: one more closed");
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let (ext, count) = (ext.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("osquery-conn".into())
            .spawn(move || {
                serve_connection(&ext, stream);
                count.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Answer one caller's requests until it closes the connection or sends something that is not
/// a well-formed request (then the connection is closed; the process keeps serving).
pub fn serve_connection(ext: &Extension, stream: UnixStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut input = BoundedInput::new(BufReader::new(read_half), MAX_REQUEST);
    let mut output = TBinaryOutputProtocol::new(BufWriter::with_capacity(OUT_BUFFER, stream), true);
    let refused = |e: &thrift::Error| {
        // a transport error is the caller going away; anything else is its request
        if !matches!(e, thrift::Error::Transport(_)) {
            ext.counters
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
        }
    };
    loop {
        let msg = match input.read_message_begin() {
            Ok(m) => m,
            Err(e) => {
                refused(&e);
                tracing::debug!("closing a connection: {e}");
                return;
            }
        };
        let served = match msg.name.as_str() {
            "ping" => ping(ext, &msg, &mut input, &mut output),
            "call" => call(ext, &msg, &mut input, &mut output),
            "shutdown" => shutdown(ext, &msg, &mut input, &mut output),
            _ => unknown_method(&msg, &mut input, &mut output),
        };
        if let Err(e) = served {
            refused(&e);
            tracing::debug!(method = %msg.name, "closing a connection: {e}");
            return;
        }
    }
}

/// The reply envelope: `{method}_result` with the value in field 0 (none for a void method).
fn reply<T: TSerializable>(
    o: &mut dyn TOutputProtocol,
    msg: &TMessageIdentifier,
    success: Option<&T>,
) -> thrift::Result<()> {
    reply_head(o, msg, success.is_some())?;
    if let Some(v) = success {
        v.write_to_out_protocol(o)?;
    }
    reply_tail(o, success.is_some())
}

fn reply_head(
    o: &mut dyn TOutputProtocol,
    msg: &TMessageIdentifier,
    success: bool,
) -> thrift::Result<()> {
    o.write_message_begin(&TMessageIdentifier::new(
        msg.name.clone(),
        TMessageType::Reply,
        msg.sequence_number,
    ))?;
    o.write_struct_begin(&TStructIdentifier::new(format!("{}_result", msg.name)))?;
    if success {
        o.write_field_begin(&TFieldIdentifier::new("success", TType::Struct, 0))?;
    }
    Ok(())
}

fn reply_tail(o: &mut dyn TOutputProtocol, success: bool) -> thrift::Result<()> {
    if success {
        o.write_field_end()?;
    }
    o.write_field_stop()?;
    o.write_struct_end()?;
    o.write_message_end()?;
    o.flush()
}

/// Read a request's arguments struct that carries nothing we need.
fn no_args(i: &mut dyn TInputProtocol) -> thrift::Result<()> {
    i.skip(TType::Struct)?;
    i.read_message_end()
}

fn ping(
    ext: &Extension,
    msg: &TMessageIdentifier,
    i: &mut dyn TInputProtocol,
    o: &mut dyn TOutputProtocol,
) -> thrift::Result<()> {
    no_args(i)?;
    let status = ExtensionStatus::new(0, "OK".to_string(), ext.uuid.load(Ordering::Acquire));
    reply(o, msg, Some(&status))
}

fn shutdown(
    ext: &Extension,
    msg: &TMessageIdentifier,
    i: &mut dyn TInputProtocol,
    o: &mut dyn TOutputProtocol,
) -> thrift::Result<()> {
    no_args(i)?;
    tracing::info!("osquery asked the extension to shut down");
    ext.shutdown.store(true, Ordering::Release);
    reply::<ExtensionStatus>(o, msg, None)
}

fn unknown_method(
    msg: &TMessageIdentifier,
    i: &mut dyn TInputProtocol,
    o: &mut dyn TOutputProtocol,
) -> thrift::Result<()> {
    no_args(i)?;
    let e = ApplicationError::new(
        ApplicationErrorKind::UnknownMethod,
        format!("unknown method {}", msg.name),
    );
    thrift::server::handle_process_result(msg, Err(thrift::Error::Application(e)), o)
}

/// `call(registry, item, request)`'s arguments.
fn read_call_args(
    i: &mut dyn TInputProtocol,
) -> thrift::Result<(String, String, BTreeMap<String, String>)> {
    let (mut registry, mut item, mut request) = (String::new(), String::new(), BTreeMap::new());
    i.read_struct_begin()?;
    loop {
        let f = i.read_field_begin()?;
        match (f.id, f.field_type) {
            (_, TType::Stop) => break,
            (Some(1), TType::String) => registry = i.read_string()?,
            (Some(2), TType::String) => item = i.read_string()?,
            (Some(3), TType::Map) => {
                let m = i.read_map_begin()?;
                if m.key_type != Some(TType::String) || m.value_type != Some(TType::String) {
                    return Err(thrift::Error::Protocol(thrift::ProtocolError::new(
                        thrift::ProtocolErrorKind::InvalidData,
                        "the request is not a map of strings",
                    )));
                }
                for _ in 0..m.size {
                    let k = i.read_string()?;
                    request.insert(k, i.read_string()?);
                }
                i.read_map_end()?;
            }
            (_, other) => i.skip(other)?,
        }
        i.read_field_end()?;
    }
    i.read_struct_end()?;
    i.read_message_end()?;
    Ok((registry, item, request))
}

fn respond(
    o: &mut dyn TOutputProtocol,
    msg: &TMessageIdentifier,
    code: i32,
    message: String,
    rows: Vec<BTreeMap<String, String>>,
) -> thrift::Result<()> {
    if code != 0 {
        tracing::warn!("a call failed: {message}");
    }
    let resp = ExtensionResponse::new(ExtensionStatus::new(code, message, None), rows);
    reply(o, msg, Some(&resp))
}

fn call(
    ext: &Extension,
    msg: &TMessageIdentifier,
    i: &mut dyn TInputProtocol,
    o: &mut dyn TOutputProtocol,
) -> thrift::Result<()> {
    let (registry, item, request) = read_call_args(i)?;
    let Some(table) = ext.table(&registry, &item) else {
        let known = ext.table_names().join(", ");
        let message = format!(
            "no table {item:?} in registry {registry:?} of this extension (tables: {known})"
        );
        return respond(o, msg, 1, message, vec![]);
    };
    match request.get("action").map(String::as_str) {
        Some("columns") => respond(o, msg, 0, "OK".into(), routes(&table.specs())),
        Some("generate") => {
            let context = request.get("context").map_or("", String::as_str);
            generate(table, context, msg, o)
        }
        action => {
            let message = format!("{item}: the action {action:?} is not supported (read-only)");
            respond(o, msg, 1, message, vec![])
        }
    }
}

fn generate(
    table: &dyn Table,
    context: &str,
    msg: &TMessageIdentifier,
    o: &mut dyn TOutputProtocol,
) -> thrift::Result<()> {
    let name = table.name();
    let query = match parse_context(context) {
        Ok(q) => q,
        Err(e) => return respond(o, msg, 1, format!("{name}: {e}"), vec![]),
    };
    let started = Instant::now();
    let mut rows = ReplyRows {
        o: &mut *o,
        msg,
        rows: None,
    };
    let written = catch_unwind(AssertUnwindSafe(|| table.generate(&query, &mut rows)));
    let count = rows.rows;
    match (written, count) {
        (Ok(r), _) => r?,
        (Err(_), None) => {
            let message = format!("{name}: internal error while generating rows");
            return respond(o, msg, 1, message, vec![]);
        }
        // the reply is half written: the caller sees a closed connection
        (Err(_), Some(_)) => {
            return Err(thrift::Error::Application(ApplicationError::new(
                ApplicationErrorKind::InternalError,
                format!("{name}: internal error in the middle of a reply"),
            )))
        }
    }
    tracing::debug!(
        table = %name,
        rows = count.unwrap_or(0),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "generate answered"
    );
    Ok(())
}

/// A `generate` reply written as the rows come: the envelope and an OK status before the
/// first row, each row as a map of its cells, the envelope's end after the last.
struct ReplyRows<'a> {
    o: &'a mut dyn TOutputProtocol,
    msg: &'a TMessageIdentifier,
    /// Set once the head is written.
    rows: Option<usize>,
}

impl RowSink for ReplyRows<'_> {
    fn begin(&mut self, rows: usize) -> thrift::Result<()> {
        self.rows = Some(rows);
        let o = &mut *self.o;
        reply_head(o, self.msg, true)?;
        o.write_struct_begin(&TStructIdentifier::new("ExtensionResponse"))?;
        o.write_field_begin(&TFieldIdentifier::new("status", TType::Struct, 1))?;
        ExtensionStatus::new(0, "OK".to_string(), None).write_to_out_protocol(o)?;
        o.write_field_end()?;
        o.write_field_begin(&TFieldIdentifier::new("response", TType::List, 2))?;
        let rows = i32::try_from(rows).unwrap_or(i32::MAX);
        o.write_list_begin(&TListIdentifier::new(TType::Map, rows))
    }

    fn begin_row(&mut self, cells: usize) -> thrift::Result<()> {
        let cells = i32::try_from(cells).unwrap_or(i32::MAX);
        self.o
            .write_map_begin(&TMapIdentifier::new(TType::String, TType::String, cells))
    }

    fn cell(&mut self, name: &str, value: &[u8]) -> thrift::Result<()> {
        self.o.write_string(name)?;
        self.o.write_bytes(value)
    }

    fn end_row(&mut self) -> thrift::Result<()> {
        self.o.write_map_end()
    }

    fn end(&mut self) -> thrift::Result<()> {
        let o = &mut *self.o;
        o.write_list_end()?;
        o.write_field_end()?;
        o.write_field_stop()?;
        o.write_struct_end()?;
        reply_tail(o, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_now;
    use crate::event::{Endpoint, Syscall, TaskContext};
    use crate::protocol::osquery::{ExtensionSyncClient, TExtensionSyncClient};
    use crate::rows::{ProcessRow, RowBase, SocketRow};
    use crate::store::Store;
    use crate::tables::{Collect, EventTable};
    use thrift::protocol::TBinaryInputProtocol;
    use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport};

    type Client = ExtensionSyncClient<
        TBinaryInputProtocol<TBufferedReadTransport<UnixStream>>,
        TBinaryOutputProtocol<TBufferedWriteTransport<UnixStream>>,
    >;

    fn base(pid: u32, syscall: Syscall) -> RowBase {
        RowBase {
            tid: pid + 1,
            pid,
            parent: 1,
            uid: 1000,
            gid: 100,
            cid: 77,
            exit_code: -13,
            probe_error: true,
            syscall,
            path: "/usr/bin/curl".into(),
            duration: 4242,
            ntime: 987_654_321,
            task: TaskContext {
                euid: 0,
                egid: 5,
                auid: 1000,
                sid: 88,
                start_time: 123_456,
                tty: "pts/2".into(),
            },
        }
    }

    struct Fixture {
        ext: Arc<Extension>,
        time: u64,
    }

    fn fixture() -> Fixture {
        let time = unix_now();
        let process = Arc::new(Store::new(100, 3600));
        for pid in [10, 20] {
            let row = ProcessRow {
                base: base(pid, Syscall::Execve),
                cwd: "/home/x".into(),
                args: vec!["curl".to_string(), "it's".to_string()].into(),
                parent_path: "/bin/bash".into(),
                parent_args: vec!["bash".to_string(), "-l".to_string()].into(),
                exe_memfd: pid == 20,
                exe_deleted: pid == 10,
                exe_upper_layer: pid == 10,
            };
            process.push(time - u64::from(pid), row, time);
        }
        let socket = Arc::new(Store::new(100, 3600));
        let row = SocketRow {
            base: base(30, Syscall::Connect),
            fd: 5,
            family: 10,
            sock_type: 1,
            protocol: 6,
            local: Endpoint::Inet("::1".parse().expect("ip"), 40000),
            remote: Endpoint::Inet("2001:db8::7".parse().expect("ip"), 443),
            netns: 4026531993,
            via_io_uring: true,
        };
        socket.push(time, row, time);
        let tables: Vec<Arc<dyn Table>> = vec![
            Arc::new(EventTable {
                name: "p".into(),
                store: process,
            }),
            Arc::new(EventTable {
                name: "s".into(),
                store: socket,
            }),
        ];
        let ext = Arc::new(Extension::new(
            tables,
            Arc::default(),
            Arc::new(AtomicBool::new(false)),
        ));
        ext.uuid.store(4711, Ordering::Release);
        Fixture { ext, time }
    }

    /// A generated client talking to `serve_connection` over a socket pair.
    fn client(ext: &Arc<Extension>) -> Client {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let ext = ext.clone();
        std::thread::spawn(move || serve_connection(&ext, theirs));
        let read = ours.try_clone().expect("clone");
        ExtensionSyncClient::new(
            TBinaryInputProtocol::new(TBufferedReadTransport::new(read), true),
            TBinaryOutputProtocol::new(TBufferedWriteTransport::new(ours), true),
        )
    }

    fn generate(c: &mut Client, table: &str, context: &str) -> Vec<BTreeMap<String, String>> {
        let req = BTreeMap::from([
            ("action".to_string(), "generate".to_string()),
            ("context".to_string(), context.to_string()),
        ]);
        let resp = c.call("table".into(), table.into(), req).expect("call");
        let status = resp.status.expect("status");
        assert_eq!(status.code, Some(0), "{:?}", status.message);
        resp.response.expect("rows")
    }

    fn row(cells: &[(&str, String)]) -> BTreeMap<String, String> {
        cells
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn every_column_of_both_tables_arrives_as_the_generated_client_decodes_it() {
        let f = fixture();
        let mut c = client(&f.ext);
        let s = |v: &str| v.to_string();
        let shared = |pid: u32, syscall: &str| {
            vec![
                ("tid", (pid + 1).to_string()),
                ("pid", pid.to_string()),
                ("parent", s("1")),
                ("uid", s("1000")),
                ("gid", s("100")),
                ("cid", s("77")),
                ("exit_code", s("-13")),
                ("probe_error", s("1")),
                ("syscall", s(syscall)),
                ("path", s("/usr/bin/curl")),
                ("duration", s("4242")),
                ("ntime", s("987654321")),
                ("euid", s("0")),
                ("egid", s("5")),
                ("auid", s("1000")),
                ("sid", s("88")),
                ("tty", s("pts/2")),
                ("start_time", s("123456")),
            ]
        };
        let process = |pid: u32, eid: u64| {
            let mut cells = shared(pid, "execve");
            cells.extend([
                ("cwd", s("/home/x")),
                ("cmdline", s(r"curl 'it'\''s'")),
                ("json_cmdline", s(r#"["curl","it's"]"#)),
                ("parent_path", s("/bin/bash")),
                ("parent_cmdline", s("bash -l")),
                ("exe_memfd", u8::from(pid == 20).to_string()),
                ("exe_deleted", u8::from(pid == 10).to_string()),
                ("exe_upper_layer", u8::from(pid == 10).to_string()),
                ("time", (f.time - u64::from(pid)).to_string()),
                ("eid", eid.to_string()),
            ]);
            row(&cells)
        };
        assert_eq!(
            generate(&mut c, "p", ""),
            vec![process(10, 1), process(20, 2)]
        );

        let mut cells = shared(30, "connect");
        cells.extend([
            ("fd", s("5")),
            ("family", s("10")),
            ("type", s("1")),
            ("protocol", s("6")),
            ("local_address", s("::1")),
            ("remote_address", s("2001:db8::7")),
            ("local_port", s("40000")),
            ("remote_port", s("443")),
            ("netns", s("4026531993")),
            ("via_io_uring", s("1")),
            ("time", f.time.to_string()),
            ("eid", s("1")),
        ]);
        assert_eq!(generate(&mut c, "s", ""), vec![row(&cells)]);

        // colsUsed, and constraints on time and pid
        let some = generate(&mut c, "p", r#"{"colsUsed":["pid","cmdline"]}"#);
        assert_eq!(
            some,
            vec![
                row(&[("pid", s("10")), ("cmdline", s(r"curl 'it'\''s'"))]),
                row(&[("pid", s("20")), ("cmdline", s(r"curl 'it'\''s'"))])
            ]
        );
        let ctx = format!(
            r#"{{"colsUsed":["eid"],"constraints":[{{"name":"time","list":[{{"op":4,"expr":"{}"}}]}}]}}"#,
            f.time - 15
        );
        assert_eq!(generate(&mut c, "p", &ctx), vec![row(&[("eid", s("1"))])]);
        let ctx =
            r#"{"colsUsed":["eid"],"constraints":[{"name":"pid","list":[{"op":2,"expr":"20"}]}]}"#;
        assert_eq!(generate(&mut c, "p", ctx), vec![row(&[("eid", s("2"))])]);
        // the same rows as the tables give any other sink
        let mut all = Collect::default();
        f.ext.tables[0]
            .generate(&Default::default(), &mut all)
            .expect("collect");
        assert_eq!(generate(&mut c, "p", ""), all.0);
    }

    #[test]
    fn ping_columns_errors_and_shutdown_on_one_connection() {
        let f = fixture();
        let mut c = client(&f.ext);
        let st = c.ping().expect("ping");
        assert_eq!((st.code, st.uuid), (Some(0), Some(4711)));
        assert!(st.message.is_some_and(|m| !m.is_empty()));
        let req = BTreeMap::from([("action".to_string(), "columns".to_string())]);
        let resp = c
            .call("table".into(), "s".into(), req.clone())
            .expect("columns");
        let cols = resp.response.expect("routes");
        assert_eq!(cols.len(), 22 + 8);
        assert_eq!(
            (cols[14]["name"].as_str(), cols[14]["type"].as_str()),
            ("local_address", "TEXT")
        );
        for (registry, item, action) in [
            ("table", "nope", "generate"),
            ("config", "p", "generate"),
            ("table", "p", "insert"),
        ] {
            let req = BTreeMap::from([("action".to_string(), action.to_string())]);
            let resp = c.call(registry.into(), item.into(), req).expect("reply");
            let st = resp.status.expect("status");
            assert_eq!(st.code, Some(1), "{registry} {item} {action}");
            assert!(!st.message.unwrap_or_default().is_empty());
        }
        let req = BTreeMap::from([
            ("action".to_string(), "generate".to_string()),
            ("context".to_string(), "{not json".to_string()),
        ]);
        let st = c
            .call("table".into(), "p".into(), req)
            .expect("reply")
            .status;
        assert_eq!(st.and_then(|s| s.code), Some(1));
        assert!(!f.ext.shutdown.load(Ordering::Acquire));
        c.shutdown().expect("shutdown");
        assert!(f.ext.shutdown.load(Ordering::Acquire));
    }

    /// Send raw bytes on a fresh connection and half-close it; returns what the server wrote
    /// before it closed the connection (None: it did not close it within 10 s).
    fn reply_to(ext: &Arc<Extension>, bytes: &[u8]) -> Option<Vec<u8>> {
        use std::io::{Read, Write};
        let (mut ours, theirs) = UnixStream::pair().expect("pair");
        let ext = ext.clone();
        std::thread::spawn(move || serve_connection(&ext, theirs));
        let _ = ours.write_all(bytes);
        let _ = ours.shutdown(std::net::Shutdown::Write);
        ours.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reply = Vec::new();
        ours.read_to_end(&mut reply).ok().map(|_| reply)
    }

    #[test]
    fn hostile_bytes_close_the_connection_and_an_unknown_method_is_an_exception() {
        let f = fixture();
        let header = |name: &str| {
            let mut m = vec![0x80, 0x01, 0x00, 0x01];
            m.extend_from_slice(&(name.len() as i32).to_be_bytes());
            m.extend_from_slice(name.as_bytes());
            m.extend_from_slice(&7i32.to_be_bytes());
            m
        };
        // a call whose first argument announces a 1 GiB string
        let mut huge = header("call");
        huge.extend_from_slice(&[11, 0, 1]);
        huge.extend_from_slice(&(1i32 << 30).to_be_bytes());
        huge.extend_from_slice(b"abc");
        // a request map announcing 2^31-1 entries
        let mut many = header("call");
        many.extend_from_slice(&[13, 0, 3, 11, 11]);
        many.extend_from_slice(&i32::MAX.to_be_bytes());
        // a negative string length, a message name of 1 GiB, garbage, a truncated frame,
        // registry given as an i32
        let mut negative = header("call");
        negative.extend_from_slice(&[11, 0, 1]);
        negative.extend_from_slice(&(-5i32).to_be_bytes());
        let mut long_name = vec![0x80, 0x01, 0x00, 0x01];
        long_name.extend_from_slice(&(1i32 << 30).to_be_bytes());
        let mut wrong_type = header("call");
        wrong_type.extend_from_slice(&[8, 0, 1, 0, 0, 0, 1, 0]);
        let truncated = header("call")[..9].to_vec();
        for (what, bytes) in [
            ("huge string", huge),
            ("huge map", many),
            ("negative length", negative),
            ("huge name", long_name),
            ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            ("truncated", truncated),
        ] {
            assert_eq!(reply_to(&f.ext, &bytes), Some(vec![]), "{what}");
        }
        // arguments of the wrong type are skipped: the call names no table, status 1
        let reply = reply_to(&f.ext, &wrong_type).expect("closed after the reply");
        assert_eq!(&reply[..4], &[0x80, 0x01, 0x00, 0x02]);
        let mut c = client(&f.ext);
        let st = c
            .call(String::new(), String::new(), BTreeMap::new())
            .expect("reply");
        assert_eq!(st.status.and_then(|s| s.code), Some(1));
        // an unknown method gets a Thrift exception (message type 3)
        let mut unknown = header("explode");
        unknown.push(0); // no arguments
        let reply = reply_to(&f.ext, &unknown).expect("closed after the reply");
        assert_eq!(&reply[..4], &[0x80, 0x01, 0x00, 0x03]);
        // and the extension serves the next caller
        let mut c = client(&f.ext);
        assert_eq!(c.ping().expect("ping").code, Some(0));
        assert_eq!(generate(&mut c, "p", "").len(), 2);
    }

    #[test]
    fn the_socket_is_private_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("osquery.em.5");
        // SAFETY: umask only changes this process's file-creation mask.
        let old = unsafe { libc::umask(0) };
        let bound = Listener::bind(path.clone(), fixture().ext);
        unsafe { libc::umask(old) };
        let listener = bound.expect("bind");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(listener);
        assert!(!path.exists(), "removed when dropped");
    }
}
