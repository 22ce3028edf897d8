//! Counters: what the kernel emitted and dropped, and what user space received, dropped or
//! could not decode. Every event that cannot be delivered is counted somewhere here.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::Event;
use crate::process_skel::types::stat_id;

#[derive(Debug, Default)]
pub struct Counters {
    pub exec_received: AtomicU64,
    pub fork_received: AtomicU64,
    pub exit_received: AtomicU64,
    pub socket_received: AtomicU64,
    pub decode_errors: AtomicU64,
    /// Events decoded but not delivered to the pipeline (only at shutdown, or if it is gone).
    pub queue_dropped: AtomicU64,
    /// Records the perf buffers reported lost (perf transport only; the same records are
    /// counted in the kernel's *_dropped counters).
    pub perf_lost: AtomicU64,
}

impl Counters {
    pub fn received(&self, ev: &Event) {
        let c = match ev {
            Event::Exec(_) => &self.exec_received,
            Event::Fork(_) => &self.fork_received,
            Event::Exit(_) => &self.exit_received,
            Event::Socket(_) => &self.socket_received,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Every user-space counter, each declared once: name, meaning, whether it is a loss.
    pub fn snapshot(&self) -> Vec<Stat> {
        let counters = [
            (
                &self.exec_received,
                "exec_received",
                "exec records received from the ring buffer",
                false,
            ),
            (
                &self.fork_received,
                "fork_received",
                "process-creation records received",
                false,
            ),
            (
                &self.exit_received,
                "exit_received",
                "process-termination records received",
                false,
            ),
            (
                &self.socket_received,
                "socket_received",
                "socket records received",
                false,
            ),
            (
                &self.decode_errors,
                "decode_errors",
                "records that could not be decoded",
                true,
            ),
            (
                &self.queue_dropped,
                "queue_dropped",
                "records lost between the ring buffer consumer and the pipeline",
                true,
            ),
            (
                &self.perf_lost,
                "perf_lost",
                "records the perf buffers reported lost (perf transport; also in kernel_*_dropped)",
                false,
            ),
        ];
        counters
            .into_iter()
            .map(|(c, name, desc, loss)| Stat {
                name: name.into(),
                value: c.load(Ordering::Relaxed),
                description: desc.into(),
                loss,
            })
            .collect()
    }
}

/// One counter as `osquery_ebpf_stats` and `watch` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub name: String,
    pub value: u64,
    pub description: String,
    /// Its growth means lost rows.
    pub loss: bool,
}

impl Stat {
    /// A counter that is not a loss.
    pub fn new(name: impl Into<String>, value: u64, description: impl Into<String>) -> Stat {
        Stat {
            name: name.into(),
            value,
            description: description.into(),
            loss: false,
        }
    }
}

/// The kernel counters, in `enum stat_id` order: name, meaning, whether it is a loss.
const KERNEL_STATS: &[(stat_id, &str, &str, bool)] = &[
    (
        stat_id::STAT_EXEC_EMITTED,
        "kernel_exec_emitted",
        "exec records written to the ring buffer",
        false,
    ),
    (
        stat_id::STAT_EXEC_DROPPED,
        "kernel_exec_dropped",
        "exec records lost: ring buffer full",
        true,
    ),
    (
        stat_id::STAT_FORK_EMITTED,
        "kernel_fork_emitted",
        "process-creation records written",
        false,
    ),
    (
        stat_id::STAT_FORK_DROPPED,
        "kernel_fork_dropped",
        "process-creation records lost: ring buffer full",
        true,
    ),
    (
        stat_id::STAT_EXIT_EMITTED,
        "kernel_exit_emitted",
        "process-termination records written",
        false,
    ),
    (
        stat_id::STAT_EXIT_DROPPED,
        "kernel_exit_dropped",
        "process-termination records lost: ring buffer full",
        true,
    ),
    (
        stat_id::STAT_SOCKET_EMITTED,
        "kernel_socket_emitted",
        "socket records written",
        false,
    ),
    (
        stat_id::STAT_SOCKET_DROPPED,
        "kernel_socket_dropped",
        "socket records lost: ring buffer full",
        true,
    ),
    (
        stat_id::STAT_ENTRY_MAP_FULL,
        "kernel_entry_map_full",
        "syscall entries not remembered (entry map full): rows without entry time",
        false,
    ),
    (
        stat_id::STAT_ARGV_TRUNCATED,
        "kernel_argv_truncated",
        "exec rows whose argv was cut at argv_max (probe_error = 1)",
        false,
    ),
    (
        stat_id::STAT_PATH_TRUNCATED,
        "kernel_path_truncated",
        "rows whose path or cwd was cut (probe_error = 1)",
        false,
    ),
    (
        stat_id::STAT_READ_FAILED,
        "kernel_read_failed",
        "rows with a failed memory read (probe_error = 1)",
        false,
    ),
    (
        stat_id::STAT_SCRATCH_MISSING,
        "kernel_scratch_missing",
        "exec or socket records lost: no scratch buffer",
        true,
    ),
    (
        stat_id::STAT_EXEC_FILTERED,
        "kernel_exec_filtered",
        "exec records left out by an exclude_* setting",
        false,
    ),
    (
        stat_id::STAT_FORK_FILTERED,
        "kernel_fork_filtered",
        "process-creation records left out by an exclude_* setting",
        false,
    ),
    (
        stat_id::STAT_EXIT_FILTERED,
        "kernel_exit_filtered",
        "process-termination records left out by an exclude_* setting",
        false,
    ),
    (
        stat_id::STAT_SOCKET_FILTERED,
        "kernel_socket_filtered",
        "socket records left out by an exclude_* setting",
        false,
    ),
    (
        stat_id::STAT_MUTED_MAP_FULL,
        "kernel_muted_map_full",
        "processes matching exclude_paths that could not be remembered (shown, not left out)",
        false,
    ),
    (
        stat_id::STAT_SCRATCH_BUSY,
        "kernel_scratch_busy",
        "records lost: a trampoline program found its scratch area held by a preempted one",
        true,
    ),
];

/// The kernel counters' values (sums over CPUs, in `enum stat_id` order) as stats.
pub fn kernel_stats(values: &[u64]) -> Vec<Stat> {
    KERNEL_STATS
        .iter()
        .map(|&(id, name, desc, loss)| Stat {
            name: name.into(),
            value: values.get(id.0 as usize).copied().unwrap_or(0),
            description: desc.into(),
            loss,
        })
        .collect()
}

/// Whether the counter `name` counts lost rows (for figures read back from a `stats:` line).
pub fn is_loss(name: &str) -> bool {
    KERNEL_STATS
        .iter()
        .any(|&(_, n, _, loss)| loss && n == name)
        || Counters::default()
            .snapshot()
            .iter()
            .any(|s| s.loss && s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_stat_is_declared_once_in_order() {
        assert_eq!(KERNEL_STATS.len(), stat_id::STAT_MAX.0 as usize);
        for (i, (id, _, _, _)) in KERNEL_STATS.iter().enumerate() {
            assert_eq!(
                id.0 as usize, i,
                "KERNEL_STATS out of enum stat_id order at {i}"
            );
        }
        let mut names: Vec<String> = kernel_stats(&[])
            .into_iter()
            .chain(Counters::default().snapshot())
            .map(|s| s.name)
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a counter name is declared twice");
        assert!(is_loss("kernel_exec_dropped") && is_loss("queue_dropped"));
        assert!(!is_loss("kernel_exec_emitted") && !is_loss("perf_lost") && !is_loss("nope"));
    }
}
