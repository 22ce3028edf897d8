//! Serving the tables to osquery: wait for its socket, register, answer on our own socket
//! (`SOCKET.<uuid>`, see [`crate::protocol::serve`]), ping osquery, and register again when
//! osquery stops listing us while both keep running (seen with osqueryd 5.23.1:
//! fleetdm/fleet #52093).

use std::io::{BufReader, BufWriter, ErrorKind};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thrift::protocol::TBinaryOutputProtocol;

use crate::probes::StartupKind;
use crate::protocol::bounded::{BoundedInput, MAX_REQUEST};
use crate::protocol::osquery::{
    ExtensionManagerSyncClient, InternalExtensionInfo, TExtensionManagerSyncClient,
    TExtensionSyncClient,
};
use crate::protocol::serve::{Extension, Listener, ServeCounters};
use crate::tables::Table;

pub const EXTENSION_NAME: &str = "osquery-ebpf";

/// Exit statuses of the extension process.
pub const EXIT_OK: i32 = 0;
pub const EXIT_STARTUP: i32 = 1;
pub const EXIT_REFUSED: i32 = 2;
pub const EXIT_NO_OSQUERY: i32 = 3;
/// Start-up failures of the probes, one status each (see [`crate::probes::StartupKind`]).
pub const EXIT_PRIVILEGES: i32 = 4;
pub const EXIT_NO_BTF: i32 = 5;
pub const EXIT_NO_TRACEFS: i32 = 6;
pub const EXIT_PROBES: i32 = 7;
pub const EXIT_NO_TRAMPOLINES: i32 = 8;

#[derive(Debug)]
pub struct ExitError {
    pub code: i32,
    pub error: anyhow::Error,
}

impl ExitError {
    pub fn new(code: i32, error: anyhow::Error) -> Self {
        ExitError { code, error }
    }
}

impl<E: Into<anyhow::Error>> From<E> for ExitError {
    fn from(e: E) -> Self {
        let error = e.into();
        let code = error
            .chain()
            .find_map(|c| c.downcast_ref::<StartupKind>())
            .map_or(EXIT_STARTUP, |k| match k {
                StartupKind::Privileges => EXIT_PRIVILEGES,
                StartupKind::NoBtf => EXIT_NO_BTF,
                StartupKind::NoTracefs => EXIT_NO_TRACEFS,
                StartupKind::Probes => EXIT_PROBES,
                StartupKind::NoTrampolines => EXIT_NO_TRAMPOLINES,
            });
        ExitError::new(code, error)
    }
}

