// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket events: connect, accept, accept4, bind and listen, one record per call at syscall
 * exit. Family, type, protocol and both endpoints are read from the kernel socket behind the
 * file descriptor, so accept(fd, NULL, NULL), kernel-assigned ports and sockets created before
 * the probes were loaded are all complete, in whatever network namespace the socket lives.
 */
#include "common.bpf.h"
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define S_IFMT_VALUE 00170000
#define S_IFSOCK_VALUE 0140000
#define AF_UNIX_VALUE 1
#define AF_INET_VALUE 2
#define AF_INET6_VALUE 10

struct socket_event _socket_event = {};

/* Where a record is built before it is written with the perf buffer (too big for the stack). */
struct socket_scratch {
	struct socket_event ev;
	__u32 busy; /* a trampoline program is building a record here (SLOT_TRAMPOLINE) */
};

/* One area per enum scratch_slot on each CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct socket_scratch);
} socket_scratch SEC(".maps");

static __always_inline struct file *fd_file(struct task_struct *task, int fd)
{
	struct files_struct *files = BPF_CORE_READ(task, files);
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;

	if (fd < 0 || (unsigned int)fd >= max)
		return 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* Copy a unix socket's bound name; returns its length (abstract names start with NUL). */
static __always_inline __u32 unix_name(struct sock *sk, char *dst)
{
	struct unix_sock *u = (struct unix_sock *)sk;
	struct unix_address *addr = BPF_CORE_READ(u, addr);
	int len;

	if (!addr)
		return 0;
	len = BPF_CORE_READ(addr, len) - (int)sizeof(__u16); /* minus sun_family */
	if (len <= 0)
		return 0;
	if (len > UNIX_PATH_CAP)
		len = UNIX_PATH_CAP;
	if (bpf_probe_read_kernel(dst, len & 0x7f, &addr->name[0].sun_path))
		return 0;
	return len & 0x7f;
}

