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

    pub fn snapshot(&self) -> Vec<(&'static str, u64, &'static str)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            (
                "exec_received",
                g(&self.exec_received),
                "exec records received from the ring buffer",
            ),
            (
                "fork_received",
                g(&self.fork_received),
                "process-creation records received",
            ),
            (
                "exit_received",
                g(&self.exit_received),
                "process-termination records received",
            ),
            (
                "socket_received",
                g(&self.socket_received),
                "socket records received",
            ),
            (
                "decode_errors",
                g(&self.decode_errors),
                "records that could not be decoded",
            ),
            (
                "queue_dropped",
                g(&self.queue_dropped),
                "records lost between the ring buffer consumer and the pipeline",
            ),
            (
                "perf_lost",
                g(&self.perf_lost),
                "records the perf buffers reported lost (perf transport; also in kernel_*_dropped)",
            ),
        ]
    }
}

/// Name and meaning of each kernel counter, in `enum stat_id` order.
pub fn kernel_stat_names() -> Vec<(&'static str, &'static str)> {
    let names = [
        (
            stat_id::STAT_EXEC_EMITTED,
            "kernel_exec_emitted",
            "exec records written to the ring buffer",
        ),
        (
            stat_id::STAT_EXEC_DROPPED,
            "kernel_exec_dropped",
            "exec records lost: ring buffer full",
        ),
        (
            stat_id::STAT_FORK_EMITTED,
            "kernel_fork_emitted",
            "process-creation records written",
        ),
        (
            stat_id::STAT_FORK_DROPPED,
            "kernel_fork_dropped",
            "process-creation records lost: ring buffer full",
        ),
        (
            stat_id::STAT_EXIT_EMITTED,
            "kernel_exit_emitted",
            "process-termination records written",
        ),
        (
            stat_id::STAT_EXIT_DROPPED,
            "kernel_exit_dropped",
            "process-termination records lost: ring buffer full",
        ),
        (
            stat_id::STAT_SOCKET_EMITTED,
            "kernel_socket_emitted",
            "socket records written",
        ),
        (
            stat_id::STAT_SOCKET_DROPPED,
            "kernel_socket_dropped",
            "socket records lost: ring buffer full",
        ),
        (
            stat_id::STAT_ENTRY_MAP_FULL,
            "kernel_entry_map_full",
            "syscall entries not remembered (entry map full): rows without entry time",
        ),
        (
            stat_id::STAT_ARGV_TRUNCATED,
            "kernel_argv_truncated",
            "exec rows whose argv was cut at argv_max (probe_error = 1)",
        ),
        (
            stat_id::STAT_PATH_TRUNCATED,
            "kernel_path_truncated",
            "rows whose path or cwd was cut (probe_error = 1)",
        ),
        (
            stat_id::STAT_READ_FAILED,
            "kernel_read_failed",
            "rows with a failed memory read (probe_error = 1)",
        ),
        (
            stat_id::STAT_SCRATCH_MISSING,
            "kernel_scratch_missing",
            "exec or socket records lost: no scratch buffer",
        ),
        (
            stat_id::STAT_EXEC_FILTERED,
            "kernel_exec_filtered",
            "exec records left out by an exclude_* setting",
        ),
        (
            stat_id::STAT_FORK_FILTERED,
            "kernel_fork_filtered",
            "process-creation records left out by an exclude_* setting",
        ),
        (
            stat_id::STAT_EXIT_FILTERED,
            "kernel_exit_filtered",
            "process-termination records left out by an exclude_* setting",
        ),
        (
            stat_id::STAT_SOCKET_FILTERED,
            "kernel_socket_filtered",
            "socket records left out by an exclude_* setting",
        ),
        (
            stat_id::STAT_MUTED_MAP_FULL,
            "kernel_muted_map_full",
            "processes matching exclude_paths that could not be remembered (shown, not left out)",
        ),
        (
            stat_id::STAT_SCRATCH_BUSY,
            "kernel_scratch_busy",
            "records lost: a trampoline program found its scratch area held by a preempted one",
        ),
    ];
    debug_assert!(names
        .iter()
        .enumerate()
        .all(|(i, (id, _, _))| id.0 as usize == i));
    debug_assert_eq!(names.len(), stat_id::STAT_MAX.0 as usize);
    names.iter().map(|&(_, n, d)| (n, d)).collect()
}

/// Counters, kernel and user space, whose growth means lost rows.
pub const LOSS_STATS: &[&str] = &[
    "kernel_exec_dropped",
    "kernel_fork_dropped",
    "kernel_exit_dropped",
    "kernel_socket_dropped",
    "kernel_scratch_missing",
    "kernel_scratch_busy",
    "queue_dropped",
    "decode_errors",
];

/// Whether the counter `name` counts lost rows.
pub fn is_loss(name: &str) -> bool {
    LOSS_STATS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_stat_has_a_name() {
        let names = kernel_stat_names();
        assert_eq!(names.len(), stat_id::STAT_MAX.0 as usize);
        let user: Vec<&str> = Counters::default().snapshot().iter().map(|s| s.0).collect();
        for loss in LOSS_STATS {
            assert!(
                names.iter().any(|(n, _)| n == loss) || user.contains(loss),
                "{loss} is not a counter"
            );
        }
    }
}
