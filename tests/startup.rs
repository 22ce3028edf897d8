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
