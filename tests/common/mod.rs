//! Test harness: a fake osquery extension manager that behaves like osqueryd, and a client for
//! the extension's own socket. Speaks the real Thrift protocol (binary protocol, buffered
//! transport, Unix socket).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::server::TProcessor;
use thrift::transport::{TBufferedReadTransport, TBufferedWriteTransport};

use osquery::{
    ExtensionManagerSyncHandler, ExtensionManagerSyncProcessor, ExtensionRegistry,
    ExtensionSyncClient, ExtensionSyncHandler,
};
pub use osquery::{
    ExtensionResponse, ExtensionStatus, InternalExtensionInfo, TExtensionSyncClient,
};
use osquery_ebpf::protocol::osquery;

pub type Row = BTreeMap<String, String>;

#[derive(Default)]
pub struct ManagerState {
    /// uuid -> (info, registry)
    pub registered: BTreeMap<i64, (InternalExtensionInfo, ExtensionRegistry)>,
    pub deregistered: Vec<i64>,
    /// Refuse every registration with this message.
    pub refuse: Option<String>,
    /// The uuid to hand out next.
    pub next_uuid: i64,
    pub pings: u64,
}

#[derive(Clone)]
struct Handler(Arc<Mutex<ManagerState>>);

fn status(code: i32, message: &str, uuid: i64) -> ExtensionStatus {
    ExtensionStatus::new(code, message.to_string(), uuid)
}

impl ExtensionSyncHandler for Handler {
    fn handle_ping(&self) -> thrift::Result<ExtensionStatus> {
        self.0.lock().expect("state").pings += 1;
        Ok(status(0, "OK", 0))
    }
    fn handle_call(
        &self,
        _registry: String,
        _item: String,
        _request: BTreeMap<String, String>,
    ) -> thrift::Result<ExtensionResponse> {
        Ok(ExtensionResponse::new(
            status(1, "not supported", 0),
            vec![],
        ))
    }
    fn handle_shutdown(&self) -> thrift::Result<()> {
        Ok(())
    }
}

impl ExtensionManagerSyncHandler for Handler {
    fn handle_extensions(&self) -> thrift::Result<BTreeMap<i64, InternalExtensionInfo>> {
        let s = self.0.lock().expect("state");
        Ok(s.registered
            .iter()
            .map(|(k, (i, _))| (*k, i.clone()))
            .collect())
    }
    fn handle_options(&self) -> thrift::Result<BTreeMap<String, osquery::InternalOptionInfo>> {
        Ok(BTreeMap::new())
    }
    fn handle_register_extension(
        &self,
        info: InternalExtensionInfo,
        registry: ExtensionRegistry,
    ) -> thrift::Result<ExtensionStatus> {
        let mut s = self.0.lock().expect("state");
        if let Some(msg) = &s.refuse {
            return Ok(status(1, msg, 0));
        }
        if s.registered.values().any(|(i, _)| i.name == info.name) {
            return Ok(status(1, "Duplicate extension registered", 0));
        }
        let uuid = s.next_uuid;
        s.next_uuid += 1;
        s.registered.insert(uuid, (info, registry));
        Ok(status(0, "OK", uuid))
    }
    fn handle_deregister_extension(&self, uuid: i64) -> thrift::Result<ExtensionStatus> {
        let mut s = self.0.lock().expect("state");
        s.registered.remove(&uuid);
        s.deregistered.push(uuid);
        Ok(status(0, "OK", uuid))
    }
    fn handle_query(&self, _sql: String) -> thrift::Result<ExtensionResponse> {
        Ok(ExtensionResponse::new(
            status(1, "not supported", 0),
            vec![],
        ))
    }
    fn handle_get_query_columns(&self, _sql: String) -> thrift::Result<ExtensionResponse> {
        Ok(ExtensionResponse::new(
            status(1, "not supported", 0),
            vec![],
        ))
    }
}

