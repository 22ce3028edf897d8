//! tracing set-up, and the bridge that carries the `log` records of osquery-rust-ng (and
//! libbpf-rs) into tracing. The bridge also watches osquery-rust-ng's records for the two
//! failures it only logs: a refused registration and a listener that could not start.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use osquery_rust_ng::ServerStopHandle;
use tracing_subscriber::EnvFilter;

pub fn init(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("OSQUERY_EBPF_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},libbpf=warn")));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .finish();
    // set_global_default, not try_init: try_init would install tracing-log's LogTracer as the
    // `log` logger, and the bridge below must be that logger.
    let _ = tracing::subscriber::set_global_default(subscriber);
    let _ = log::set_logger(&BRIDGE);
    // Debug, whatever the verbosity: the watch below needs osquery-rust-ng's debug records;
    // tracing's filter decides what is printed.
    log::set_max_level(log::LevelFilter::Debug);
}

/// Why the extension server stopped on its own, when osquery-rust-ng only logged it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFailure {
    Refused { code: i64, message: String },
    Listener(String),
}

#[derive(Default)]
struct Watch {
    stop: Option<ServerStopHandle>,
    failure: Option<ServerFailure>,
}

fn watch() -> &'static Mutex<Watch> {
    static WATCH: OnceLock<Mutex<Watch>> = OnceLock::new();
    WATCH.get_or_init(Mutex::default)
}

/// Arm the watch for a server about to start.
pub fn watch_server(stop: ServerStopHandle) {
    if let Ok(mut w) = watch().lock() {
        w.stop = Some(stop);
        w.failure = None;
    }
}

pub fn server_failure() -> Option<ServerFailure> {
    watch().lock().ok().and_then(|w| w.failure.clone())
}

/// Recognise osquery-rust-ng's "Status N registering extension NAME (UUID): MESSAGE" and
/// "Listener thread exited: ERR" records.
pub fn classify(target: &str, message: &str) -> Option<ServerFailure> {
    if !target.starts_with("osquery_rust_ng") {
        return None;
    }
    if let Some(rest) = message.strip_prefix("Status ") {
        let (code, tail) = rest.split_once(' ')?;
        let code: i64 = code.parse().ok()?;
        if !tail.starts_with("registering extension") || code == 0 {
            return None;
        }
        let message = tail.split_once("): ").map(|(_, m)| m).unwrap_or(tail);
        return Some(ServerFailure::Refused {
            code,
            message: message.to_string(),
        });
    }
    message
        .strip_prefix("Listener thread exited: ")
        .map(|e| ServerFailure::Listener(e.to_string()))
}

struct Bridge;
static BRIDGE: Bridge = Bridge;

impl log::Log for Bridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args().to_string();
        let target = record.target();
        if let Some(failure) = classify(target, &message) {
            if let Ok(mut w) = watch().lock() {
                // A listener that exits after shutdown was requested is the normal case.
                let stopping = w.stop.as_ref().is_some_and(|s| !s.is_running());
                if !(stopping && matches!(failure, ServerFailure::Listener(_))) {
                    if let Some(stop) = &w.stop {
                        stop.stop();
                    }
                    w.failure.get_or_insert(failure);
                }
            }
        }
        match record.level() {
            log::Level::Error => tracing::error!(target: "osquery", "{target}: {message}"),
            log::Level::Warn => tracing::warn!(target: "osquery", "{target}: {message}"),
            log::Level::Info => tracing::info!(target: "osquery", "{target}: {message}"),
            log::Level::Debug => tracing::debug!(target: "osquery", "{target}: {message}"),
            log::Level::Trace => tracing::trace!(target: "osquery", "{target}: {message}"),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_refusals_and_listener_failures() {
        let t = "osquery_rust_ng::server";
        assert_eq!(
            classify(
                t,
                "Status 1 registering extension osquery-ebpf (0): Duplicate extension registered"
            ),
            Some(ServerFailure::Refused {
                code: 1,
                message: "Duplicate extension registered".into()
            })
        );
        assert_eq!(
            classify(t, "Status 0 registering extension osquery-ebpf (7): OK"),
            None
        );
        assert_eq!(
            classify(t, "Listener thread exited: Address already in use"),
            Some(ServerFailure::Listener("Address already in use".into()))
        );
        assert_eq!(
            classify("other", "Status 1 registering extension x (0): no"),
            None
        );
        assert_eq!(classify(t, "Shutting down"), None);
    }
}
