//! Serving the tables to osquery over its extension socket with osquery-rust-ng, guarded
//! against that crate's known pitfalls: it connects once without retrying, a stale
//! `PATH.<uuid>` from a killed run stops its listener silently, and a refused registration
//! is only logged while the process keeps running.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use osquery_rust_ng::plugin::Plugin;
use osquery_rust_ng::Server;

use crate::logging::{self, ServerFailure};
use crate::probes::StartupKind;

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

/// Register with osquery and serve until osquery goes away, asks us to stop, or a signal.
pub fn serve(socket: &Path, timeout: Duration, plugins: Vec<Plugin>) -> Result<(), ExitError> {
    wait_for_socket(socket, timeout)?;
    remove_stale_sockets(socket);
    let socket_str = socket.to_string_lossy().into_owned();

    let start = Instant::now();
    let mut server = loop {
        match Server::<Plugin>::new(Some(EXTENSION_NAME), &socket_str) {
            Ok(s) => break s,
            Err(e) if start.elapsed() >= timeout => {
                return Err(ExitError::new(
                    EXIT_NO_OSQUERY,
                    anyhow::anyhow!("connecting to osquery at {socket_str}: {e}"),
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let names: Vec<String> = plugins
        .iter()
        .map(osquery_rust_ng::plugin::OsqueryPlugin::name)
        .collect();
    for p in plugins {
        server.register_plugin(p);
    }
    logging::watch_server(server.get_stop_handle());
    tracing::info!(socket = %socket_str, tables = ?names, "registering with osquery");

    let result = server.run_with_signal_handling();
    match logging::server_failure() {
        Some(ServerFailure::Refused { code, message }) => {
            let _ = std::fs::remove_file(format!("{socket_str}.0"));
            let hint = if message.contains("conflicts") || message.contains("exists") {
                format!(
                    " A table name is taken: set other names with process_table/socket_table \
                     (tables: {})",
                    names.join(", ")
                )
            } else {
                String::new()
            };
            Err(ExitError::new(
                EXIT_REFUSED,
                anyhow::anyhow!(
                    "osquery refused the registration (status {code}): {message}.{hint}"
                ),
            ))
        }
        Some(ServerFailure::Listener(e)) => Err(ExitError::new(
            EXIT_STARTUP,
            anyhow::anyhow!("the extension's own socket could not be served: {e}"),
        )),
        None => match result {
            Ok(()) => {
                tracing::info!("osquery-ebpf stopped");
                Ok(())
            }
            Err(e) => Err(ExitError::new(
                EXIT_NO_OSQUERY,
                anyhow::anyhow!("talking to osquery at {socket_str}: {e}"),
            )),
        },
    }
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
