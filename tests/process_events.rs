//! Root integration tests: the real binary loads the probes into the running kernel, registers
//! with a fake osqueryd, and workloads with known answers are checked row by row through
//! `generate` on the extension's socket.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn canon(p: &str) -> String {
    std::fs::canonicalize(p)
        .expect("canonicalize")
        .to_string_lossy()
        .into_owned()
}

/// Run the workload helper to completion; returns its pid and the JSON facts it printed.
fn run_workload(args: &[&str], cwd: Option<&Path>) -> (u32, Vec<Value>) {
    let mut cmd = Command::new(workload());
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let child = cmd.spawn().expect("spawn workload");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait workload");
    let facts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (pid, facts)
}

/// The cgroup id (cgroup v2 directory inode) of a process.
fn cgroup_id(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    std::fs::metadata(format!("/sys/fs/cgroup{path}"))
        .ok()
        .map(|m| m.ino())
}

/// Columns every row must have right whatever the workload.
fn check_common(row: &Row, pid: u32, parent: u32, before_ns: u64, after_ns: u64) {
    assert_eq!(row.len(), PROCESS_COLUMNS.len(), "{row:?}");
    assert_eq!(row["pid"], pid.to_string(), "{row:?}");
    assert_eq!(row["parent"], parent.to_string(), "{row:?}");
    assert_eq!(row["uid"], nix::unistd::getuid().to_string());
    assert_eq!(row["gid"], nix::unistd::getgid().to_string());
    let ntime: u64 = row["ntime"].parse().expect("ntime");
    assert!(
        ntime >= before_ns && ntime <= after_ns,
        "ntime {ntime} not within [{before_ns}, {after_ns}]"
    );
    let time: u64 = row["time"].parse().expect("time");
    assert!(time.abs_diff(unix_now()) <= 30, "time {time}");
    let duration: u64 = row["duration"].parse().expect("duration");
    assert!(duration < 10_000_000_000, "duration {duration}");
    let eid: u64 = row["eid"].parse().expect("eid");
    assert!(eid > 0);
    if let Some(cid) = cgroup_id(std::process::id()) {
        assert_eq!(row["cid"], cid.to_string(), "{row:?}");
    }
}

#[test]
fn exec_with_hostile_arguments_gives_complete_rows() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let dir = tempfile::tempdir().expect("tmp");
    let before = boot_ns();
    let args: Vec<OsString> = vec![
        "a b".into(),
        "it's \"q\"".into(),
        "".into(),
        OsString::from_vec(b"x\xff\xfey".to_vec()),
        "tab\there".into(),
    ];
    let mut child = Command::new("/bin/true")
        .args(&args)
        .current_dir(dir.path())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    child.wait().expect("wait");
    let rows = h.rows_for_pid(pid, |r| {
        find(r, "execve").is_some() && find(r, "exit_group").is_some()
    });
    let after = boot_ns();
    let exec = find(&rows, "execve").unwrap_or_else(|| panic!("no execve row: {rows:?}"));
    let me = std::process::id();
    check_common(exec, pid, me, before, after);
    assert_eq!(exec["tid"], pid.to_string());
    assert_eq!(exec["exit_code"], "0");
    assert_eq!(exec["probe_error"], "0");
    assert_eq!(exec["path"], canon("/bin/true"));
    assert_eq!(exec["cwd"], canon(&dir.path().to_string_lossy()));
    assert_eq!(
        exec["cmdline"],
        "/bin/true 'a b' 'it'\\''s \"q\"' '' x\u{fffd}\u{fffd}y 'tab\there'"
    );
    let json: Vec<String> = serde_json::from_str(&exec["json_cmdline"]).expect("json_cmdline");
    assert_eq!(
        json,
        vec![
            "/bin/true",
            "a b",
            "it's \"q\"",
            "",
            "x\u{fffd}\u{fffd}y",
            "tab\there"
        ]
    );

    let exit = find(&rows, "exit_group").expect("exit row");
    check_common(exit, pid, me, before, after);
    assert_eq!(exit["exit_code"], "0");
    assert_eq!(exit["path"], exec["path"]);
    assert_eq!(exit["cmdline"], exec["cmdline"]);
    assert!(exit["eid"].parse::<u64>().expect("eid") > exec["eid"].parse::<u64>().expect("eid"));

    // The process that created the child: a fork-family row of ours returning its pid.
    let mine = h.rows_for_pid(me, |r| r.iter().any(|x| x["exit_code"] == pid.to_string()));
    let fork = mine
        .iter()
        .find(|r| r["exit_code"] == pid.to_string())
        .unwrap_or_else(|| panic!("no creation row for {pid}"));
    assert!(
        ["clone", "clone3", "vfork", "fork"].contains(&fork["syscall"].as_str()),
        "{fork:?}"
    );
    assert_eq!(fork["pid"], me.to_string());
    assert_eq!(fork["path"], canon("/proc/self/exe"));
}

