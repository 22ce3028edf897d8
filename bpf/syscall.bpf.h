/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Where the trampoline hook set attaches, per architecture. No maps: the feature probe
 * includes it alone. */
#ifndef OSQUERY_EBPF_SYSCALL_BPF_H
#define OSQUERY_EBPF_SYSCALL_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

/*
 * The two hook sets (user space loads one; see src/probes/hooks.rs). Programs in `tp/`
 * sections are the tracepoint set, programs in `fentry/`/`fexit/` sections the trampoline set,
 * and the `tp_btf/` sched programs serve both. A set's programs are thin entries: each record
 * is built by one function in the .bpf.c, whichever set feeds it.
 *
 * The trampoline set hooks the architecture's syscall wrappers (one per system call, so the
 * hook names the call) and reads the call's arguments from the task's saved user registers.
 * It never reads the wrapper's own `const struct pt_regs *` argument: in some kernels' BTF
 * (5.10's net/socket.c and fs/exec.c's execveat) that type is only a forward declaration, and
 * the verifier refuses any access to an argument of such a type. An fexit program reads only
 * the return value (ctx[1]).
 */
#if defined(__TARGET_ARCH_x86)
#define SYSCALL_WRAPPER(name) "__x64_sys_" #name
/* fork(2) and vfork(2) exist on x86_64 only (arm64 has clone and clone3) */
#define HAVE_FORK_SYSCALLS 1
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL_WRAPPER(name) "__arm64_sys_" #name
#define HAVE_FORK_SYSCALLS 0
#else
#error "unsupported architecture: add its syscall wrapper prefix"
#endif

/* THREAD_SIZE on x86_64 and arm64 kernels without KASAN (distribution kernels) */
#define KERNEL_STACK_SIZE 16384

/*
 * The current task's saved user registers: what the syscall wrapper was given. With
 * bpf_task_pt_regs (5.15+); before it, at the top of the task's kernel stack, where
 * task_pt_regs() finds them on both architectures (x86_64 kept no padding there before FRED,
 * which came with 6.9).
 */
static __always_inline struct pt_regs *syscall_regs(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	void *stack = BPF_CORE_READ(task, stack);
	return (struct pt_regs *)(stack + KERNEL_STACK_SIZE) - 1;
}

#define SYSCALL_ARG1(regs) PT_REGS_PARM1_CORE_SYSCALL(regs)
#define SYSCALL_ARG2(regs) PT_REGS_PARM2_CORE_SYSCALL(regs)
#define SYSCALL_ARG3(regs) PT_REGS_PARM3_CORE_SYSCALL(regs)
#define SYSCALL_ARG5(regs) PT_REGS_PARM5_CORE_SYSCALL(regs)

/* An fexit program's return value: after the wrapper's one argument. */
#define FEXIT_RET(ctx) ((long)((unsigned long long *)(ctx))[1])

#endif