/// A fake osqueryd extension manager on a temporary Unix socket.
pub struct Manager {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: Arc<Mutex<ManagerState>>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
}

/// Managers in one test process hand out different uuids.
static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Manager {
    pub fn start() -> Manager {
        let dir = tempfile::Builder::new()
            .prefix("osq-ebpf-test")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("osquery.em");
        let state = Arc::new(Mutex::new(ManagerState {
            next_uuid: 1000
                + i64::from(std::process::id() % 20000)
                + i64::from(NEXT.fetch_add(100, Ordering::Relaxed)),
            ..ManagerState::default()
        }));
        let m = Manager {
            dir,
            socket,
            state,
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        m.listen();
        m
    }

    fn listen(&self) {
        let listener = UnixListener::bind(&self.socket).expect("bind manager socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let (state, stop, conns) = (self.state.clone(), self.stop.clone(), self.conns.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).expect("blocking");
                        conns
                            .lock()
                            .expect("conns")
                            .push(stream.try_clone().expect("clone"));
                        let handler = Handler(state.clone());
                        std::thread::spawn(move || serve_conn(stream, handler));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }

    /// osqueryd goes away: stop listening, close every connection, remove the socket.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::Release);
        for c in self.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    pub fn refuse(&self, message: &str) {
        self.state.lock().expect("state").refuse = Some(message.to_string());
    }

    /// Drop a registration without telling the extension, as osqueryd 5.23.1 was seen to do
    /// (fleetdm/fleet #52093): pings go on being answered.
    pub fn forget(&self, uuid: i64) {
        self.state.lock().expect("state").registered.remove(&uuid);
    }

    /// Wait for a registration other than `old`; returns its uuid.
    pub fn wait_registered_again(&self, old: i64, timeout: Duration) -> Option<i64> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let s = self.state.lock().expect("state");
            if let Some(uuid) = s.registered.keys().find(|u| **u != old) {
                return Some(*uuid);
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn set_next_uuid(&self, uuid: i64) {
        self.state.lock().expect("state").next_uuid = uuid;
    }

    /// Wait for a registration; returns its uuid.
    pub fn wait_registered(&self, timeout: Duration) -> Option<i64> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(uuid) = self.state.lock().expect("state").registered.keys().next() {
                return Some(*uuid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn registry(&self, uuid: i64) -> Option<ExtensionRegistry> {
        self.state
            .lock()
            .expect("state")
            .registered
            .get(&uuid)
            .map(|(_, r)| r.clone())
    }

    pub fn info(&self, uuid: i64) -> Option<InternalExtensionInfo> {
        self.state
            .lock()
            .expect("state")
            .registered
            .get(&uuid)
            .map(|(i, _)| i.clone())
    }

    pub fn ext_socket(&self, uuid: i64) -> PathBuf {
        PathBuf::from(format!("{}.{uuid}", self.socket.display()))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve_conn(stream: UnixStream, handler: Handler) {
    let processor = ExtensionManagerSyncProcessor::new(handler);
    let read = stream.try_clone().expect("clone");
    let mut i = TBinaryInputProtocol::new(TBufferedReadTransport::new(read), true);
    let mut o = TBinaryOutputProtocol::new(TBufferedWriteTransport::new(stream), true);
    while processor.process(&mut i, &mut o).is_ok() {}
}

/// A client's socket that retries reads and writes interrupted by EINTR itself.
///
/// A read on a socket with a receive timeout (`SO_RCVTIMEO`) fails with EINTR when the
/// process is stopped and continued (SIGSTOP/SIGCONT, a cgroup freeze), even without a
/// signal handler. thrift 0.17's `TBufferedReadTransport::read` drops the bytes it already
/// copied when a refill fails, and `read_exact` then retries, so the stream loses its place
/// ("received bad version"). Retrying here, below the buffer, keeps every byte.
pub struct Chan(UnixStream);

impl std::io::Read for Chan {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl std::io::Write for Chan {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

type Client = ExtensionSyncClient<
    TBinaryInputProtocol<TBufferedReadTransport<Chan>>,
    TBinaryOutputProtocol<TBufferedWriteTransport<Chan>>,
>;

/// What osqueryd does on the extension's socket.
pub struct ExtClient {
    client: Client,
}

impl ExtClient {
    pub fn connect(path: &Path, timeout: Duration) -> ExtClient {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > timeout => {
                    panic!("cannot connect to {}: {e}", path.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let read = stream.try_clone().expect("clone");
        ExtClient {
            client: ExtensionSyncClient::new(
                // a 64 KiB read buffer: a full-store reply is megabytes
                TBinaryInputProtocol::new(
                    TBufferedReadTransport::with_capacity(64 << 10, Chan(read)),
                    true,
                ),
                TBinaryOutputProtocol::new(TBufferedWriteTransport::new(Chan(stream)), true),
            ),
        }
    }

    pub fn ping(&mut self) -> thrift::Result<ExtensionStatus> {
        self.client.ping()
    }

    pub fn shutdown(&mut self) -> thrift::Result<()> {
        self.client.shutdown()
    }

    pub fn call(
        &mut self,
        table: &str,
        request: &[(&str, &str)],
    ) -> thrift::Result<ExtensionResponse> {
        let req = request
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.client.call("table".into(), table.into(), req)
    }

    pub fn columns(&mut self, table: &str) -> Vec<Row> {
        let resp = self.call(table, &[("action", "columns")]).expect("columns");
        assert_eq!(resp.status.and_then(|s| s.code), Some(0));
        resp.response.unwrap_or_default()
    }

    /// generate; panics unless the status is 0.
    pub fn generate(&mut self, table: &str, context: &str) -> Vec<Row> {
        let resp = self
            .call(table, &[("action", "generate"), ("context", context)])
            .expect("generate call");
        let st = resp.status.clone().expect("status");
        assert_eq!(st.code, Some(0), "generate failed: {:?}", st.message);
        resp.response.unwrap_or_default()
    }
}

/// The bytes of `call("table", table, {action: generate, context})`, as osquery sends them.
pub fn generate_request(table: &str, context: &str) -> Vec<u8> {
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let mut m = vec![0x80, 0x01, 0x00, 0x01];
    string(&mut m, "call");
    m.extend_from_slice(&1i32.to_be_bytes());
    m.extend_from_slice(&[11, 0, 1]);
    string(&mut m, "table");
    m.extend_from_slice(&[11, 0, 2]);
    string(&mut m, table);
    m.extend_from_slice(&[13, 0, 3, 11, 11]);
    m.extend_from_slice(&2i32.to_be_bytes());
    for s in ["action", "generate", "context", context] {
        string(&mut m, s);
    }
    m.extend_from_slice(&[0, 0]);
    m
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub const CONTAINERS_TABLE: &str = "bpf_process_containers_v2";
pub const CONTAINERS_COLUMNS: &[&str] = &[
    "cid",
    "cgroup_path",
    "container_id",
    "container_runtime",
    "pod_uid",
    "first_seen",
    "last_seen",
];

/// A made-up container id, 64 hex digits, distinct per test process and `salt`.
pub fn hex_id(salt: u64) -> String {
    let seed = (u64::from(std::process::id()) + salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{seed:016x}").repeat(4)
}

/// The `bpf_process_containers_v2` row that names container `id` (waits up to 15 s for it).
pub fn container_row(h: &mut Harness, id: &str) -> Row {
    let start = std::time::Instant::now();
    loop {
        let rows = h
            .client
            .generate(CONTAINERS_TABLE, &context(CONTAINERS_COLUMNS, &[]));
        if let Some(r) = rows.into_iter().find(|r| r["container_id"] == id) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no bpf_process_containers_v2 row names container {id}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub const PROCESS_TABLE: &str = "bpf_process_events_v2";
/// The process table's columns with the hidden ones this project adds (the old 17 + 11).
pub const PROCESS_COLUMN_COUNT: usize = 28;
pub const PROCESS_COLUMNS: &[&str] = &[
    "tid",
    "pid",
    "parent",
    "uid",
    "gid",
    "cid",
    "exit_code",
    "probe_error",
    "syscall",
    "path",
    "cwd",
    "cmdline",
    "duration",
    "json_cmdline",
    "ntime",
    "time",
    "eid",
];

pub const SOCKET_TABLE: &str = "bpf_socket_events_v2";
pub const SOCKET_COLUMNS: &[&str] = &[
    "tid",
    "pid",
    "parent",
    "uid",
    "gid",
    "cid",
    "exit_code",
    "probe_error",
    "syscall",
    "path",
    "fd",
    "family",
    "type",
    "protocol",
    "local_address",
    "remote_address",
    "local_port",
    "remote_port",
    "duration",
    "ntime",
    "time",
    "eid",
];

/// A context shaped like osquery's: every column listed, constrained or not.
pub fn context(columns: &[&str], constraints: &[(&str, i32, &str)]) -> String {
    let list: Vec<Value> = columns
        .iter()
        .map(|c| {
            let items: Vec<Value> = constraints
                .iter()
                .filter(|(n, _, _)| n == c)
                .map(|(_, op, expr)| json!({"op": op, "expr": expr}))
                .collect();
            let affinity = if matches!(
                *c,
                "path" | "cwd" | "cmdline" | "syscall" | "exit_code" | "json_cmdline" | "ntime"
            ) {
                "TEXT"
            } else {
                "BIGINT"
            };
            json!({"name": c, "list": items, "affinity": affinity})
        })
        .collect();
    let bitset: u64 = (1u64 << columns.len()) - 1;
    json!({"constraints": list, "colsUsed": columns, "colsUsedBitset": bitset}).to_string()
}

/// The extension process, started as osqueryd starts an autoloaded extension.
pub struct Extension {
    pub child: Child,
    pub log: PathBuf,
}

impl Extension {
    pub fn spawn(manager: &Manager, env: &[(&str, &str)]) -> Extension {
        Self::spawn_with_args(manager, env, &["--timeout", "3", "--interval", "3"])
    }

    pub fn spawn_with_args(manager: &Manager, env: &[(&str, &str)], args: &[&str]) -> Extension {
        Self::spawn_exe(
            manager,
            Path::new(env!("CARGO_BIN_EXE_osquery-ebpf")),
            env,
            args,
        )
    }

    /// Start `exe` (another build of the extension) as osqueryd would.
    pub fn spawn_exe(
        manager: &Manager,
        exe: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Extension {
        let log = manager.dir.path().join("extension.log");
        let err = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(exe);
        cmd.arg("--socket")
            .arg(&manager.socket)
            .args(args)
            .arg("--verbose")
            .env("OSQUERY_EXTENSION", std::process::id().to_string())
            .env("OSQUERY_EBPF_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Extension {
            child: cmd.spawn().expect("spawn extension"),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }
}

impl Drop for Extension {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A manager with a registered extension and a client on its socket.
pub struct Harness {
    pub ext: Extension,
    pub client: ExtClient,
    pub uuid: i64,
    pub manager: Manager,
}

impl Harness {
    pub fn start(env: &[(&str, &str)]) -> Harness {
        Self::start_exe(Path::new(env!("CARGO_BIN_EXE_osquery-ebpf")), env)
    }

    /// The same with another build of the extension (benchmarks compare two).
    pub fn start_exe(exe: &Path, env: &[(&str, &str)]) -> Harness {
        let manager = Manager::start();
        let ext = Extension::spawn_exe(&manager, exe, env, &["--timeout", "3", "--interval", "3"]);
        let uuid = manager
            .wait_registered(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("extension did not register; log:\n{}", ext.log_text()));
        let client = ExtClient::connect(&manager.ext_socket(uuid), Duration::from_secs(10));
        Harness {
            ext,
            client,
            uuid,
            manager,
        }
    }

    /// Poll `table` until `done(rows)` holds for the rows matching `pid`, or time out.
    pub fn poll_rows(
        &mut self,
        table: &str,
        columns: &[&str],
        pid: u32,
        done: impl Fn(&[Row]) -> bool,
    ) -> Vec<Row> {
        let ctx = context(columns, &[("pid", 2, &pid.to_string())]);
        let start = Instant::now();
        loop {
            let rows = self.client.generate(table, &ctx);
            if done(&rows) || start.elapsed() > Duration::from_secs(15) {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run `/bin/true ARGS` to completion; returns its pid and its execve row (panics when
    /// the row does not appear).
    pub fn exec_true<S: AsRef<std::ffi::OsStr>>(&mut self, args: &[S]) -> (u32, Row) {
        let mut child = Command::new("/bin/true")
            .args(args)
            .spawn()
            .expect("spawn /bin/true");
        let pid = child.id();
        child.wait().expect("wait /bin/true");
        let rows = self.rows_for_pid(pid, |r| find(r, "execve").is_some());
        let row = find(&rows, "execve")
            .unwrap_or_else(|| panic!("no execve row for {pid}: {rows:?}"))
            .clone();
        (pid, row)
    }

    /// Process-table rows of `pid`, polled until `done` holds.
    pub fn rows_for_pid(&mut self, pid: u32, done: impl Fn(&[Row]) -> bool) -> Vec<Row> {
        self.poll_rows(PROCESS_TABLE, PROCESS_COLUMNS, pid, done)
    }
}

/// The `path` column of an exec of /bin/true: the binary behind any symlinks (/bin is a link
/// to /usr/bin on merged-/usr systems).
pub fn bin_true_path() -> String {
    std::fs::canonicalize("/bin/true")
        .expect("/bin/true")
        .to_string_lossy()
        .into_owned()
}

/// CLOCK_BOOTTIME now, in ns (the probes' clock).
pub fn boot_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).expect("clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `osquery_ebpf_stats` as name -> value.
pub fn stats(h: &mut Harness) -> std::collections::BTreeMap<String, u64> {
    h.client
        .generate("osquery_ebpf_stats", "{}")
        .into_iter()
        .map(|r| (r["name"].clone(), r["value"].parse().unwrap_or(0)))
        .collect()
}

/// Skip (with a message) when not root: the probes need it. CI runs as root.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI must run the kernel tests as root");
    }
    eprintln!("skipped: needs root to load BPF programs");
    false
}

/// Path of the workload helper built by `cargo test` (an example target).
pub fn workload() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join("examples").join("workload");
    if !p.exists() {
        // `cargo test` builds it; `cargo test --all-targets` or `--test X` do not.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--example", "workload"])
            .status()
            .expect("cargo build --example workload");
        assert!(st.success(), "building the workload helper failed");
    }
    assert!(p.exists(), "workload helper missing at {}", p.display());
    p
}

pub fn find<'a>(rows: &'a [Row], syscall: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r["syscall"] == syscall)
}

pub fn syscalls(rows: &[Row]) -> HashSet<String> {
    rows.iter().map(|r| r["syscall"].clone()).collect()
}

/// A cgroup of the test's own (and one inside it) in the cgroup v2 hierarchy, removed on drop.
pub struct TestCgroup {
    pub outer: PathBuf,
    pub inner: PathBuf,
}

impl TestCgroup {
    pub fn create(inner_name: &str) -> Option<TestCgroup> {
        let Some(root) = osquery_ebpf::filters::cgroup2_root() else {
            eprintln!("skipping the cgroup part: no cgroup v2 hierarchy is mounted");
            return None;
        };
        let outer = root.join(format!("osquery-ebpf-test-{}", std::process::id()));
        let inner = outer.join(inner_name);
        if let Err(e) = std::fs::create_dir_all(&inner) {
            eprintln!(
                "skipping the cgroup part: cannot create {}: {e}",
                inner.display()
            );
            return None;
        }
        Some(TestCgroup { outer, inner })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.inner);
        let _ = std::fs::remove_dir(&self.outer);
    }
}

/// Start `osquery-ebpf watch --json`, run `act` once it shows rows, and return the execve row
/// whose command line is `cmdline` (watch stopped, its exit checked).
pub fn watch_exec_row(act: impl FnOnce(), cmdline: &str) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_osquery-ebpf"));
    cmd.env("OSQUERY_EBPF_CONFIG", "/dev/null");
    let (mut w, ready) = WatchStream::start(cmd, "watch-ready");
    assert!(ready.is_some(), "watch never showed a row");
    act();
    let row = w
        .wait_row(Duration::from_secs(15), |v| {
            v["cmdline"] == cmdline && v["syscall"] == "execve"
        })
        .unwrap_or_else(|| panic!("no row of {cmdline} in watch"));
    let (status, stderr) = w.stop();
    assert!(status.success(), "{stderr}");
    row
}

/// A running `osquery-ebpf watch --json`, its rows read as they come.
pub struct WatchStream {
    child: std::process::Child,
    rows: std::sync::mpsc::Receiver<serde_json::Value>,
    stderr: std::thread::JoinHandle<String>,
}

/// What a `watch` run printed.
pub struct Watched {
    pub status: std::process::ExitStatus,
    /// The marker's row.
    pub row: Option<serde_json::Value>,
    pub stderr: String,
}

impl WatchStream {
    /// Start `cmd watch --json` and wait until it shows rows: `/bin/true MARKER` runs every
    /// half second until its row arrives (panics after 60 s). Returns the stream and that row.
    pub fn start(mut cmd: Command, marker: &str) -> (WatchStream, Option<serde_json::Value>) {
        let mut child = cmd
            .args(["watch", "--json", "--stats-every", "0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn watch");
        let (tx, rows) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok)
            {
                let row = serde_json::from_str(&line).unwrap_or_default();
                if tx.send(row).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(err), &mut s);
            s
        });
        let mut w = WatchStream {
            child,
            rows,
            stderr,
        };
        let want = format!("/bin/true {marker}");
        let start = Instant::now();
        let mut found = None;
        while found.is_none() && start.elapsed() < Duration::from_secs(60) {
            let _ = Command::new("/bin/true").arg(marker).status();
            found = w.wait_row(Duration::from_millis(500), |r| {
                r["cmdline"] == want.as_str()
            });
            if w.child.try_wait().ok().flatten().is_some() {
                break;
            }
        }
        (w, found)
    }

    /// The next row for which `pred` holds, within `timeout`.
    pub fn wait_row(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rows.recv_timeout(left) {
                Ok(row) if pred(&row) => return Some(row),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Stop it with SIGTERM; returns its exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = self.child.wait().expect("wait watch");
        (status, self.stderr.join().unwrap_or_default())
    }
}

/// Run `watch` until the row of `/bin/true MARKER` shows (see [`WatchStream::start`]), then
/// stop it.
pub fn watch_with_marker(cmd: Command, marker: &str) -> Watched {
    let (w, row) = WatchStream::start(cmd, marker);
    let (status, stderr) = w.stop();
    Watched {
        status,
        row,
        stderr,
    }
}

/// Run `cmd` to completion; panics (with its output) unless it succeeds. Returns its stdout,
/// trimmed.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run `cmd` to completion (stdout discarded into a pipe); panics unless it succeeds. Returns
/// its pid.
pub fn run_to_end(cmd: &mut Command) -> u32 {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let st = child.wait().expect("wait");
    assert!(st.success(), "{cmd:?}: {st}");
    pid
}
