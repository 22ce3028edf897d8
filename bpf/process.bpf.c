// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Process events: exec (execve, execveat; successful and failed), process creation (fork,
 * vfork, clone, clone3 without CLONE_THREAD) and process termination (once per process).
 *
 * Successful execs are taken from sched_process_exec, after the new image is set up: argv is
 * read in one bounded copy of mm->arg_start..arg_end, the executable's path and the cwd are
 * resolved by walking dentries. Failed execs are taken at sys_exit of execve/execveat, from
 * the caller's own argv (its pages were just touched by the kernel's copy).
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* argv bytes kept per exec (<= ARGV_CAP - 1); set by user space before load. */
const volatile __u32 argv_max = 16384;

struct path_walk {
	struct dentry *dentry;
	struct mount *mnt;
	__u32 off;
	__u32 done;
};

/* ev and data must stay adjacent: they are output as one record. */
struct exec_scratch {
	struct exec_event ev;
	/* argv, then path, then cwd; sized so that any masked offset plus one path fits */
	char data[2 * ARGV_CAP + PATH_CAP];
	char path[2 * PATH_CAP];
	struct path_walk walk;
	struct path_prefix_key key; /* the executable's path, looked up in filter_paths */
	char key_pad[PATH_PREFIX_CAP]; /* room for the masked copy length the verifier sees */
	__u32 argv_off; /* running offset of the failed-exec argv copy */
	__u32 busy;     /* a trampoline program is building a record here (SLOT_TRAMPOLINE) */
};

/* Two scratch areas per CPU, one per enum scratch_slot (an ARRAY sized to twice the CPU count
 * by user space: PERCPU_ARRAY values are capped at 32 KiB). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_scratch);
} exec_scratch SEC(".maps");


/* exclude_paths: prefixes of executable paths, longest match first. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct path_prefix_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} filter_paths SEC(".maps");

/* This CPU's scratch area of kind `slot`, claimed (see scratch_claim; release it with
 * scratch_release). NULL (counted) when there is none or it is held. */
static __always_inline struct exec_scratch *get_scratch(enum scratch_slot slot)
{
	__u32 idx = scratch_index(slot);
	struct exec_scratch *s = bpf_map_lookup_elem(&exec_scratch, &idx);
	if (!s) {
		stat_inc(STAT_SCRATCH_MISSING);
		return 0;
	}
	return scratch_claim(&s->busy, slot) ? 0 : s;
}

/*
 * One step of the path walk: prepend one name, or cross one mount point. Returns 1 when the
 * walk is over. A function of its own (not inlined) so that the loop around it is a plain
 * counted loop: kernels before 6.3 reject a loop whose back edge is a fall-through, which
 * clang produces when a loop body has a `continue` path.
 */
static __noinline int walk_step(struct exec_scratch *s, __u32 trunc_flag)
{
	struct path_walk *w = &s->walk;
	char *buf = s->path;
	struct dentry *dentry = w->dentry;
	struct mount *mnt = w->mnt;
	struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);

	if (dentry == mnt_root || dentry == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (dentry != mnt_root || mnt == mnt_parent || !mnt_parent) {
			w->done = 1;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		return 0;
	}
	__u32 len = BPF_CORE_READ(dentry, d_name.len);
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	__u32 off = w->off;
	if (len + 2 > off) {
		s->ev.hdr.flags |= trunc_flag;
		w->done = 1;
		return 1;
	}
	off -= len + 1;
	w->off = off;
	buf[off & (PATH_CAP - 1)] = '/';
	if (bpf_probe_read_kernel(&buf[(off + 1) & (PATH_CAP - 1)], len & (PATH_CAP - 1), name))
		s->ev.hdr.flags |= FLAG_READ_FAILED;
	w->dentry = parent;
	return 0;
}

