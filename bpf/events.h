/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one definition of every record the probes write to the ring buffer and of the stats
 * indices. Shared by every probe object in bpf/ and, through the skeletons' generated types, by Rust.
 */
#ifndef OSQUERY_EBPF_EVENTS_H
#define OSQUERY_EBPF_EVENTS_H

/* Compile-time capacities. Runtime bounds (argv_max) must stay below them. */
#define ARGV_CAP 65536        /* bytes of argv a record can hold (power of two) */
#define PATH_CAP 4096         /* bytes of one resolved path (power of two) */
#define PATH_MAX_COMPONENTS 64
#define FAILED_EXEC_MAX_ARGS 128

enum event_kind {
	EVENT_EXEC = 1,
	EVENT_FORK = 2,
	EVENT_EXIT = 3,
	EVENT_SOCKET = 4,
};

/* System calls, as this project numbers them (independent of the architecture's numbers). */
enum syscall_id {
	SC_UNKNOWN = 0,
	SC_EXECVE = 1,
	SC_EXECVEAT = 2,
	SC_FORK = 3,
	SC_VFORK = 4,
	SC_CLONE = 5,
	SC_CLONE3 = 6,
	SC_EXIT = 7,
	SC_EXIT_GROUP = 8,
	SC_SIGNAL = 9, /* not a syscall: the process was killed by a signal */
	SC_CONNECT = 10,
	SC_ACCEPT = 11,
	SC_ACCEPT4 = 12,
	SC_BIND = 13,
	SC_LISTEN = 14,
};

/* probe_error bits carried in event_header.flags */
enum event_flags {
	FLAG_ARGV_TRUNCATED = 1 << 0,
	FLAG_PATH_TRUNCATED = 1 << 1,
	FLAG_CWD_TRUNCATED = 1 << 2,
	FLAG_READ_FAILED = 1 << 3,
	FLAG_NO_ENTRY = 1 << 4, /* no syscall-entry record: timestamp and duration approximate */
	/* what the executed file is (exec records; not errors) */
	FLAG_EXE_MEMFD = 1 << 5,   /* a memfd: the program never had a path (fileless) */
	FLAG_EXE_DELETED = 1 << 6, /* no link left to the file when it was executed */
	FLAG_IO_URING = 1 << 7,    /* socket records: the operation went through io_uring */
	FLAG_EXE_UPPER = 1 << 8,   /* the file is on an overlayfs upper layer (written in a container) */
};

#define TTY_CAP 16 /* bytes of a terminal's name kept ("pts/3", "tty1") */

/* Per-CPU counters, summed by user space. */
enum stat_id {
	STAT_EXEC_EMITTED = 0,
	STAT_EXEC_DROPPED,
	STAT_FORK_EMITTED,
	STAT_FORK_DROPPED,
	STAT_EXIT_EMITTED,
	STAT_EXIT_DROPPED,
	STAT_SOCKET_EMITTED,
	STAT_SOCKET_DROPPED,
	STAT_ENTRY_MAP_FULL,  /* a syscall entry could not be remembered */
	STAT_ARGV_TRUNCATED,
	STAT_PATH_TRUNCATED,
	STAT_READ_FAILED,
	STAT_SCRATCH_MISSING, /* per-CPU scratch lookup failed (should never happen) */
	STAT_EXEC_FILTERED,   /* records not written because an exclude_* setting matched */
	STAT_FORK_FILTERED,
	STAT_EXIT_FILTERED,
	STAT_SOCKET_FILTERED,
	STAT_MUTED_MAP_FULL,  /* a process matching exclude_paths could not be remembered */
	STAT_SCRATCH_BUSY,    /* a trampoline program found its scratch slot in use: record lost */
	STAT_MAX,
};

/* Which exclude_* settings are in force (the `filters` constant of each object). */
enum exclude_bits {
	EXCLUDE_UID = 1 << 0,
	EXCLUDE_COMM = 1 << 1,
	EXCLUDE_CGROUP = 1 << 2,
	EXCLUDE_PATH = 1 << 3,
};

