/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps and helpers shared by the probe objects. Each object gets its own copy of the maps;
 * user space makes the socket object reuse the process object's ring buffer and stats so that
 * every record travels through one ordered ring. */
#ifndef OSQUERY_EBPF_COMMON_BPF_H
#define OSQUERY_EBPF_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"
#include "syscall.bpf.h"

#define AT_FDCWD_VALUE -100
#define PF_KTHREAD_FLAG 0x00200000

/*
 * Which per-CPU scratch slot a program uses. Tracepoint programs (tp/, tp_btf/) run with
 * preemption disabled and never nest on one CPU; trampoline programs run with only migration
 * disabled and may be preempted by a tracepoint program of another task on the same CPU, so
 * they get slots of their own, guarded by a busy mark against each other.
 */
enum scratch_slot {
	SLOT_TRACEPOINT = 0,
	SLOT_TRAMPOLINE = 1,
};

/* The number of possible CPUs (set by user space before load): scratch arrays have one slot
 * of each kind per CPU. */
const volatile __u32 nr_cpus = 1;

static __always_inline __u32 scratch_index(enum scratch_slot slot)
{
	__u32 cpu = bpf_get_smp_processor_id();
	return slot == SLOT_TRAMPOLINE ? cpu + nr_cpus : cpu;
}

/* The ring buffer; its size is set by user space before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

/*
 * The perf-buffer transport, for kernels without the BPF ring buffer (before 5.8). User space
 * sets use_perf and then does not create `events`; the ring-buffer code below is dead and
 * the verifier does not look at it (use_perf is a load-time constant).
 */
const volatile __u32 use_perf = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events_perf SEC(".maps");

/* Failure and volume counters, indexed by enum stat_id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Syscall entry state by tid; size set by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct syscall_entry);
} entries SEC(".maps");

/* exclude_* settings: the kinds in force (set by user space before load) and their sets. */
const volatile __u32 filters = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} filter_uids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, char[COMM_CAP]);
	__type(value, __u8);
} filter_comms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} filter_cgroups SEC(".maps");

/* Processes (by pid) whose executable matched exclude_paths: set at exec, inherited at fork,
 * removed at exit; seeded from /proc by user space for processes started before the probes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, __u8);
} muted SEC(".maps");

static __always_inline void stat_inc(__u32 id)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &id);
	if (v)
		*v += 1;
}

/*
 * Claim a scratch area of kind `slot` by its busy mark; 0 when it may be used. Only trampoline
 * slots are marked (tracepoint programs cannot be preempted on their CPU); one held by a
 * preempted trampoline program is a lost record, counted. Release it with scratch_release.
 */
static __always_inline int scratch_claim(__u32 *busy, enum scratch_slot slot)
{
	if (slot != SLOT_TRAMPOLINE)
		return 0;
	if (*busy) {
		stat_inc(STAT_SCRATCH_BUSY);
		return -1;
	}
	*busy = 1;
	return 0;
}

static __always_inline void scratch_release(__u32 *busy, enum scratch_slot slot)
{
	if (slot == SLOT_TRAMPOLINE)
		*busy = 0;
}

/*
 * Ring-buffer notification flags for a record just written. Waking the consumer for every
 * record costs an irq_work per event (several microseconds under virtualisation); instead the
 * consumer polls every 100 ms and is woken early only when the ring is 1/8 full, or when
 * `urgent` (a record user space must see at once).
 */
static __always_inline __u64 wakeup_flags(int urgent)
{
	if (urgent)
		return BPF_RB_FORCE_WAKEUP;
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	return avail >= size / 8 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* Write one record through the transport in use; returns 0 when it was written. */
static __always_inline long emit(void *ctx, void *data, __u64 size, int urgent)
{
	if (use_perf)
		return bpf_perf_event_output(ctx, &events_perf, BPF_F_CURRENT_CPU, data, size);
	return bpf_ringbuf_output(&events, data, size, wakeup_flags(urgent));
}

static __always_inline __u64 now_boot_ns(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_boot_ns))
		return bpf_ktime_get_boot_ns();
	return bpf_ktime_get_ns();
}

static __always_inline void remember_entry(__u32 syscall, __u64 a0, __u64 a1, __u64 a2, __u64 a3,
					   __u64 a4)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct syscall_entry e = {
		.ts_boot = now_boot_ns(),
		.arg0 = a0,
		.arg1 = a1,
		.arg2 = a2,
		.arg3 = a3,
		.arg4 = a4,
		.syscall = syscall,
	};
	if (bpf_map_update_elem(&entries, &tid, &e, BPF_ANY))
		stat_inc(STAT_ENTRY_MAP_FULL);
}