#[test]
fn relative_exec_after_chdir_and_execveat() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let me = std::process::id();
    let truth = canon("/usr/bin/true");

    let before = boot_ns();
    let (pid, _) = run_workload(&["exec-rel", "/usr/bin", "true", "x"], None);
    // the helper's own exec comes first; the one under test runs ./true
    let is_true = |r: &Row| r["syscall"] == "execve" && r["cmdline"] == "./true x";
    let rows = h.rows_for_pid(pid, |r| r.iter().any(is_true));
    let exec = rows
        .iter()
        .find(|r| is_true(r))
        .unwrap_or_else(|| panic!("no execve: {rows:?}"));
    check_common(exec, pid, me, before, boot_ns());
    assert_eq!(
        (exec["path"].as_str(), exec["cwd"].as_str()),
        (truth.as_str(), canon("/usr/bin").as_str())
    );
    assert_eq!(exec["cmdline"], "./true x");

    let (pid, facts) = run_workload(&["execveat-dirfd", "/usr/bin", "true", "dirfd-arg"], None);
    assert!(facts[0]["dirfd"].as_i64().expect("dirfd") >= 0);
    let rows = h.rows_for_pid(pid, |r| find(r, "execveat").is_some());
    let exec = find(&rows, "execveat").unwrap_or_else(|| panic!("no execveat: {rows:?}"));
    assert_eq!(exec["path"], truth);
    assert_eq!(exec["cmdline"], "true dirfd-arg");
    assert_eq!(exec["exit_code"], "0");

    let (pid, _) = run_workload(
        &["execveat-empty", "/usr/bin/true", "true", "empty-path"],
        None,
    );
    let rows = h.rows_for_pid(pid, |r| find(r, "execveat").is_some());
    let exec = find(&rows, "execveat").unwrap_or_else(|| panic!("no execveat: {rows:?}"));
    assert_eq!(exec["path"], truth);
    assert_eq!(exec["cmdline"], "true empty-path");
}

#[test]
fn exec_from_a_thread_reports_the_process() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let (pid, _) = run_workload(&["thread-exec", "/bin/true", "from-a-thread"], None);
    let is_it = |r: &Row| r["syscall"] == "execve" && r["cmdline"] == "/bin/true from-a-thread";
    let rows = h.rows_for_pid(pid, |r| r.iter().any(is_it));
    let exec = rows
        .iter()
        .find(|r| is_it(r))
        .unwrap_or_else(|| panic!("no execve from the thread: {rows:?}"));
    // after exec the thread has become the process: tid == pid, same process id as before
    assert_eq!(
        (exec["pid"].as_str(), exec["tid"].as_str()),
        (pid.to_string().as_str(), pid.to_string().as_str())
    );
    assert_eq!(exec["parent"], std::process::id().to_string());
    assert_eq!(exec["exit_code"], "0");
    assert_eq!(exec["path"], canon("/bin/true"));
    let duration: u64 = exec["duration"].parse().expect("duration");
    assert!(
        duration > 0 && duration < 10_000_000_000,
        "the entry time was found: {exec:?}"
    );
}

#[test]
fn failed_exec_is_a_row_with_the_errno() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let dir = tempfile::tempdir().expect("tmp");
    let cwd = canon(&dir.path().to_string_lossy());
    let me = std::process::id();

    let before = boot_ns();
    let (pid, facts) = run_workload(
        &["exec-fail", "/nonexistent/prog", "a", "b c"],
        Some(dir.path()),
    );
    assert_eq!(facts[0]["errno"], libc::ENOENT);
    let rows = h.rows_for_pid(pid, |r| r.iter().any(|x| x["exit_code"] == "-2"));
    let failed = rows
        .iter()
        .find(|r| r["syscall"] == "execve" && r["exit_code"] == "-2")
        .unwrap_or_else(|| panic!("no failed execve: {rows:?}"));
    check_common(failed, pid, me, before, boot_ns());
    assert_eq!(failed["path"], "/nonexistent/prog");
    assert_eq!(failed["cwd"], cwd);
    assert_eq!(failed["cmdline"], "/nonexistent/prog a 'b c'");
    assert_eq!(failed["probe_error"], "0");

    let (pid, _) = run_workload(&["exec-fail", "./missing"], Some(dir.path()));
    let rows = h.rows_for_pid(pid, |r| r.iter().any(|x| x["exit_code"] == "-2"));
    let failed = rows
        .iter()
        .find(|r| r["exit_code"] == "-2")
        .unwrap_or_else(|| panic!("no failed execve: {rows:?}"));
    assert_eq!(failed["path"], format!("{cwd}/missing"));
}