#define COMM_CAP 16           /* TASK_COMM_LEN */
#define PATH_PREFIX_CAP 256   /* bytes of a path an exclude_paths prefix is matched against */
#define CGROUP_DEPTH_MAX 16   /* cgroup ancestors checked against exclude_cgroups */

/* Key of the exclude_paths LPM trie: a prefix of prefixlen bits of data. */
struct path_prefix_key {
	__u32 prefixlen;
	__u8 data[PATH_PREFIX_CAP];
};

struct event_header {
	__u32 kind;      /* enum event_kind */
	__u32 syscall;   /* enum syscall_id */
	__u64 ts_boot;   /* syscall entry, CLOCK_BOOTTIME ns */
	__u64 duration;  /* ns from entry to the event */
	__s64 ret;       /* syscall return value; exit status or signal for EVENT_EXIT */
	__u64 cgroup_id;
	__u32 tid;
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 flags; /* enum event_flags */
	/* the calling task's context at the event */
	__u32 euid;
	__u32 egid;
	__u32 auid;       /* audit login uid; 4294967295 when unset */
	__u32 sid;        /* session id: the session leader's pid (host pid namespace) */
	__u64 start_time; /* the process's start, CLOCK_BOOTTIME ns */
	char tty[TTY_CAP]; /* controlling terminal's name, empty when none */
};

/*
 * EVENT_EXEC. Followed by argv_len bytes of NUL-separated argv, path_len bytes of path and
 * cwd_len bytes of cwd (each path NUL-terminated when non-empty).
 */
struct exec_event {
	struct event_header hdr;
	__u32 argv_len;
	__u32 path_len;
	__u32 cwd_len;
	__u32 path_is_raw; /* 1: path is the filename as passed to a failed exec, not resolved */
	__s32 dirfd;       /* execveat's dirfd, or AT_FDCWD */
	__u32 at_flags;    /* execveat's flags */
};

/* EVENT_FORK: hdr.ret is the new process's pid. */
struct fork_event {
	struct event_header hdr;
	__u32 child_pid;
	__u32 child_tid;
	__u64 clone_flags;
};

/* EVENT_EXIT: hdr.ret is the exit status (0-255), or the signal for SC_SIGNAL. */
struct exit_event {
	struct event_header hdr;
	__u32 exit_code; /* raw task->exit_code (wait status) */
	__u32 core_dumped;
};

#define UNIX_PATH_CAP 108 /* sizeof(sun_path) */
#define USER_ADDR_CAP 128 /* sizeof(struct sockaddr_storage) */

/*
 * EVENT_SOCKET: one connect/accept/accept4/bind/listen call at syscall exit. Endpoints come
 * from the kernel socket behind the fd; user_addr is the caller's sockaddr (connect and bind
 * only), used where the kernel socket no longer holds it (a failed connect or bind).
 */
struct socket_event {
	struct event_header hdr;
	__s32 fd;
	__u32 is_socket; /* the fd resolved to a socket */
	__u32 family;
	__s32 type;
	__s32 protocol;
	__u16 local_port;
	__u16 remote_port;
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u32 local_path_len;
	__u32 remote_path_len;
	char local_path[UNIX_PATH_CAP];
	char remote_path[UNIX_PATH_CAP];
	__u32 user_addr_len;
	__u8 user_addr[USER_ADDR_CAP];
	__u32 netns; /* inode of the socket's network namespace; 0 when not a socket */
	__u32 _pad;
};

/* Entry state of one thread inside a traced syscall, keyed by tid. */
struct syscall_entry {
	__u64 ts_boot;
	__u64 arg0;
	__u64 arg1;
	__u64 arg2;
	__u64 arg3;
	__u64 arg4;
	__u32 syscall; /* enum syscall_id */
	__u32 _pad;
};

#endif
