//! What the probes are asked to do: the settings that reach the kernel, and their checks.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::filters::Filters;

/// The compile-time argv capacity of a record (`ARGV_CAP` in bpf/events.h) less its NUL.
pub const ARGV_MAX_LIMIT: u32 = 65535;

/// The argv bound with the perf buffer: a perf sample holds at most 64 KiB, and an exec
/// record carries two paths of up to PATH_CAP bytes besides argv.
pub const PERF_ARGV_MAX: u32 = 57_000;

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOptions {
    /// argv bytes captured per exec.
    pub argv_max: u32,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_bytes: u32,
    /// Threads that can be inside a traced syscall at once.
    pub entries_max: u32,
    /// A BTF file for kernels without /sys/kernel/btf/vmlinux.
    pub btf_path: Option<PathBuf>,
    /// Events left out in the kernel.
    pub filters: Filters,
    /// How records leave the kernel.
    pub transport: Transport,
    /// Which hooks feed the records.
    pub hooks: Hooks,
    /// Test-only behaviour, read once from the environment.
    pub test: TestHooks,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            argv_max: 16384,
            ring_buffer_bytes: 16 << 20,
            entries_max: 16384,
            btf_path: None,
            filters: Filters::default(),
            transport: Transport::Auto,
            hooks: Hooks::Auto,
            test: TestHooks::default(),
        }
    }
}

/// How records leave the kernel: the BPF ring buffer (Linux 5.8+), or per-CPU perf buffers
/// (every kernel with BPF; records from different CPUs may arrive out of order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The ring buffer when the kernel has it, else the perf buffer.
    #[default]
    Auto,
    #[serde(rename = "ringbuf")]
    #[value(name = "ringbuf")]
    RingBuf,
    Perf,
}

impl Transport {
    /// The transport to use on this kernel.
    pub fn resolve(self) -> Transport {
        match self {
            Transport::Auto => {
                if libbpf_rs::MapType::RingBuf.is_supported().unwrap_or(false) {
                    Transport::RingBuf
                } else {
                    Transport::Perf
                }
            }
            t => t,
        }
    }
}

/// Which hooks feed the records (the `hooks` setting); see `hooks.rs` for what each attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Hooks {
    /// BPF trampolines when they attach for real on this kernel, else syscall tracepoints.
    #[default]
    Auto,
    /// fentry/fexit on the syscall wrappers; start-up fails where the kernel has none.
    Trampoline,
    /// Syscall tracepoints (every kernel; every syscall of every task pays for them).
    Tracepoint,
}

/// Behaviour only the tests ask for, through OSQUERY_EBPF_TEST_* variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestHooks {
    /// Programs to break as a kernel that rejects them would ("socket": the whole object).
    pub fail_probes: Vec<String>,
    /// While this file exists the consumer stalls, as a slow consumer would.
    pub pause_file: Option<PathBuf>,
}

impl TestHooks {
    pub fn from_env() -> TestHooks {
        TestHooks {
            fail_probes: std::env::var("OSQUERY_EBPF_TEST_FAIL_PROBES")
                .unwrap_or_default()
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            pause_file: std::env::var_os("OSQUERY_EBPF_TEST_PAUSE_FILE").map(PathBuf::from),
        }
    }

    pub fn fails(&self, program: &str) -> bool {
        self.fail_probes.iter().any(|p| p == program)
    }
}

pub fn check_options(opts: &ProbeOptions) -> Result<()> {
    if opts.argv_max == 0 || opts.argv_max > ARGV_MAX_LIMIT {
        bail!(
            "argv_max: must be between 1 and {ARGV_MAX_LIMIT}, not {}",
            opts.argv_max
        );
    }
    let ring = opts.ring_buffer_bytes;
    if !ring.is_power_of_two() || ring < 4096 {
        bail!("ring_buffer_size: must be a power of two of at least 4096 bytes, not {ring}");
    }
    if opts.entries_max == 0 {
        bail!("entries_max: must be positive");
    }
    opts.filters.check()
}