/// Wait until osquery's socket accepts a connection.
pub fn wait_for_socket(socket: &Path, timeout: Duration) -> Result<(), ExitError> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(socket) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() >= timeout => {
                return Err(ExitError::new(
                    EXIT_NO_OSQUERY,
                    anyhow::anyhow!(
                    "osquery's extension socket {} did not accept a connection within {} s: {e}. \
                         Is osqueryd running with extensions enabled?",
                    socket.display(),
                    timeout.as_secs()
                ),
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Remove `SOCKET.<number>` files that no process listens on (left by a killed run), so that
/// the listener for the uuid osquery hands out can bind. Returns the paths removed.
pub fn remove_stale_sockets(socket: &Path) -> Vec<std::path::PathBuf> {
    let (Some(dir), Some(base)) = (socket.parent(), socket.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", base.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(suffix) = name.strip_prefix(&prefix) else {
            continue;
        };
        if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = entry.path();
        if let Err(e) = UnixStream::connect(&path) {
            if e.kind() == ErrorKind::ConnectionRefused && std::fs::remove_file(&path).is_ok() {
                tracing::info!(path = %path.display(), "removed a stale extension socket");
                removed.push(path);
            }
        }
    }
    removed
}

/// How often osquery is pinged (osquery-rust-ng's interval, which osquery has accepted).
const PING_INTERVAL: Duration = Duration::from_millis(500);
/// How often the extension checks that osquery still lists its registration.
const REGISTRATION_CHECK: Duration = Duration::from_secs(3);
/// A call to osquery that takes longer than this has failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type ManagerClient = ExtensionManagerSyncClient<
    BoundedInput<BufReader<UnixStream>>,
    TBinaryOutputProtocol<BufWriter<UnixStream>>,
>;

fn connect(socket: &Path) -> std::io::Result<ManagerClient> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    let read = stream.try_clone()?;
    Ok(ExtensionManagerSyncClient::new(
        BoundedInput::new(BufReader::new(read), MAX_REQUEST),
        TBinaryOutputProtocol::new(BufWriter::new(stream), true),
    ))
}

/// Register the tables and serve them on `SOCKET.<uuid>`.
fn register(
    client: &mut ManagerClient,
    ext: &Arc<Extension>,
    socket: &Path,
) -> Result<Listener, ExitError> {
    let info = InternalExtensionInfo::new(
        EXTENSION_NAME.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
        "Unknown".to_string(),
        "Unknown".to_string(),
    );
    let status = client
        .register_extension(info, ext.registry())
        .map_err(|e| {
            ExitError::new(
                EXIT_NO_OSQUERY,
                anyhow::anyhow!("registering with osquery at {}: {e}", socket.display()),
            )
        })?;
    let names = ext.table_names().join(", ");
    if status.code != Some(0) {
        let message = status.message.unwrap_or_default();
        let hint = if message.contains("conflicts") || message.contains("exists") {
            format!(
                " A table name is taken: set other names with process_table/socket_table \
                 (tables: {names})"
            )
        } else {
            String::new()
        };
        return Err(ExitError::new(
            EXIT_REFUSED,
            anyhow::anyhow!(
                "osquery refused the registration (status {}): {message}.{hint}",
                status.code.unwrap_or(-1)
            ),
        ));
    }
    let uuid = status.uuid.unwrap_or(0);
    ext.uuid.store(uuid, Ordering::Release);
    ext.counters.registrations.fetch_add(1, Ordering::Relaxed);
    let path = PathBuf::from(format!("{}.{uuid}", socket.display()));
    remove_stale_sockets(socket);
    let listener = Listener::bind(path.clone(), ext.clone()).map_err(|e| {
        ExitError::new(
            EXIT_STARTUP,
            anyhow::anyhow!(
                "the extension's own socket {} could not be served: {e}",
                path.display()
            ),
        )
    })?;
    tracing::info!(uuid, socket = %path.display(), tables = %names, "registered with osquery");
    Ok(listener)
}

/// Sleep `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Acquire) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}

/// Register with osquery and serve until osquery goes away, asks us to stop, or a signal.
pub fn serve(
    socket: &Path,
    timeout: Duration,
    tables: Vec<Arc<dyn Table>>,
    counters: Arc<ServeCounters>,
) -> Result<(), ExitError> {
    wait_for_socket(socket, timeout)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let ext = Arc::new(Extension::new(tables, counters, stop.clone()));
    let start = Instant::now();
    let mut client = loop {
        match connect(socket) {
            Ok(c) => break c,
            Err(e) if start.elapsed() >= timeout => {
                return Err(ExitError::new(
                    EXIT_NO_OSQUERY,
                    anyhow::anyhow!("connecting to osquery at {}: {e}", socket.display()),
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let mut listener = register(&mut client, &ext, socket)?;
    let mut checked = Instant::now();
    loop {
        sleep_unless(&stop, PING_INTERVAL);
        if stop.load(Ordering::Acquire) {
            break;
        }
        if client.ping().is_err() {
            // one new connection, in case only ours broke
            match connect(socket).map(|mut c| c.ping().map(|_| c)) {
                Ok(Ok(c)) => client = c,
                _ => {
                    tracing::info!("osquery went away");
                    break;
                }
            }
        }
        if checked.elapsed() >= REGISTRATION_CHECK {
            checked = Instant::now();
            let uuid = ext.uuid.load(Ordering::Acquire);
            if let Ok(list) = client.extensions() {
                if !list.contains_key(&uuid) {
                    tracing::warn!(
                        uuid,
                        "osquery no longer lists this extension: registering again"
                    );
                    drop(listener); // osquery may hand out the same uuid again
                    listener = register(&mut client, &ext, socket)?;
                }
            }
        }
    }
    let _ = client.deregister_extension(ext.uuid.load(Ordering::Acquire));
    drop(listener);
    tracing::info!("osquery-ebpf stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn removes_only_dead_numbered_sockets() {
        let dir = tempfile::tempdir().expect("tmp");
        let sock = dir.path().join("osquery.em");
        let dead = dir.path().join("osquery.em.4242");
        drop(UnixListener::bind(&dead).expect("bind dead"));
        let live = dir.path().join("osquery.em.7");
        let _listener = UnixListener::bind(&live).expect("bind live");
        let other = dir.path().join("osquery.em.backup");
        std::fs::write(&other, b"x").expect("write");

        let removed = remove_stale_sockets(&sock);
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!dead.exists() && live.exists() && other.exists());
    }

    #[test]
    fn waiting_for_a_missing_socket_times_out_with_a_clear_message() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = wait_for_socket(&dir.path().join("none"), Duration::from_millis(200))
            .expect_err("no socket");
        assert_eq!(err.code, EXIT_NO_OSQUERY);
        assert!(err
            .error
            .to_string()
            .contains("did not accept a connection"));
    }
}