/* Take (copy and delete) the entry state of `tid`. Returns 0 when there was one. */
static __always_inline int take_entry(__u32 tid, struct syscall_entry *out)
{
	struct syscall_entry *e = bpf_map_lookup_elem(&entries, &tid);
	if (!e)
		return -1;
	*out = *e;
	bpf_map_delete_elem(&entries, &tid);
	return 0;
}

/* The current task's cgroup or one of its ancestors is in exclude_cgroups. */
static __always_inline int cgroup_excluded(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct cgroup *cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);

	for (int i = 0; i < CGROUP_DEPTH_MAX && cg; i++) {
		__u64 id = BPF_CORE_READ(cg, kn, id);
		if (bpf_map_lookup_elem(&filter_cgroups, &id))
			return 1;
		struct cgroup_subsys_state *parent = BPF_CORE_READ(cg, self.parent);
		if (!parent)
			break;
		cg = container_of(parent, struct cgroup, self);
	}
	return 0;
}

/*
 * An exclude_uids, exclude_comms or exclude_cgroups setting matches the current task: its
 * real uid, its comm, its cgroup or an ancestor of it. One load of a constant when no filter
 * is set.
 */
static __always_inline int excluded_task(void)
{
	__u32 f = filters;
	if (!(f & (EXCLUDE_UID | EXCLUDE_COMM | EXCLUDE_CGROUP)))
		return 0;
	if (f & EXCLUDE_UID) {
		__u32 uid = (__u32)bpf_get_current_uid_gid();
		if (bpf_map_lookup_elem(&filter_uids, &uid))
			return 1;
	}
	if (f & EXCLUDE_COMM) {
		char comm[COMM_CAP] = {};
		bpf_get_current_comm(comm, sizeof(comm));
		if (bpf_map_lookup_elem(&filter_comms, comm))
			return 1;
	}
	return (f & EXCLUDE_CGROUP) && cgroup_excluded();
}

/* The current process's executable matched exclude_paths (see `muted`). */
static __always_inline int muted_current(void)
{
	if (!(filters & EXCLUDE_PATH))
		return 0;
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&muted, &pid) != 0;
}

static __always_inline int excluded_current(void)
{
	return excluded_task() || muted_current();
}

/*
 * The current task's fields of the header; L(p, f) reads p->f. With bpf_get_current_task_btf
 * (5.11+) the task pointer is typed and L is a plain load (guarded by the verifier);
 * otherwise each L is a bpf_probe_read_kernel call, which costs far more (a record takes
 * about a dozen: 4% of a loopback connect+accept pair in the 6.12 guest). One body for both.
 */
#define DIRECT(p, f) ((p)->f)
#define FILL_TASK(h, task, L)                                                              \
	do {                                                                               \
		const struct cred *cred = L(task, cred);                                   \
		struct signal_struct *signal = L(task, signal);                            \
		struct task_struct *parent = L(task, real_parent);                         \
		struct task_struct *leader = L(task, group_leader);                        \
		struct pid *session = L(signal, pids[PIDTYPE_SID]);                        \
		struct tty_struct *tty = L(signal, tty);                                   \
		(h)->ppid = L(parent, tgid);                                               \
		(h)->euid = L(cred, euid.val);                                             \
		(h)->egid = L(cred, egid.val);                                             \
		(h)->auid = (__u32)-1;                                                     \
		if (bpf_core_field_exists(task->loginuid)) /* CONFIG_AUDIT */              \
			(h)->auid = L(task, loginuid.val);                                 \
		(h)->sid = L(session, numbers[0].nr);                                      \
		(h)->start_time = L(leader, start_boottime);                               \
		(h)->tty[0] = 0;                                                           \
		if (tty)                                                                   \
			bpf_probe_read_kernel_str((h)->tty, sizeof((h)->tty), &tty->name); \
	} while (0)

/* Fill the fields every record carries, for the current task. */
static __always_inline void fill_header(struct event_header *h, __u32 kind, __u32 syscall,
					__u64 ts, __u64 now)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	h->kind = kind;
	h->syscall = syscall;
	h->ts_boot = ts;
	h->duration = now > ts ? now - ts : 0;
	h->tid = (__u32)pid_tgid;
	h->pid = pid_tgid >> 32;
	h->uid = (__u32)uid_gid;
	h->gid = uid_gid >> 32;
	h->cgroup_id = bpf_get_current_cgroup_id();
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf)) {
		struct task_struct *task = bpf_get_current_task_btf();
		FILL_TASK(h, task, DIRECT);
	} else {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		FILL_TASK(h, task, BPF_CORE_READ);
	}
}

#endif
