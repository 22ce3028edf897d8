//! The exclude_* settings, applied in the kernel: excluded events never become rows, the
//! others still do, and what was left out is counted.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::*;

#[test]
fn excluded_events_are_left_out_in_the_kernel_and_counted() {
    if !require_root() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("osq-ebpf-filters")
        .tempdir()
        .expect("tempdir");
    let root = std::fs::canonicalize(dir.path()).expect("canonical");
    // exclude_paths: everything under root/excluded/
    let excluded_dir = root.join("excluded");
    std::fs::create_dir(&excluded_dir).expect("mkdir");
    let excluded_workload = excluded_dir.join("workload");
    std::fs::copy(workload(), &excluded_workload).expect("copy workload");
    // exclude_comms: a copy of /bin/true whose name is the comm
    let comm_true = root.join("osqe-excl-comm");
    std::fs::copy("/bin/true", &comm_true).expect("copy true");
    let cgroup = TestCgroup::create("inner");

    // A process running an excluded executable before the extension starts: muted from /proc.
    let mut early = Command::new(&excluded_workload)
        .args(["sleep", "60"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn early");

    let prefix = format!("{}/", excluded_dir.display());
    let mut env = vec![
        ("OSQUERY_EBPF_EXCLUDE_COMMS", "osqe-excl-comm".to_string()),
        ("OSQUERY_EBPF_EXCLUDE_UIDS", "4242,4343".to_string()),
        ("OSQUERY_EBPF_EXCLUDE_PATHS", prefix),
    ];
    if let Some(cg) = &cgroup {
        env.push((
            "OSQUERY_EBPF_EXCLUDE_CGROUPS",
            cg.outer
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
        ));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut h = Harness::start(&env);
    let before = stats(&mut h);

    // Excluded: by comm, by uid, by path (exec, fork, the child's exit, sockets), by cgroup.
    let by_comm = run_to_end(Command::new(&comm_true).arg("comm-marker"));
    let by_uid = run_to_end(
        Command::new("/bin/true")
            .arg("uid-marker")
            .uid(4242)
            .gid(4242),
    );
    let by_path = run_to_end(Command::new(&excluded_workload).arg("fork"));
    let port = 20000 + (std::process::id() % 20000) as u16;
    let mut server = Command::new(&excluded_workload)
        .args(["tcp-server", "127.0.0.1", &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn excluded server");
    let client =
        run_to_end(Command::new(workload()).args(["tcp-client", "127.0.0.1", &port.to_string()]));
    assert!(server.wait().expect("server").success());
    let by_cgroup = cgroup.as_ref().map(|cg| {
        run_to_end(Command::new("/bin/sh").arg("-c").arg(format!(
            "echo $$ > {}/cgroup.procs && exec /bin/true cgroup-marker",
            cg.inner.display()
        )))
    });
    early.kill().expect("kill early");
    early.wait().expect("wait early");

    // A process nothing excludes: its rows arrive, and records are delivered in order, so
    // every excluded event above would have arrived before it.
    let (control, _) = h.exec_true(&["filters-control"]);
    let rows = h.rows_for_pid(control, |r| find(r, "exit_group").is_some());
    assert!(
        find(&rows, "exit_group").is_some(),
        "control rows: {rows:?}"
    );
    let tcp = |r: &Row| r["syscall"] == "connect" && r["remote_port"] == port.to_string();
    let client_rows = h.poll_rows(SOCKET_TABLE, SOCKET_COLUMNS, client, |r| r.iter().any(tcp));
    assert!(
        client_rows.iter().any(tcp),
        "the client (not excluded) has its connect row: {client_rows:?}"
    );

    let ctx = context(PROCESS_COLUMNS, &[]);
    let all = h.client.generate(PROCESS_TABLE, &ctx);
    for (what, pid) in [
        ("comm", by_comm),
        ("uid", by_uid),
        ("path", by_path),
        ("pre-existing muted process", early.id()),
    ] {
        let leaked: Vec<_> = all.iter().filter(|r| r["pid"] == pid.to_string()).collect();
        assert!(
            leaked.is_empty(),
            "excluded by {what}, yet rows: {leaked:?}"
        );
    }
    // the excluded workload's forked child: no rows either (its exit would name it)
    let children: Vec<_> = all
        .iter()
        .filter(|r| r["parent"] == by_path.to_string())
        .collect();
    assert!(
        children.is_empty(),
        "child of an excluded process: {children:?}"
    );
    for marker in ["comm-marker", "uid-marker", "cgroup-marker"] {
        assert!(
            // (the sh that moves itself into the cgroup names the marker in its own argv)
            !all.iter()
                .any(|r| r["cmdline"].contains(marker) && !r["cmdline"].starts_with("/bin/sh")),
            "a {marker} row leaked"
        );
    }
    if let Some(pid) = by_cgroup {
        // sh's own exec happened before it joined the cgroup; nothing after it did
        let rows: Vec<_> = all.iter().filter(|r| r["pid"] == pid.to_string()).collect();
        assert!(
            rows.iter()
                .all(|r| r["syscall"] == "execve" && r["cmdline"].starts_with("/bin/sh")),
            "rows after joining an excluded cgroup: {rows:?}"
        );
    }
    let socket_rows = h
        .client
        .generate(SOCKET_TABLE, &context(SOCKET_COLUMNS, &[]));
    let leaked: Vec<_> = socket_rows
        .iter()
        .filter(|r| r["pid"] == server.id().to_string())
        .collect();
    assert!(
        leaked.is_empty(),
        "excluded server's socket rows: {leaked:?}"
    );

    // What was left out is counted, per kind.
    let after = stats(&mut h);
    let grew = |k: &str| after[k] - before[k];
    let cgroups = u64::from(by_cgroup.is_some());
    // execs: comm, uid, the forking workload, the server; exits: those four, the forked
    // child and the early process; the fork: the excluded workload's
    assert!(grew("kernel_exec_filtered") >= 4 + cgroups, "{after:?}");
    assert!(grew("kernel_fork_filtered") >= 1, "{after:?}");
    assert!(grew("kernel_exit_filtered") >= 6 + cgroups, "{after:?}");
    assert!(grew("kernel_socket_filtered") >= 3, "{after:?}"); // bind, listen, accept
    assert_eq!(after["kernel_muted_map_full"], 0);
}
