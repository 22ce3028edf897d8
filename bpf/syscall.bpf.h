/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Where the trampoline hook set attaches, per architecture. No maps: the feature probe
 * includes it alone. */
#ifndef OSQUERY_EBPF_SYSCALL_BPF_H
#define OSQUERY_EBPF_SYSCALL_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/*
 * The two hook sets (user space loads one; see src/probes/hooks.rs). Programs in `tp/`
 * sections are the tracepoint set, programs in `fentry/`/`fexit/` sections the trampoline set,
 * and the `tp_btf/` sched programs serve both. A set's programs are thin entries: each record
 * is built by one function below or in the .bpf.c, whichever set feeds it.
 *
 * The trampoline set hooks the architecture's syscall wrappers, which take the caller's
 * registers as `const struct pt_regs *`.
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
#define SYSCALL_ARG1(regs) PT_REGS_PARM1_SYSCALL(regs)
#define SYSCALL_ARG2(regs) PT_REGS_PARM2_SYSCALL(regs)
#define SYSCALL_ARG3(regs) PT_REGS_PARM3_SYSCALL(regs)
#define SYSCALL_ARG4(regs) PT_REGS_PARM4_SYSCALL(regs)
#define SYSCALL_ARG5(regs) PT_REGS_PARM5_SYSCALL(regs)

#endif