/*
 * Resolve `path` into s->path (2 * PATH_CAP bytes) from the end backwards. Returns the offset
 * of the first byte; the NUL-terminated path occupies s->path[off .. PATH_CAP - 1].
 *
 * The walk keeps its state in the scratch map value, not in registers: values loaded from
 * memory are unknown to the verifier, so the states at the loop head match from one
 * iteration to the next and are pruned, instead of being explored 64 levels deep.
 */
static __always_inline __u32 resolve_path(struct exec_scratch *s, const struct path *path,
					  __u32 trunc_flag)
{
	struct path_walk *w = &s->walk;
	char *buf = s->path;

	w->dentry = BPF_CORE_READ(path, dentry);
	w->mnt = container_of(BPF_CORE_READ(path, mnt), struct mount, mnt);
	w->off = PATH_CAP - 1;
	w->done = 0;
	buf[PATH_CAP - 1] = 0;
	for (int i = 0; i < PATH_MAX_COMPONENTS; i++) {
		if (walk_step(s, trunc_flag))
			break;
	}
	if (!w->done)
		s->ev.hdr.flags |= trunc_flag;
	__u32 off = w->off;
	if (off >= PATH_CAP - 1) {
		off = PATH_CAP - 2;
		buf[off] = '/';
	}
	return off;
}

/* Append the path resolved in s->path at offset `at` of s->data; returns the length copied. */
static __always_inline __u32 append_path(struct exec_scratch *s, __u32 at, const struct path *path,
					 __u32 trunc_flag)
{
	__u32 off = resolve_path(s, path, trunc_flag);
	__u32 len = PATH_CAP - off;

	/* resolve_path keeps 1 <= off <= PATH_CAP - 2, and callers pass at < ARGV_CAP + PATH_CAP:
	 * the masks are no-ops at run time and give the verifier its bounds (a range check
	 * instead would let clang drop them). */
	bpf_probe_read_kernel(&s->data[at & (2 * ARGV_CAP - 1)], len & (PATH_CAP - 1),
			      &s->path[off & (PATH_CAP - 1)]);
	return len;
}

/*
 * Match the executable path just written at s->data[at] against exclude_paths and mute or
 * unmute process `pid` accordingly. Returns 1 when it matched.
 */
static __always_inline int mute_by_path(struct exec_scratch *s, __u32 at, __u32 pid)
{
	__u32 n = s->ev.path_len;
	if (n)
		n -= 1; /* the NUL */
	if (n > PATH_PREFIX_CAP)
		n = PATH_PREFIX_CAP;
	s->key.prefixlen = n * 8;
	asm volatile("" : "+r"(n)); /* keep clang from dropping the mask below */
	/* the mask is a no-op at run time (n <= PATH_PREFIX_CAP): it bounds the copy for the
	 * verifier, which may not see the check above on the register clang passes */
	if (bpf_probe_read_kernel(s->key.data, n & (2 * PATH_PREFIX_CAP - 1),
				  &s->data[at & (2 * ARGV_CAP - 1)]) == 0 &&
	    bpf_map_lookup_elem(&filter_paths, &s->key)) {
		__u8 one = 1;
		if (bpf_map_update_elem(&muted, &pid, &one, BPF_ANY))
			stat_inc(STAT_MUTED_MAP_FULL);
		return 1;
	}
	bpf_map_delete_elem(&muted, &pid);
	return 0;
}

