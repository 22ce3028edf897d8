// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Feature probe: one fentry program on a syscall wrapper the trampoline hook set uses. User
 * space loads and attaches it, then detaches it, to learn whether BPF trampolines work on this
 * kernel (a program that loads may still fail to attach: arm64 before 6.4 has no ftrace direct
 * calls). It never runs for long: it is detached right after attaching.
 */
#include "syscall.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ctx is not read, like every trampoline program here (see syscall.bpf.h) */
SEC("fentry/" SYSCALL_WRAPPER(listen))
int trampoline_probe(void *ctx)
{
	/* a tracing helper, so that the test hook that retypes the program makes it fail */
	bpf_get_current_pid_tgid();
	return 0;
}
