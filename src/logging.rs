//! tracing set-up. Records of crates that log through `log` (thrift) reach tracing through
//! tracing-subscriber's `log` bridge.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("OSQUERY_EBPF_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},libbpf=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