/*
 * Cgroups this object has sent an exec record from, LRU. A container's first event is the
 * exec of its entrypoint in its new cgroup, and user space resolves a cgroup id to its path
 * (and so to a container) only while the cgroup exists: the exec record of a cgroup not seen
 * yet wakes the consumer at once instead of waiting for its next poll (up to 100 ms): a
 * cgroup removed sooner than that after its first exec is resolved all the same.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} cgroups_seen SEC(".maps");

static __always_inline int new_cgroup(__u64 id)
{
	__u8 one = 1;

	if (bpf_map_lookup_elem(&cgroups_seen, &id))
		return 0;
	bpf_map_update_elem(&cgroups_seen, &id, &one, BPF_ANY);
	return 1;
}

static __always_inline void submit_exec(void *ctx, struct exec_scratch *s)
{
	__u64 size = sizeof(s->ev) + (__u64)s->ev.argv_len + s->ev.path_len + s->ev.cwd_len;
	if (size > sizeof(s->ev) + sizeof(s->data))
		size = sizeof(s->ev) + sizeof(s->data);
	if (s->ev.hdr.flags & FLAG_ARGV_TRUNCATED)
		stat_inc(STAT_ARGV_TRUNCATED);
	if (s->ev.hdr.flags & (FLAG_PATH_TRUNCATED | FLAG_CWD_TRUNCATED))
		stat_inc(STAT_PATH_TRUNCATED);
	if (s->ev.hdr.flags & FLAG_READ_FAILED)
		stat_inc(STAT_READ_FAILED);
	if (emit(ctx, &s->ev, size, new_cgroup(s->ev.hdr.cgroup_id)))
		stat_inc(STAT_EXEC_DROPPED);
	else
		stat_inc(STAT_EXEC_EMITTED);
}

static __always_inline __u32 argv_limit(void)
{
	__u32 max = argv_max;
	if (max > ARGV_CAP - 1)
		max = ARGV_CAP - 1;
	return max;
}

/* ---- syscall entries: the name, start time and arguments on_exec, on_fork, on_exit and
 * failed_exec read back ---- */

static __always_inline void enter_execve(__u64 filename, __u64 argv)
{
	remember_entry(SC_EXECVE, filename, argv, (__u64)(__s64)AT_FDCWD_VALUE, 0, 0);
}

/* stored as execve's: filename, argv, dirfd, flags */
static __always_inline void enter_execveat(__u64 dirfd, __u64 filename, __u64 argv, __u64 flags)
{
	remember_entry(SC_EXECVEAT, filename, argv, dirfd, flags, 0);
}

static __always_inline void enter_clone3(__u64 uargs)
{
	__u64 flags = 0;
	bpf_probe_read_user(&flags, sizeof(flags), (void *)uargs);
	remember_entry(SC_CLONE3, flags, 0, 0, 0, 0);
}

/* The tracepoint set. */

SEC("tp/syscalls/sys_enter_execve")
int enter_execve_tp(struct trace_event_raw_sys_enter *ctx)
{
	enter_execve(ctx->args[0], ctx->args[1]);
	return 0;
}

SEC("tp/syscalls/sys_enter_execveat")
int enter_execveat_tp(struct trace_event_raw_sys_enter *ctx)
{
	enter_execveat(ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[4]);
	return 0;
}

