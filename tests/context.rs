//! The hidden context columns, each with a known answer: effective and login ids, the
//! session and terminal, the process's start time, the parent's binary and command line at the
//! event, executables that are memfds or deleted, and the network namespace of a socket.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::*;

const CONTEXT: &[&str] = &["euid", "egid", "auid", "sid", "tty", "start_time"];
const PROCESS_EXTRA: &[&str] = &[
    "parent_path",
    "parent_cmdline",
    "exe_memfd",
    "exe_deleted",
    "exe_upper_layer",
];

fn process_columns() -> Vec<&'static str> {
    [PROCESS_COLUMNS, CONTEXT, PROCESS_EXTRA].concat()
}

/// The execve row of `pid` with every column, the hidden ones too.
fn exec_row(h: &mut Harness, pid: u32) -> Row {
    let cols = process_columns();
    let rows = h.poll_rows(PROCESS_TABLE, &cols, pid, |r| find(r, "execve").is_some());
    find(&rows, "execve")
        .unwrap_or_else(|| panic!("no execve row for {pid}: {rows:?}"))
        .clone()
}

/// Run `cmd` to its end; the execve row of its process `/bin/true MARKER` (any pid).
fn marker_row(h: &mut Harness, cmd: &mut Command, marker: &str) -> Row {
    run_to_end(cmd);
    let cols = process_columns();
    let ctx = context(&cols, &[]);
    let want = format!("/bin/true {marker}");
    let start = std::time::Instant::now();
    loop {
        if let Some(r) = h
            .client
            .generate(PROCESS_TABLE, &ctx)
            .into_iter()
            .find(|r| r["cmdline"] == want && r["syscall"].starts_with("execve"))
        {
            return r;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "no row for {want}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn proc_cmdline(pid: &str) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn ids_session_terminal_start_time_and_parent_of_a_plain_exec() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    // a login uid set for this one process, as a login would (pam_loginuid)
    let row = marker_row(
        &mut h,
        Command::new("/bin/sh").args([
            "-c",
            "echo 4321 > /proc/self/loginuid && exec /bin/true auid-marker",
        ]),
        "auid-marker",
    );
    assert_eq!(row["auid"], "4321", "{row:?}");
    assert_eq!((row["euid"].as_str(), row["egid"].as_str()), ("0", "0"));
    // its parent is this test: binary and command line as at the event
    let me = std::process::id().to_string();
    assert_eq!(row["parent"], me);
    assert_eq!(
        row["parent_path"],
        std::env::current_exe()
            .expect("exe")
            .to_string_lossy()
            .as_ref()
    );
    assert_eq!(row["parent_cmdline"], proc_cmdline(&me));
    assert_eq!(
        (row["exe_memfd"].as_str(), row["exe_deleted"].as_str()),
        ("0", "0")
    );

    // start_time: the process's own start, as /proc/PID/stat gives it (clock ticks)
    let mut child = Command::new("/bin/sleep").arg("2").spawn().expect("sleep");
    let pid = child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let ticks: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .expect("starttime");
    let row = exec_row(&mut h, pid);
    child.wait().expect("wait");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let start: u64 = row["start_time"].parse().expect("start_time");
    let ntime: u64 = row["ntime"].parse().expect("ntime");
    assert_eq!(start / (1_000_000_000 / hz), ticks, "{row:?}");
    assert!(start <= ntime, "started before its exec: {row:?}");
    // its session is this test's, and this test has no terminal under cargo test
    let sid = nix::unistd::getsid(None)
        .expect("getsid")
        .as_raw()
        .to_string();
    assert_eq!(row["sid"], sid);
}

#[test]
fn setuid_exec_shows_the_effective_uid() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    // a setuid-root copy of the workload helper, run by nobody
    let dir = tempfile::Builder::new()
        .prefix("osq-ebpf-suid")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tmp");
    let suid = dir.path().join("suid-true");
    std::fs::copy(bin_true_path(), &suid).expect("copy");
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    let pid = run_to_end(
        Command::new("/usr/bin/setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&suid),
    );
    // setpriv drops to nobody, then execs the setuid file in the same process
    let cols = process_columns();
    let want = suid.to_string_lossy().into_owned();
    let rows = h.poll_rows(PROCESS_TABLE, &cols, pid, |r| {
        r.iter()
            .any(|r| r["syscall"] == "execve" && r["path"] == want)
    });
    let row = rows
        .iter()
        .find(|r| r["syscall"] == "execve" && r["path"] == want)
        .unwrap_or_else(|| panic!("no exec of {want}: {rows:?}"));
    assert_eq!(
        (row["uid"].as_str(), row["euid"].as_str()),
        ("65534", "0"),
        "{row:?}"
    );
    assert_eq!(
        (row["gid"].as_str(), row["egid"].as_str()),
        ("65534", "65534")
    );
}

#[test]
fn setsid_without_and_with_a_terminal() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    // setsid(1) makes the process a session leader without a terminal
    let row = marker_row(
        &mut h,
        Command::new("setsid").args(["--fork", "--wait", "/bin/true", "setsid-marker"]),
        "setsid-marker",
    );
    assert_eq!(row["sid"], row["pid"], "its own session: {row:?}");
    assert_eq!(row["tty"], "");
    // script(1) starts a shell in a new session on a pseudo-terminal
    if Command::new("script").arg("--version").output().is_err() {
        panic!("script(1) (util-linux) is needed");
    }
    let row = marker_row(
        &mut h,
        Command::new("script").args(["-qec", "/bin/true tty-marker", "/dev/null"]),
        "tty-marker",
    );
    assert!(row["tty"].starts_with("pts/"), "{row:?}");
    assert_ne!(
        row["sid"],
        nix::unistd::getsid(None).expect("sid").to_string()
    );
}

#[test]
fn execs_of_a_memfd_and_of_a_deleted_file_are_flagged() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let memfd = "import os\n\
        fd = os.memfd_create('payload')\n\
        os.write(fd, open('/bin/true', 'rb').read())\n\
        os.execve(fd, ['/bin/true', 'memfd-marker'], {})\n";
    let row = marker_row(
        &mut h,
        Command::new("python3").args(["-c", memfd]),
        "memfd-marker",
    );
    assert_eq!(
        (row["exe_memfd"].as_str(), row["exe_deleted"].as_str()),
        ("1", "0")
    );
    assert_eq!(row["path"], "/memfd:payload", "{row:?}");
    // python3 exec'd itself into the memfd: its parent is this test
    assert_eq!(row["parent"], std::process::id().to_string());

    let dir = tempfile::Builder::new()
        .prefix("osq-ebpf-del")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tmp");
    let copy = dir.path().join("gone");
    std::fs::copy("/bin/true", &copy).expect("copy");
    let deleted = format!(
        "import os\n\
         fd = os.open('{}', os.O_RDONLY)\n\
         os.unlink('{}')\n\
         os.execve(fd, ['/bin/true', 'deleted-marker'], {{}})\n",
        copy.display(),
        copy.display()
    );
    let row = marker_row(
        &mut h,
        Command::new("python3").args(["-c", &deleted]),
        "deleted-marker",
    );
    assert_eq!(
        (row["exe_memfd"].as_str(), row["exe_deleted"].as_str()),
        ("0", "1"),
        "{row:?}"
    );
    assert!(row["path"].ends_with("/gone"), "the name it had: {row:?}");
}

