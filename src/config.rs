//! Settings. osqueryd passes an autoloaded extension only `--socket --timeout --interval
//! [--verbose]`, so every other setting also comes from a TOML file and from environment
//! variables. Precedence: command-line flag, then environment variable, then the file, then
//! the default.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::filters::Filters;
use crate::probes::{Hooks, ProbeOptions, TestHooks, Transport};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/osquery-ebpf/osquery-ebpf.toml";
pub const DEFAULT_PROCESS_TABLE: &str = "bpf_process_events_v2";
pub const DEFAULT_SOCKET_TABLE: &str = "bpf_socket_events_v2";

/// The config file; every key is optional.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub process_table: Option<String>,
    pub socket_table: Option<String>,
    pub argv_max: Option<u32>,
    pub ring_buffer_size: Option<u32>,
    pub events_max: Option<usize>,
    pub events_expiry: Option<u64>,
    pub queue_size: Option<usize>,
    pub entries_max: Option<u32>,
    pub btf_path: Option<PathBuf>,
    pub exclude_uids: Option<Vec<u32>>,
    pub exclude_comms: Option<Vec<String>>,
    pub exclude_cgroups: Option<Vec<PathBuf>>,
    pub exclude_paths: Option<Vec<String>>,
    pub transport: Option<Transport>,
    pub hooks: Option<Hooks>,
}

/// The same settings as flags and environment variables.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct SettingsArgs {
    /// TOML config file [default: /etc/osquery-ebpf/osquery-ebpf.toml, if it exists]
    #[arg(long, env = "OSQUERY_EBPF_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Name of the process events table [default: bpf_process_events_v2]
    #[arg(long, env = "OSQUERY_EBPF_PROCESS_TABLE", global = true)]
    pub process_table: Option<String>,
    /// Name of the socket events table [default: bpf_socket_events_v2]
    #[arg(long, env = "OSQUERY_EBPF_SOCKET_TABLE", global = true)]
    pub socket_table: Option<String>,
    /// Bytes of argv captured per exec, 1 to 65535 [default: 16384]
    #[arg(long, env = "OSQUERY_EBPF_ARGV_MAX", global = true)]
    pub argv_max: Option<u32>,
    /// BPF ring buffer size in bytes, a power of two [default: 16777216]
    #[arg(long, env = "OSQUERY_EBPF_RING_BUFFER_SIZE", global = true)]
    pub ring_buffer_size: Option<u32>,
    /// Rows kept per table [default: 50000, osquery's events_max]
    #[arg(long, env = "OSQUERY_EBPF_EVENTS_MAX", global = true)]
    pub events_max: Option<usize>,
    /// Seconds a row is kept [default: 3600, osquery's events_expiry]
    #[arg(long, env = "OSQUERY_EBPF_EVENTS_EXPIRY", global = true)]
    pub events_expiry: Option<u64>,
    /// Decoded events queued between the ring buffer consumer and the pipeline [default: 65536]
    #[arg(long, env = "OSQUERY_EBPF_QUEUE_SIZE", global = true)]
    pub queue_size: Option<usize>,
    /// Threads that can be inside a traced syscall at once [default: 16384]
    #[arg(long, env = "OSQUERY_EBPF_ENTRIES_MAX", global = true)]
    pub entries_max: Option<u32>,
    /// BTF file for a kernel without /sys/kernel/btf/vmlinux
    #[arg(long, env = "OSQUERY_EBPF_BTF_PATH", global = true)]
    pub btf_path: Option<PathBuf>,
    /// Leave out the events of these real uids (comma-separated)
    #[arg(
        long,
        env = "OSQUERY_EBPF_EXCLUDE_UIDS",
        value_delimiter = ',',
        global = true
    )]
    pub exclude_uids: Option<Vec<u32>>,
    /// Leave out the events of processes with these names (comm; comma-separated)
    #[arg(
        long,
        env = "OSQUERY_EBPF_EXCLUDE_COMMS",
        value_delimiter = ',',
        global = true
    )]
    pub exclude_comms: Option<Vec<String>>,
    /// Leave out the events of processes in these cgroups and below (paths under
    /// /sys/fs/cgroup; comma-separated)
    #[arg(
        long,
        env = "OSQUERY_EBPF_EXCLUDE_CGROUPS",
        value_delimiter = ',',
        global = true
    )]
    pub exclude_cgroups: Option<Vec<PathBuf>>,
    /// Leave out the events of processes whose executable path starts with one of these
    /// prefixes (comma-separated)
    #[arg(
        long,
        env = "OSQUERY_EBPF_EXCLUDE_PATHS",
        value_delimiter = ',',
        global = true
    )]
    pub exclude_paths: Option<Vec<String>>,
    /// How records leave the kernel: auto (the ring buffer when the kernel has it, Linux 5.8+),
    /// ringbuf or perf [default: auto]
    #[arg(long, env = "OSQUERY_EBPF_TRANSPORT", global = true)]
    pub transport: Option<Transport>,
    /// Which kernel hooks feed the rows: auto (BPF trampolines where they attach, else syscall
    /// tracepoints), trampoline or tracepoint [default: auto]
    #[arg(long, env = "OSQUERY_EBPF_HOOKS", global = true)]
    pub hooks: Option<Hooks>,
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub process_table: String,
    pub socket_table: String,
    pub events_max: usize,
    pub events_expiry: u64,
    pub queue_size: usize,
    pub probes: ProbeOptions,
}