#if HAVE_FORK_SYSCALLS
SEC("tp/syscalls/sys_enter_fork")
int enter_fork_tp(struct trace_event_raw_sys_enter *ctx)
{
	remember_entry(SC_FORK, 0, 0, 0, 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_vfork")
int enter_vfork_tp(struct trace_event_raw_sys_enter *ctx)
{
	remember_entry(SC_VFORK, 0, 0, 0, 0, 0);
	return 0;
}
#endif

SEC("tp/syscalls/sys_enter_clone")
int enter_clone_tp(struct trace_event_raw_sys_enter *ctx)
{
	remember_entry(SC_CLONE, ctx->args[0], 0, 0, 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_clone3")
int enter_clone3_tp(struct trace_event_raw_sys_enter *ctx)
{
	enter_clone3(ctx->args[0]);
	return 0;
}

SEC("tp/syscalls/sys_enter_exit")
int enter_exit_tp(struct trace_event_raw_sys_enter *ctx)
{
	remember_entry(SC_EXIT, ctx->args[0], 0, 0, 0, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_exit_group")
int enter_exit_group_tp(struct trace_event_raw_sys_enter *ctx)
{
	remember_entry(SC_EXIT_GROUP, ctx->args[0], 0, 0, 0, 0);
	return 0;
}

/* The trampoline set: the same entries, the arguments from the task's saved registers (see
 * syscall_regs). */

SEC("fentry/" SYSCALL_WRAPPER(execve))
int enter_execve_fe(void *ctx)
{
	struct pt_regs *regs = syscall_regs();
	enter_execve(SYSCALL_ARG1(regs), SYSCALL_ARG2(regs));
	return 0;
}

SEC("fentry/" SYSCALL_WRAPPER(execveat))
int enter_execveat_fe(void *ctx)
{
	struct pt_regs *regs = syscall_regs();
	enter_execveat(SYSCALL_ARG1(regs), SYSCALL_ARG2(regs), SYSCALL_ARG3(regs),
		       SYSCALL_ARG5(regs));
	return 0;
}

#if HAVE_FORK_SYSCALLS
/* SYSCALL_DEFINE0 makes the x86 wrapper an alias, which has no BTF of its own: hook the
 * function it aliases */
SEC("fentry/__do_sys_fork")
int enter_fork_fe(void *ctx)
{
	remember_entry(SC_FORK, 0, 0, 0, 0, 0);
	return 0;
}

SEC("fentry/__do_sys_vfork")
int enter_vfork_fe(void *ctx)
{
	remember_entry(SC_VFORK, 0, 0, 0, 0, 0);
	return 0;
}
#endif

SEC("fentry/" SYSCALL_WRAPPER(clone))
int enter_clone_fe(void *ctx)
{
	struct pt_regs *regs = syscall_regs();
	remember_entry(SC_CLONE, SYSCALL_ARG1(regs), 0, 0, 0, 0);
	return 0;
}

SEC("fentry/" SYSCALL_WRAPPER(clone3))
int enter_clone3_fe(void *ctx)
{
	struct pt_regs *regs = syscall_regs();
	enter_clone3(SYSCALL_ARG1(regs));
	return 0;
}

SEC("fentry/" SYSCALL_WRAPPER(exit))
int enter_exit_fe(void *ctx)
{
	struct pt_regs *regs = syscall_regs();
	remember_entry(SC_EXIT, SYSCALL_ARG1(regs), 0, 0, 0, 0);
	return 0;
}

SEC("fentry/" SYSCALL_WRAPPER(exit_group))
int enter_exit_group_fe(void *ctx)
{
	struct pt_regs *regs = syscall_regs();
	remember_entry(SC_EXIT_GROUP, SYSCALL_ARG1(regs), 0, 0, 0, 0);
	return 0;
}

/* ---- exec ---- */

#define TMPFS_MAGIC_VALUE 0x01021994
#define HUGETLBFS_MAGIC_VALUE 0x958458f6
#define OVERLAYFS_SUPER_MAGIC_VALUE 0x794c7630

/*
 * What the executed file is: a memfd (memfd_create names its file "memfd:<name>" on the
 * kernel's internal tmpfs or hugetlbfs mount: it never had a path), or a file whose last link
 * is gone (deleted after it was opened or started); and whether it is on an overlayfs upper
 * layer: overlayfs's inode (struct ovl_inode, in the overlay module, whose types the probes
 * do not compile against) embeds the VFS inode and keeps the upper dentry right after it, set
 * when the file exists in the upper layer (created or copied up there, as a file written
 * inside a running container is).
 */
static __always_inline __u32 exe_flags(struct file *file, struct dentry *dentry)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	unsigned long magic = BPF_CORE_READ(inode, i_sb, s_magic);

	/* the name is read only on the two file systems a memfd can live on */
	if (magic == TMPFS_MAGIC_VALUE || magic == HUGETLBFS_MAGIC_VALUE) {
		char name[6] = {};
		bpf_probe_read_kernel(name, sizeof(name), BPF_CORE_READ(dentry, d_name.name));
		if (name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 'f' &&
		    name[4] == 'd' && name[5] == ':')
			return FLAG_EXE_MEMFD;
	}
	__u32 flags = 0;
	if (magic == OVERLAYFS_SUPER_MAGIC_VALUE) {
		struct dentry *upper = 0;
		bpf_probe_read_kernel(&upper, sizeof(upper),
				      (void *)inode + bpf_core_type_size(struct inode));
		if (upper)
			flags |= FLAG_EXE_UPPER;
	}
	if (BPF_CORE_READ(inode, i_nlink) == 0)
		flags |= FLAG_EXE_DELETED;
	return flags;
}

/*
 * A memfd's file is the root of the kernel's internal mount, so a path walk gives "/": write
 * "/memfd:<name>" at s->data[at] instead (as /proc/PID/exe shows it, less " (deleted)").
 * Returns the length written, with the NUL.
 */
static __always_inline __u32 memfd_path(struct exec_scratch *s, __u32 at, struct dentry *dentry)
{
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);

	s->data[at & (2 * ARGV_CAP - 1)] = '/';
	long n = bpf_probe_read_kernel_str(&s->data[(at + 1) & (2 * ARGV_CAP - 1)], 256, name);
	return n > 0 ? (__u32)n + 1 : 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct syscall_entry entry = {};
	__u64 now = now_boot_ns();
	struct exec_scratch *s = get_scratch(SLOT_TRACEPOINT);
	if (!s)
		return 0;

	s->ev.hdr.flags = 0;
	if (take_entry((__u32)old_pid, &entry)) {
		entry.ts_boot = now;
		entry.syscall = SC_EXECVE;
		entry.arg2 = (__u64)(__s64)AT_FDCWD_VALUE;
		s->ev.hdr.flags |= FLAG_NO_ENTRY;
	}
	if (excluded_task()) {
		/* not resolving the path: forget any earlier match, so that the process is shown
		 * rather than hidden if its uid or comm changes */
		if (filters & EXCLUDE_PATH) {
			__u32 pid = bpf_get_current_pid_tgid() >> 32;
			bpf_map_delete_elem(&muted, &pid);
		}
		stat_inc(STAT_EXEC_FILTERED);
		return 0;
	}
	fill_header(&s->ev.hdr, EVENT_EXEC, entry.syscall, entry.ts_boot, now);
	s->ev.hdr.ret = 0;
	s->ev.path_is_raw = 0;
	s->ev.dirfd = (__s32)entry.arg2;
	s->ev.at_flags = (__u32)entry.arg3;

	/* argv from the new image */
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	__u64 arg_start = BPF_CORE_READ(mm, arg_start);
	__u64 arg_end = BPF_CORE_READ(mm, arg_end);
	__u64 want = arg_end > arg_start ? arg_end - arg_start : 0;
	__u32 max = argv_limit();
	__u32 len = want;
	if (want > max) {
		len = max;
		s->ev.hdr.flags |= FLAG_ARGV_TRUNCATED;
	}
	len &= ARGV_CAP - 1;
	if (len && bpf_probe_read_user(s->data, len, (void *)arg_start)) {
		s->ev.hdr.flags |= FLAG_READ_FAILED;
		len = 0;
	}
	s->ev.argv_len = len;

	/* the executed file, then the cwd */
	struct file *file = BPF_CORE_READ(bprm, file);
	struct path fpath = BPF_CORE_READ(file, f_path);
	__u32 exe = exe_flags(file, fpath.dentry);
	s->ev.hdr.flags |= exe;
	if (exe & FLAG_EXE_MEMFD)
		s->ev.path_len = memfd_path(s, len, fpath.dentry);
	else
		s->ev.path_len = append_path(s, len, &fpath, FLAG_PATH_TRUNCATED);
	if ((filters & EXCLUDE_PATH) && mute_by_path(s, len, s->ev.hdr.pid)) {
		stat_inc(STAT_EXEC_FILTERED);
		return 0;
	}

	struct path pwd = BPF_CORE_READ(p, fs, pwd);
	s->ev.cwd_len = append_path(s, len + s->ev.path_len, &pwd, FLAG_CWD_TRUNCATED);

	submit_exec(ctx, s);
	return 0;
}

/*
 * A failed exec returns to the caller: report it with the caller's argv and filename, as
 * remembered at entry. `ret` is the syscall's return value; a successful exec was reported by
 * sched_process_exec.
 */
static __always_inline int failed_exec(void *ctx, long ret, enum scratch_slot slot)
{
	struct syscall_entry entry = {};
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (take_entry(tid, &entry))
		return 0;
	if (ret >= 0)
		return 0; /* success was reported by sched_process_exec */
	if (excluded_current()) {
		stat_inc(STAT_EXEC_FILTERED);
		return 0;
	}

	__u64 now = now_boot_ns();
	struct exec_scratch *s = get_scratch(slot);
	if (!s)
		return 0;
	s->ev.hdr.flags = 0;
	fill_header(&s->ev.hdr, EVENT_EXEC, entry.syscall, entry.ts_boot, now);
	s->ev.hdr.ret = ret;
	s->ev.path_is_raw = 1;
	s->ev.dirfd = (__s32)entry.arg2;
	s->ev.at_flags = (__u32)entry.arg3;

	__u32 max = argv_limit();
	const char *const *argv = (const char *const *)entry.arg1;
	s->argv_off = 0;
	for (int i = 0; i < FAILED_EXEC_MAX_ARGS; i++) {
		const char *arg = 0;
		__u32 at = s->argv_off; /* from memory: keeps the verifier's loop states small */
		if (!argv || bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			break;
		if (at >= max) {
			s->ev.hdr.flags |= FLAG_ARGV_TRUNCATED;
			break;
		}
		long n = bpf_probe_read_user_str(&s->data[at & (ARGV_CAP - 1)], 2 * PATH_CAP, arg);
		if (n <= 0) {
			s->ev.hdr.flags |= FLAG_READ_FAILED;
			break;
		}
		if (n == 2 * PATH_CAP)
			s->ev.hdr.flags |= FLAG_ARGV_TRUNCATED;
		s->argv_off = at + n;
		if (i == FAILED_EXEC_MAX_ARGS - 1)
			s->ev.hdr.flags |= FLAG_ARGV_TRUNCATED;
	}
	__u32 off = s->argv_off;
	if (off > max) {
		off = max;
		s->ev.hdr.flags |= FLAG_ARGV_TRUNCATED;
	}
	off &= ARGV_CAP - 1;
	s->ev.argv_len = off;

	long n = bpf_probe_read_user_str(&s->data[off], PATH_CAP, (const char *)entry.arg0);
	if (n < 0) {
		n = 0;
		s->ev.hdr.flags |= FLAG_READ_FAILED;
	}
	s->ev.path_len = n & (PATH_CAP - 1);

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct path pwd = BPF_CORE_READ(task, fs, pwd);
	s->ev.cwd_len = append_path(s, off + s->ev.path_len, &pwd, FLAG_CWD_TRUNCATED);

	submit_exec(ctx, s);
	scratch_release(&s->busy, slot);
	return 0;
}

SEC("tp/syscalls/sys_exit_execve")
int exit_execve_tp(struct trace_event_raw_sys_exit *ctx)
{
	return failed_exec(ctx, ctx->ret, SLOT_TRACEPOINT);
}

SEC("tp/syscalls/sys_exit_execveat")
int exit_execveat_tp(struct trace_event_raw_sys_exit *ctx)
{
	return failed_exec(ctx, ctx->ret, SLOT_TRACEPOINT);
}

SEC("fexit/" SYSCALL_WRAPPER(execve))
int exit_execve_fx(void *ctx)
{
	return failed_exec(ctx, FEXIT_RET(ctx), SLOT_TRAMPOLINE);
}

SEC("fexit/" SYSCALL_WRAPPER(execveat))
int exit_execveat_fx(void *ctx)
{
	return failed_exec(ctx, FEXIT_RET(ctx), SLOT_TRAMPOLINE);
}

/* ---- process creation ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	struct syscall_entry entry = {};
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now = now_boot_ns();
	int have = !take_entry(tid, &entry);

	__u32 child_pid = BPF_CORE_READ(child, tgid);
	__u32 child_tid = BPF_CORE_READ(child, pid);
	if (child_pid != child_tid)
		return 0; /* a thread, not a process */
	if (BPF_CORE_READ(child, flags) & PF_KTHREAD_FLAG)
		return 0;
	/* a child of a muted process runs the same executable: mute it too */
	int muted_parent = 0;
	if (filters & EXCLUDE_PATH) {
		__u32 pid = bpf_get_current_pid_tgid() >> 32;
		if (bpf_map_lookup_elem(&muted, &pid)) {
			__u8 one = 1;
			muted_parent = 1;
			if (bpf_map_update_elem(&muted, &child_pid, &one, BPF_ANY))
				stat_inc(STAT_MUTED_MAP_FULL);
		}
	}
	if (muted_parent || excluded_task()) {
		stat_inc(STAT_FORK_FILTERED);
		return 0;
	}

	struct fork_event ev;
	__builtin_memset(&ev, 0, sizeof(ev));
	if (!have) {
		entry.ts_boot = now;
		entry.syscall = SC_CLONE;
	}
	fill_header(&ev.hdr, EVENT_FORK, entry.syscall, entry.ts_boot, now);
	ev.hdr.flags = have ? 0 : FLAG_NO_ENTRY;
	ev.hdr.ret = child_pid;
	ev.child_pid = child_pid;
	ev.child_tid = child_tid;
	ev.clone_flags = entry.arg0;
	if (emit(ctx, &ev, sizeof(ev), 0))
		stat_inc(STAT_FORK_DROPPED);
	else
		stat_inc(STAT_FORK_EMITTED);
	return 0;
}

/* ---- process termination ---- */

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	struct syscall_entry entry = {};
	__u32 tid = BPF_CORE_READ(p, pid);
	__u64 now = now_boot_ns();
	int have = !take_entry(tid, &entry);

	if (BPF_CORE_READ(p, flags) & PF_KTHREAD_FLAG)
		return 0;
	/* sched_process_exit fires per thread; the process ends with its last thread. */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	int was_muted = 0;
	if (filters & EXCLUDE_PATH) {
		__u32 pid = BPF_CORE_READ(p, tgid);
		was_muted = bpf_map_lookup_elem(&muted, &pid) != 0;
		if (was_muted)
			bpf_map_delete_elem(&muted, &pid);
	}
	if (was_muted || excluded_task()) {
		stat_inc(STAT_EXIT_FILTERED);
		return 0;
	}

	struct exit_event ev;
	__builtin_memset(&ev, 0, sizeof(ev));
	__u32 code = BPF_CORE_READ(p, exit_code);
	__u32 syscall;
	__s64 status;
	if (code & 0x7f) {
		syscall = SC_SIGNAL;
		status = code & 0x7f;
	} else {
		syscall = (have && (entry.syscall == SC_EXIT || entry.syscall == SC_EXIT_GROUP))
				  ? entry.syscall
				  : SC_EXIT_GROUP;
		status = (code >> 8) & 0xff;
	}
	int timed = have && syscall == entry.syscall;
	fill_header(&ev.hdr, EVENT_EXIT, syscall, timed ? entry.ts_boot : now, now);
	ev.hdr.flags = 0;
	ev.hdr.ret = status;
	ev.exit_code = code;
	ev.core_dumped = (code & 0x80) ? 1 : 0;
	if (emit(ctx, &ev, sizeof(ev), 0))
		stat_inc(STAT_EXIT_DROPPED);
	else
		stat_inc(STAT_EXIT_EMITTED);
	return 0;
}

/* Make the shared records and enums visible in BTF, so the Rust skeleton carries them. */
struct exec_event _exec_event = {};
struct fork_event _fork_event = {};
struct exit_event _exit_event = {};
enum event_kind _event_kind = 0;
enum syscall_id _syscall_id = 0;
enum event_flags _event_flags = 0;
enum stat_id _stat_id = 0;
enum exclude_bits _exclude_bits = 0;
struct path_prefix_key _path_prefix_key = {};