#[test]
fn fork_vfork_clone3_create_rows_and_threads_do_not() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let helper = canon(&workload().to_string_lossy());
    for mode in ["fork", "vfork", "clone3"] {
        let before = boot_ns();
        let (pid, facts) = run_workload(&[mode], None);
        let child = facts[0]["child"].as_u64().expect("child pid") as u32;
        let rows = h.rows_for_pid(pid, |r| find(r, mode).is_some());
        let row = find(&rows, mode).unwrap_or_else(|| panic!("no {mode} row: {rows:?}"));
        check_common(row, pid, std::process::id(), before, boot_ns());
        assert_eq!(row["exit_code"], child.to_string(), "{mode}");
        assert_eq!(row["path"], helper);
        assert_eq!(row["cmdline"], format!("{} {mode}", workload().display()));

        // The child's own exit: parent is the workload, binary and argv inherited.
        let rows = h.rows_for_pid(child, |r| find(r, "exit_group").is_some());
        let exit = find(&rows, "exit_group").unwrap_or_else(|| panic!("no exit for {mode} child"));
        assert_eq!(exit["parent"], pid.to_string());
        assert_eq!(exit["exit_code"], "0");
        assert_eq!(exit["path"], helper);
    }

    let (pid, _) = run_workload(&["thread"], None);
    let rows = h.rows_for_pid(pid, |r| find(r, "exit_group").is_some());
    assert!(find(&rows, "exit_group").is_some(), "{rows:?}");
    let created: Vec<&Row> = rows
        .iter()
        .filter(|r| ["clone", "clone3", "fork", "vfork"].contains(&r["syscall"].as_str()))
        .collect();
    assert!(created.is_empty(), "a thread became a row: {created:?}");
}

#[test]
fn exit_status_and_death_by_signal() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let (pid, _) = run_workload(&["exit", "3"], None);
    let rows = h.rows_for_pid(pid, |r| find(r, "exit_group").is_some());
    let exit = find(&rows, "exit_group").unwrap_or_else(|| panic!("no exit: {rows:?}"));
    assert_eq!(exit["exit_code"], "3");
    assert_eq!(exit["path"], canon(&workload().to_string_lossy()));

    let mut child = Command::new(workload())
        .args(["sleep", "60"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let rows = h.rows_for_pid(pid, |r| find(r, "signal").is_some());
    let killed = find(&rows, "signal").unwrap_or_else(|| panic!("no signal row: {rows:?}"));
    assert_eq!(killed["exit_code"], "9");
    let exits = rows
        .iter()
        .filter(|r| ["signal", "exit", "exit_group"].contains(&r["syscall"].as_str()))
        .count();
    assert_eq!(exits, 1, "one termination row per process: {rows:?}");
}

#[test]
fn argv_bound_truncates_with_probe_error() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[("OSQUERY_EBPF_ARGV_MAX", "4096")]);
    let long: Vec<String> = (0..100)
        .map(|i| format!("{i:03}{}", "x".repeat(97)))
        .collect();
    let (_, exec) = h.exec_true(&long);
    assert_eq!(exec["probe_error"], "1");
    let json: Vec<String> = serde_json::from_str(&exec["json_cmdline"]).expect("json");
    // every argument but the cut last one ends with a NUL in the kernel's copy
    let kept: usize = json.iter().map(|a| a.len() + 1).sum::<usize>() - 1;
    assert_eq!(kept, 4096, "argv cut at exactly argv_max bytes");
    assert_eq!(json[0], "/bin/true");
    assert_eq!(json[1], long[0]);
}

#[test]
fn default_bound_keeps_a_12_kib_argv_whole() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let long: Vec<String> = (0..120)
        .map(|i| format!("{i:03}{}", "y".repeat(97)))
        .collect();
    let (_, exec) = h.exec_true(&long);
    assert_eq!(exec["probe_error"], "0");
    let json: Vec<String> = serde_json::from_str(&exec["json_cmdline"]).expect("json");
    assert_eq!(json.len(), 121);
    assert_eq!(&json[1..], &long[..]);
}

#[test]
fn time_constraints_reach_generate() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let (pid, exec) = h.exec_true(&["time-test"]);
    let t: u64 = exec["time"].parse().expect("time");
    let p = pid.to_string();
    let count = |h: &mut Harness, op: i32, v: u64| {
        let ctx = context(
            PROCESS_COLUMNS,
            &[("pid", 2, p.as_str()), ("time", op, &v.to_string())],
        );
        h.client
            .generate(PROCESS_TABLE, &ctx)
            .iter()
            .filter(|r| r["syscall"] == "execve")
            .count()
    };
    assert_eq!(count(&mut h, 2, t), 1); // =
    assert_eq!(count(&mut h, 4, t), 0); // >
    assert_eq!(count(&mut h, 32, t), 1); // >=
    assert_eq!(count(&mut h, 16, t), 0); // <
    assert_eq!(count(&mut h, 8, t), 1); // <=
    assert_eq!(count(&mut h, 4, t - 1), 1);

    // Only the columns used are produced.
    let ctx = context(&["pid", "cmdline"], &[("pid", 2, p.as_str())]);
    let rows = h.client.generate(PROCESS_TABLE, &ctx);
    let row = rows
        .iter()
        .find(|r| r["cmdline"] == "/bin/true time-test")
        .expect("row");
    assert_eq!(row.len(), 2, "{row:?}");
}