#[test]
fn a_parent_that_exits_before_its_child_execs() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    // the subshell outlives sh: when it execs, its parent is whoever reaped it
    let row = marker_row(
        &mut h,
        Command::new("/bin/sh").args(["-c", "(sleep 0.5; exec /bin/true orphan-marker) & exit 0"]),
        "orphan-marker",
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let parent = row["parent"].clone();
    assert_ne!(row["parent_cmdline"], "", "{row:?}");
    assert_eq!(
        row["parent_cmdline"],
        proc_cmdline(&parent),
        "the reaper: {row:?}"
    );
    // the binary as /proc shows it; '' where /proc does not show it (a sandbox's pid 1), as
    // the process context was seeded from /proc
    let exe = std::fs::read_link(format!("/proc/{parent}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert_eq!(row["parent_path"], exe, "{row:?}");
}

#[test]
fn sockets_in_two_network_namespaces_carry_their_namespace() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    // a loopback connection in this namespace and one in a new one; each prints its netns
    let script = "import os, socket\n\
        print(os.stat('/proc/self/ns/net').st_ino, os.getpid(), flush=True)\n\
        l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen()\n\
        c = socket.create_connection(l.getsockname()); a, _ = l.accept()\n";
    let mut seen = Vec::new();
    for new_ns in [false, true] {
        let mut cmd = if new_ns {
            let mut c = Command::new("unshare");
            c.args([
                "--net",
                "sh",
                "-c",
                "ip link set lo up && exec python3 -c \"$0\"",
            ]);
            c.arg(script);
            c
        } else {
            let mut c = Command::new("python3");
            c.args(["-c", script]);
            c
        };
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        let (ns, pid) = (
            words.next().expect("netns").to_string(),
            words.next().expect("pid").parse::<u32>().expect("pid"),
        );
        let cols = [SOCKET_COLUMNS, &["netns", "euid", "auid"]].concat();
        // python may connect to other sockets first (nscd, when HOME is unset and site looks
        // the user up): the loopback TCP connect is the one to check
        let loopback = |r: &Row| r["syscall"] == "connect" && r["remote_address"] == "127.0.0.1";
        let rows = h.poll_rows(SOCKET_TABLE, &cols, pid, |r| {
            r.iter().any(loopback) && r.iter().any(|r| r["syscall"].starts_with("accept"))
        });
        let connect = rows.iter().find(|r| loopback(r)).expect("connect row");
        assert_eq!(connect["netns"], ns, "{connect:?}");
        // the process rows of the same process agree on the shared columns
        let exec = exec_row(&mut h, pid);
        for col in ["euid", "auid", "uid", "cid"] {
            assert_eq!(connect[col], exec[col], "{col}");
        }
        seen.push(ns);
    }
    assert_ne!(seen[0], seen[1], "two namespaces");
    let own = std::fs::metadata("/proc/self/ns/net").expect("ns").ino();
    assert_eq!(seen[0], own.to_string());
}
