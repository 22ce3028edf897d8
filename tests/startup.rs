//! Start-up failures: one clear message and a distinct exit status each; and the start-up
//! paths that recover (tracefs not mounted, a BTF file given with --btf-path).

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;

fn ebpf() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osquery-ebpf"));
    c.env("OSQUERY_EBPF_CONFIG", "/dev/null");
    c
}

#[test]
fn without_privileges_the_exit_status_is_4() {
    if !require_root() {
        return;
    }
    let out = ebpf()
        .args(["watch", "--duration", "1"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    assert_eq!(
        stderr.matches("osquery-ebpf:").count(),
        1,
        "one message: {stderr}"
    );
}

#[test]
fn a_missing_btf_file_is_exit_status_5() {
    if !require_root() {
        return;
    }
    let out = ebpf()
        .args([
            "watch",
            "--duration",
            "1",
            "--btf-path",
            "/nonexistent/vmlinux.btf",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("btf_path") && stderr.contains("/nonexistent/vmlinux.btf"));

    let dir = tempfile::tempdir().expect("tmp");
    let junk = dir.path().join("junk.btf");
    std::fs::write(&junk, [0u8; 64]).expect("write");
    let out = ebpf()
        .args(["watch", "--duration", "1", "--btf-path"])
        .arg(&junk)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("neither a BTF file"), "{stderr}");
}

#[test]
fn a_btf_file_given_with_btf_path_is_used() {
    if !require_root() {
        return;
    }
    // the running kernel's BTF, as a plain file: what a BTFHub download is for a kernel
    // without /sys/kernel/btf/vmlinux
    let dir = tempfile::tempdir().expect("tmp");
    let btf = dir.path().join("vmlinux.btf");
    std::fs::copy("/sys/kernel/btf/vmlinux", &btf).expect("copy BTF");
    let mut cmd = ebpf();
    cmd.env("OSQUERY_EBPF_BTF_PATH", &btf);
    let w = watch_with_marker(cmd, "btf-path-marker");
    assert!(w.status.success(), "{}", w.stderr);
    assert!(w.row.is_some(), "{}", w.stderr);
    assert!(w.stderr.contains("use the BTF file"), "{}", w.stderr);
}

#[test]
fn tracefs_not_mounted_is_mounted_and_capture_works() {
    if !require_root() {
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("skipping: unshare (util-linux) is not installed");
        return;
    }
    // In a private mount namespace, take tracefs away; the extension mounts it there.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
             if [ -e /sys/kernel/tracing/events ]; then echo still mounted >&2; exit 99; fi; \
             exec {} \"$@\"",
            env!("CARGO_BIN_EXE_osquery-ebpf")
        ))
        .arg("sh")
        .env("OSQUERY_EBPF_CONFIG", "/dev/null");
    let w = watch_with_marker(cmd, "tracefs-marker");
    assert!(w.status.success(), "{}", w.stderr);
    assert!(w.stderr.contains("tracefs is not mounted"), "{}", w.stderr);
    assert!(w.row.is_some(), "{}", w.stderr);
    // the host's tracefs was not touched
    assert!(std::path::Path::new("/sys/kernel/tracing/events").exists());
}

/// The last `stats:` line of a watch run's stderr, as name -> value.
fn final_stats(stderr: &str) -> std::collections::BTreeMap<String, u64> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("stats: "))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

#[test]
fn hooks_trampoline_without_trampolines_is_exit_status_8_and_auto_uses_tracepoints() {
    if !require_root() {
        return;
    }
    // the feature probe broken as on a kernel without trampolines (this machine has none
    // anyway: fentry programs fail to load with EPERM)
    let fail = ("OSQUERY_EBPF_TEST_FAIL_PROBES", "trampoline_probe");
    let out = ebpf()
        .args(["watch", "--duration", "1", "--hooks", "trampoline"])
        .env(fail.0, fail.1)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("hooks = trampoline, but"), "{stderr}");
    assert_eq!(
        stderr.matches("osquery-ebpf:").count(),
        1,
        "one message: {stderr}"
    );
    assert!(
        !stderr.contains("WARN libbpf"),
        "the probe's failure is quiet: {stderr}"
    );

    // auto: the tracepoint set, said once in the log and in the stats
    let out = ebpf()
        .args(["watch", "--duration", "1", "--stats-every", "0"])
        .env(fail.0, fail.1)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("hooks: tracepoint for the process table, tracepoint for the socket table")
            .count(),
        1,
        "{stderr}"
    );
    let s = final_stats(&stderr);
    assert_eq!(s.get("process_hooks_trampoline"), Some(&0), "{stderr}");
    assert_eq!(s.get("socket_hooks_trampoline"), Some(&0), "{stderr}");
    assert_eq!(s.get("probes_failed"), Some(&0), "{stderr}");
    assert_eq!(s.get("probe_enter_execve_tp"), Some(&1), "{stderr}");
    assert_eq!(s.get("probe_exit_connect_tp"), Some(&1), "{stderr}");
    assert!(!s.contains_key("probe_enter_execve_fe"), "{stderr}");
}

#[test]
fn auto_picks_what_this_kernel_allows() {
    if !require_root() {
        return;
    }
    // hooks = trampoline answers whether trampolines work here; auto must then agree
    let forced = ebpf()
        .args(["watch", "--duration", "1", "--hooks", "trampoline"])
        .output()
        .expect("run");
    let auto = ebpf()
        .args(["watch", "--duration", "1", "--stats-every", "0"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "{stderr}");
    let s = final_stats(&stderr);
    let want = u64::from(forced.status.success());
    assert_eq!(s.get("process_hooks_trampoline"), Some(&want), "{stderr}");
    assert_eq!(s.get("socket_hooks_trampoline"), Some(&want), "{stderr}");
    if !forced.status.success() {
        assert_eq!(forced.status.code(), Some(8));
    }
}