pub fn read_file(path: &Path) -> Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "invalid config file {}: {}",
            path.display(),
            e.message().trim()
        )
        .context(e.to_string())
    })
}

fn valid_table_name(key: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        bail!("{key}: {name:?} is not a valid table name (letters, digits and _)");
    }
    Ok(())
}

impl SettingsArgs {
    /// Merge flags/environment over the config file over defaults, and check the result.
    pub fn resolve(&self) -> Result<Settings> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => FileSettings::default(),
        };
        let defaults = ProbeOptions::default();
        let s = Settings {
            process_table: self
                .process_table
                .clone()
                .or(file.process_table)
                .unwrap_or_else(|| DEFAULT_PROCESS_TABLE.into()),
            socket_table: self
                .socket_table
                .clone()
                .or(file.socket_table)
                .unwrap_or_else(|| DEFAULT_SOCKET_TABLE.into()),
            events_max: self.events_max.or(file.events_max).unwrap_or(50_000),
            events_expiry: self.events_expiry.or(file.events_expiry).unwrap_or(3600),
            queue_size: self.queue_size.or(file.queue_size).unwrap_or(65_536),
            probes: ProbeOptions {
                argv_max: self.argv_max.or(file.argv_max).unwrap_or(defaults.argv_max),
                ring_buffer_bytes: self
                    .ring_buffer_size
                    .or(file.ring_buffer_size)
                    .unwrap_or(defaults.ring_buffer_bytes),
                entries_max: self
                    .entries_max
                    .or(file.entries_max)
                    .unwrap_or(defaults.entries_max),
                btf_path: self.btf_path.clone().or(file.btf_path),
                filters: Filters {
                    uids: self
                        .exclude_uids
                        .clone()
                        .or(file.exclude_uids)
                        .unwrap_or_default(),
                    comms: self
                        .exclude_comms
                        .clone()
                        .or(file.exclude_comms)
                        .unwrap_or_default(),
                    cgroups: self
                        .exclude_cgroups
                        .clone()
                        .or(file.exclude_cgroups)
                        .unwrap_or_default(),
                    paths: self
                        .exclude_paths
                        .clone()
                        .or(file.exclude_paths)
                        .unwrap_or_default(),
                },
                transport: self.transport.or(file.transport).unwrap_or_default(),
                hooks: self.hooks.or(file.hooks).unwrap_or_default(),
                test: TestHooks::from_env(),
            },
        };
        valid_table_name("process_table", &s.process_table)?;
        valid_table_name("socket_table", &s.socket_table)?;
        if s.process_table == s.socket_table {
            bail!("process_table and socket_table must differ");
        }
        crate::probes::check_options(&s.probes)?;
        if s.events_max == 0 {
            bail!("events_max: must be positive");
        }
        if s.queue_size == 0 {
            bail!("queue_size: must be positive");
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str) -> (tempfile::NamedTempFile, SettingsArgs) {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        let args = SettingsArgs {
            config: Some(f.path().to_path_buf()),
            ..SettingsArgs::default()
        };
        (f, args)
    }

    #[test]
    fn defaults() {
        let (_f, args) = with_file("");
        let s = args.resolve().expect("valid");
        assert_eq!(s.process_table, "bpf_process_events_v2");
        assert_eq!((s.events_max, s.events_expiry), (50_000, 3600));
        assert_eq!(s.probes.argv_max, 16384);
        assert_eq!(s.probes.transport, Transport::Auto);
        let (_f, args) = with_file("transport = \"perf\"\n");
        assert_eq!(
            args.resolve().expect("valid").probes.transport,
            Transport::Perf
        );
        let (_f, args) = with_file("transport = \"ringbuf\"\n");
        assert_eq!(
            args.resolve().expect("valid").probes.transport,
            Transport::RingBuf
        );
        assert_eq!(s.probes.hooks, Hooks::Auto);
        for (text, hooks) in [
            ("hooks = \"trampoline\"\n", Hooks::Trampoline),
            ("hooks = \"tracepoint\"\n", Hooks::Tracepoint),
        ] {
            let (_f, args) = with_file(text);
            assert_eq!(args.resolve().expect("valid").probes.hooks, hooks);
        }
    }

    #[test]
    fn flags_override_the_file() {
        let (_f, mut args) = with_file("process_table = \"bpf_process_events\"\nargv_max = 4096\n");
        args.argv_max = Some(100);
        let s = args.resolve().expect("valid");
        assert_eq!(s.process_table, "bpf_process_events");
        assert_eq!(s.probes.argv_max, 100);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("argv_maxx = 1\n", "argv_maxx"),
            ("argv_max = \"big\"\n", "argv_max"),
            ("argv_max = 70000\n", "argv_max"),
            ("ring_buffer_size = 5000\n", "ring_buffer_size"),
            ("process_table = \"drop table;\"\n", "process_table"),
            ("events_max = 0\n", "events_max"),
            ("exclude_comms = \"sshd\"\n", "exclude_comms"),
            ("exclude_paths = [\"relative/\"]\n", "exclude_paths"),
            ("exclude_uids = [-1]\n", "exclude_uids"),
            ("transport = \"udp\"\n", "transport"),
            ("hooks = \"kprobe\"\n", "hooks"),
        ] {
            let (_f, args) = with_file(text);
            let err = format!("{:#}", args.resolve().expect_err(text));
            assert!(err.contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn exclude_lists_from_the_file_and_flags() {
        let (_f, mut args) = with_file(
            "exclude_comms = [\"sshd\", \"cron\"]\nexclude_paths = [\"/usr/lib/\"]\nexclude_uids = [0]\n",
        );
        let s = args.resolve().expect("valid");
        assert_eq!(s.probes.filters.comms, ["sshd", "cron"]);
        assert_eq!(s.probes.filters.paths, ["/usr/lib/"]);
        assert_eq!(s.probes.filters.uids, [0]);
        args.exclude_uids = Some(vec![]);
        let s = args.resolve().expect("valid");
        assert!(s.probes.filters.uids.is_empty());
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let args = SettingsArgs {
            config: Some("/nonexistent/osquery-ebpf.toml".into()),
            ..SettingsArgs::default()
        };
        assert!(args.resolve().is_err());
    }
}