static __always_inline void read_socket(struct socket_event *ev, struct file *file)
{
	if (!file)
		return;
	__u16 mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & S_IFMT_VALUE) != S_IFSOCK_VALUE)
		return;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return;
	ev->is_socket = 1;
	ev->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	ev->type = BPF_CORE_READ(sock, type);
	ev->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	ev->protocol = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);

	if (ev->family == AF_INET_VALUE) {
		bpf_core_read(ev->local_addr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(ev->remote_addr, 4, &sk->__sk_common.skc_daddr);
		ev->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
		ev->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	} else if (ev->family == AF_INET6_VALUE) {
		bpf_core_read(ev->local_addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(ev->remote_addr, 16, &sk->__sk_common.skc_v6_daddr);
		ev->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
		ev->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	} else if (ev->family == AF_UNIX_VALUE) {
		ev->local_path_len = unix_name(sk, ev->local_path);
		struct sock *peer = BPF_CORE_READ((struct unix_sock *)sk, peer);
		if (peer)
			ev->remote_path_len = unix_name(peer, ev->remote_path);
	}
}

/*
 * The one builder of socket records: `syscall` returned `ret` on `fd` (for accept, the
 * listening socket); `uaddr`/`ulen` are the caller's sockaddr (connect and bind; 0 otherwise);
 * `ts` is when the call started, or 0 when the hook does not know (the record is then dated
 * now, duration 0). `file` is the socket's file when the hook has it (io_uring), else 0 (it
 * is found from the fd); `flags` are added to the header's.
 */
static __always_inline int socket_record(void *ctx, __u32 syscall, long ret, int fd, __u64 uaddr,
					 __u32 ulen, __u64 ts, enum scratch_slot slot,
					 struct file *file, __u32 flags)
{
	__u64 now = now_boot_ns();
	if (!ts)
		ts = now;

	if (excluded_current()) {
		stat_inc(STAT_SOCKET_FILTERED);
		return 0;
	}

	/* ring buffer: written in place; perf buffer: built in the scratch map, then copied */
	__u32 key = slot;
	struct socket_scratch *scratch = 0;
	struct socket_event *ev;
	if (use_perf) {
		scratch = bpf_map_lookup_elem(&socket_scratch, &key);
		if (!scratch) {
			stat_inc(STAT_SCRATCH_MISSING);
			return 0;
		}
		if (scratch_claim(&scratch->busy, slot))
			return 0;
		ev = &scratch->ev;
	} else {
		ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
		if (!ev) {
			stat_inc(STAT_SOCKET_DROPPED);
			return 0;
		}
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	fill_header(&ev->hdr, EVENT_SOCKET, syscall, ts, now);
	ev->hdr.ret = ret;
	ev->type = -1;
	ev->protocol = -1;

	ev->hdr.flags |= flags;
	if ((syscall == SC_ACCEPT || syscall == SC_ACCEPT4) && ret >= 0) {
		fd = (int)ret; /* the new connection */
		file = 0;
	}
	ev->fd = fd;
	if (!file)
		file = fd_file((struct task_struct *)bpf_get_current_task(), fd);
	read_socket(ev, file);

	if (uaddr) {
		__u32 len = ulen;
		long err;
		if (len >= USER_ADDR_CAP) {
			len = USER_ADDR_CAP;
			err = bpf_probe_read_user(ev->user_addr, USER_ADDR_CAP, (void *)uaddr);
		} else {
			/* keep clang from dropping the mask it can prove a no-op: the verifier
			 * needs it for its bounds */
			asm volatile("" : "+r"(len));
			err = bpf_probe_read_user(ev->user_addr, len & (USER_ADDR_CAP - 1),
						  (void *)uaddr);
		}
		if (err) {
			ev->hdr.flags |= FLAG_READ_FAILED;
			stat_inc(STAT_READ_FAILED);
		} else {
			ev->user_addr_len = len;
		}
	}
	if (!use_perf) {
		bpf_ringbuf_submit(ev, wakeup_flags(0));
		stat_inc(STAT_SOCKET_EMITTED);
		return 0;
	}
	if (emit(ctx, ev, sizeof(*ev), 0))
		stat_inc(STAT_SOCKET_DROPPED);
	else
		stat_inc(STAT_SOCKET_EMITTED);
	scratch_release(&scratch->busy, slot);
	return 0;
}

/*
 * One syscall's programs in both hook sets. Tracepoint set: the entry remembers fd, sockaddr
 * pointer and length, the exit builds the record. Trampoline set: one fexit program on the
 * syscall wrapper reads the arguments from the caller's registers and the return value, with
 * no entry state; its record's time is when the call returned (duration 0).
 */
#define SOCKET_SYSCALL(name, id, with_addr)                                               \
	SEC("tp/syscalls/sys_enter_" #name)                                               \
	int enter_##name##_tp(struct trace_event_raw_sys_enter *ctx)                      \
	{                                                                                 \
		remember_entry(id, ctx->args[0], with_addr ? ctx->args[1] : 0,            \
			       with_addr ? ctx->args[2] : 0, 0, 0);                       \
		return 0;                                                                 \
	}                                                                                 \
	SEC("tp/syscalls/sys_exit_" #name)                                                \
	int exit_##name##_tp(struct trace_event_raw_sys_exit *ctx)                        \
	{                                                                                 \
		struct syscall_entry e = {};                                              \
		if (take_entry((__u32)bpf_get_current_pid_tgid(), &e))                    \
			return 0;                                                         \
		return socket_record(ctx, e.syscall, ctx->ret, (int)e.arg0, e.arg1,       \
				     (__u32)e.arg2, e.ts_boot, SLOT_TRACEPOINT, 0, 0);    \
	}                                                                                 \
	SEC("fexit/" SYSCALL_WRAPPER(name))                                               \
	int exit_##name##_fx(void *ctx)                                                   \
	{                                                                                 \
		struct pt_regs *regs = syscall_regs();                                    \
		return socket_record(ctx, id, FEXIT_RET(ctx), (int)SYSCALL_ARG1(regs),    \
				     with_addr ? SYSCALL_ARG2(regs) : 0,                  \
				     with_addr ? (__u32)SYSCALL_ARG3(regs) : 0, 0,        \
				     SLOT_TRAMPOLINE, 0, 0);                              \
	}

SOCKET_SYSCALL(connect, SC_CONNECT, 1)
SOCKET_SYSCALL(bind, SC_BIND, 1)
SOCKET_SYSCALL(listen, SC_LISTEN, 0)
SOCKET_SYSCALL(accept, SC_ACCEPT, 0)
SOCKET_SYSCALL(accept4, SC_ACCEPT4, 0)

/*
 * io_uring: connect, accept, bind and listen submitted to a ring run without those system
 * calls. Every request's completion passes io_uring_complete (not a syscall tracepoint: it
 * costs nothing to processes that do not use io_uring), whose second argument is the request
 * on 6.0 and later (5.x passed the ring, user data and result only: there this program returns
 * at once). The request carries the opcode, the socket's file and the result; the record is
 * the same as the system call's (the process that submitted it, or its io-wq worker thread;
 * the endpoints from the kernel socket; `exit_code` the result), with FLAG_IO_URING.
 *
 * By completion the request no longer has the descriptor it was submitted with (the kernel
 * reuses that word for the completion's flags), so a program on the submission tracepoint
 * notes the descriptor and the time of each connect, bind and listen request (and a
 * connect's sockaddr pointer), and the completion takes them back: the row has the fd, is
 * dated at the submission and its `duration` runs to the completion. A request on a
 * registered (fixed) file names a slot, not a descriptor: fd -1. An accept's fd is the new
 * descriptor, as for the system call; it is dated at its completion (a multishot accept
 * completes many times), duration 0. Bind and listen exist as io_uring operations since 6.11.
 */
struct uring_submit {
	__u64 ts;
	__u64 uaddr; /* connect: the caller's sockaddr, as for the system call */
	__s32 fd;
	__u32 ulen;
};

/* requests in flight, by request address; LRU: a request whose completion is never posted
 * (IOSQE_CQE_SKIP_SUCCESS) is forgotten when room is needed */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct uring_submit);
} uring_submits SEC(".maps");

/* The socket call an io_uring opcode stands for; SC_UNKNOWN for the others. */
static __always_inline __u32 uring_syscall(__u8 op)
{
	if (op == bpf_core_enum_value(enum io_uring_op, IORING_OP_CONNECT))
		return SC_CONNECT;
	if (op == bpf_core_enum_value(enum io_uring_op, IORING_OP_ACCEPT))
		return SC_ACCEPT;
	if (bpf_core_enum_value_exists(enum io_uring_op, IORING_OP_BIND) &&
	    op == bpf_core_enum_value(enum io_uring_op, IORING_OP_BIND))
		return SC_BIND;
	if (bpf_core_enum_value_exists(enum io_uring_op, IORING_OP_LISTEN) &&
	    op == bpf_core_enum_value(enum io_uring_op, IORING_OP_LISTEN))
		return SC_LISTEN;
	return SC_UNKNOWN;
}

/* REQ_F_FIXED_FILE: bit 0 of the request's flags, which mirror the SQE's (IOSQE_FIXED_FILE) */
#define URING_FIXED_FILE 1

/* Note a connect, bind or listen request's descriptor and time as it is submitted. */
static __always_inline int note_submit(struct io_kiocb *req)
{
	/* a direct load: the tracepoint's argument is a typed (BTF) pointer here, and this runs
	 * for every request a ring submits, so it spares the helper call a probe read costs */
	__u32 syscall = uring_syscall(req->opcode);

	if (syscall == SC_UNKNOWN || syscall == SC_ACCEPT)
		return 0;
	/* the flags are 32 bits before 6.10 and 64 after: read what this kernel has */
	__u64 flags = 0;
	bpf_core_read(&flags, bpf_core_field_size(req->flags), &req->flags);
	struct uring_submit s = { .ts = now_boot_ns(), .fd = -1 };
	if (!(flags & URING_FIXED_FILE))
		s.fd = BPF_CORE_READ(req, cqe.fd);
	/* a connect's request keeps the caller's sockaddr pointer (struct io_connect, in the
	 * request's command area since 6.0), which the caller keeps valid until completion: read
	 * there, it names the destination of a connect that failed, as for the system call */
	if (syscall == SC_CONNECT && bpf_core_field_exists(req->cmd)) {
		struct io_connect *conn = (void *)&req->cmd;
		s.uaddr = (__u64)BPF_CORE_READ(conn, addr);
		s.ulen = BPF_CORE_READ(conn, addr_len);
	}
	__u64 key = (__u64)req;
	bpf_map_update_elem(&uring_submits, &key, &s, BPF_ANY);
	return 0;
}

/* The submission tracepoint is passed the request first: io_uring_submit_req since 6.3,
 * io_uring_submit_sqe(req, force_nonblock) from 5.18 to 6.2. The loader loads each only
 * where the kernel's prototype says so (src/probes/load.rs). */
SEC("tp_btf/io_uring_submit_req")
int on_uring_submit(__u64 *ctx)
{
	return note_submit((struct io_kiocb *)ctx[0]);
}

SEC("tp_btf/io_uring_submit_sqe")
int on_uring_submit_sqe(__u64 *ctx)
{
	return note_submit((struct io_kiocb *)ctx[0]);
}

SEC("tp_btf/io_uring_complete")
int on_uring_complete(__u64 *ctx)
{
	struct io_kiocb *req = (struct io_kiocb *)ctx[1];

	if (!bpf_core_field_exists(req->cqe))
		return 0;
	__u32 syscall = uring_syscall(BPF_CORE_READ(req, opcode));
	if (syscall == SC_UNKNOWN)
		return 0;
	struct uring_submit s = { .fd = -1 };
	__u64 key = (__u64)req;
	/* accepts are not noted at submission (note_submit): nothing to look up */
	struct uring_submit *seen =
		syscall == SC_ACCEPT ? 0 : bpf_map_lookup_elem(&uring_submits, &key);
	if (seen) {
		s = *seen;
		bpf_map_delete_elem(&uring_submits, &key);
	}
	long res = BPF_CORE_READ(req, cqe.res);
	struct file *file = BPF_CORE_READ(req, file);
	return socket_record(ctx, syscall, res, s.fd, s.uaddr, s.ulen, s.ts, SLOT_TRAMPOLINE, file,
			     FLAG_IO_URING);
}
