use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use osquery_ebpf::config::SettingsArgs;
use osquery_ebpf::extension::{self, ExitError, EXIT_STARTUP};
use osquery_ebpf::protocol::serve::ServeCounters;
use osquery_ebpf::runtime::Runtime;
use osquery_ebpf::tables::{
    create_statement, specs, ContainersTable, EventTable, StatsTable, Table, CONTAINERS_COLUMNS,
    CONTAINERS_TABLE, PROCESS_COLUMNS, SOCKET_COLUMNS, STATS_COLUMNS, STATS_TABLE,
};
use osquery_ebpf::{check, logging, watch};

/// osquery extension serving bpf_process_events_v2 and bpf_socket_events_v2 from eBPF (libbpf CO-RE).
///
/// Started by osqueryd/osqueryi with --socket, --timeout, --interval and --verbose; other
/// settings come from the config file and OSQUERY_EBPF_* environment variables.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// osquery's extension manager socket (passed by osquery)
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Seconds to wait for osquery's socket (passed by osquery)
    #[arg(long, default_value_t = 3)]
    timeout: u64,
    /// Seconds between osquery's health checks (passed by osquery; accepted for compatibility)
    #[arg(long, default_value_t = 3)]
    interval: u64,
    /// More logging
    #[arg(long, global = true)]
    verbose: bool,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stream rows live to stdout, without osquery
    Watch(watch::WatchArgs),
    /// Print the table schemas as osquery shows them
    Schema,
    /// Report what this host offers and what the extension would use (loads and attaches the
    /// probes, then detaches them); exit status 0 when both tables would work
    Check(check::CheckArgs),
}

fn run(cli: Cli) -> Result<(), ExitError> {
    let settings = cli.settings.resolve()?;
    match cli.command {
        Some(Command::Schema) => {
            for (name, columns) in [
                (settings.process_table.as_str(), specs(&PROCESS_COLUMNS)),
                (settings.socket_table.as_str(), specs(&SOCKET_COLUMNS)),
                (STATS_TABLE, specs(&STATS_COLUMNS)),
                (CONTAINERS_TABLE, specs(&CONTAINERS_COLUMNS)),
            ] {
                // a closed pipe (`schema | head`) ends the listing, not in a panic
                if writeln!(std::io::stdout(), "{}", create_statement(name, &columns)).is_err() {
                    break;
                }
            }
            Ok(())
        }
        Some(Command::Check(args)) => match check::run(&settings, &args) {
            0 => Ok(()),
            code => Err(ExitError::new(
                code,
                anyhow::anyhow!(
                    "check: the extension would not work fully on this host (status {code})"
                ),
            )),
        },
        Some(Command::Watch(args)) => {
            let rt = Arc::new(Runtime::start(&settings)?);
            rt.spawn_loss_monitor(Duration::from_secs(5))?;
            watch::run(rt, (&settings.process_table, &settings.socket_table), &args)?;
            Ok(())
        }
        None => {
            let Some(socket) = cli.socket else {
                return Err(ExitError::new(
                    EXIT_STARTUP,
                    anyhow::anyhow!(
                        "--socket is required: osquery starts this extension with it \
                         (try `osqueryi --extension PATH`, or `osquery-ebpf watch` without osquery)"
                    ),
                ));
            };
            let rt = Arc::new(Runtime::start(&settings)?);
            rt.spawn_loss_monitor(Duration::from_secs(5))?;
            let serving = Arc::new(ServeCounters::default());
            let tables: Vec<Arc<dyn Table>> = vec![
                Arc::new(EventTable {
                    name: settings.process_table.clone(),
                    store: rt.process_store.clone(),
                }),
                Arc::new(EventTable {
                    name: settings.socket_table.clone(),
                    store: rt.socket_store.clone(),
                }),
                Arc::new(StatsTable {
                    runtime: rt.clone(),
                    serving: serving.clone(),
                }),
                Arc::new(ContainersTable {
                    cgroups: rt.cgroups.clone(),
                }),
            ];
            let result = extension::serve(
                &socket,
                Duration::from_secs(cli.timeout.max(1)),
                tables,
                serving,
            );
            rt.shutdown();
            result
        }
    }
}

fn main() -> ExitCode {
    // A bad flag or OSQUERY_EBPF_* value is an invalid setting: status 1, like one in the
    // file (clap's own status, 2, is osquery's refused registration here).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    logging::init(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // one line, on stderr only (osqueryd's log shows it once)
            eprintln!("osquery-ebpf: {:#}", e.error);
            ExitCode::from(u8::try_from(e.code).unwrap_or(1))
        }
    }
}
