//! The in-guest test of the kernel matrix (tests/kernels/run-matrix.sh): runs inside a qemu
//! guest booted on one Debian kernel, as /init's last step. It starts the real extension in
//! `watch --json` mode (the same rows osquery gets), runs a workload with known answers
//! (exec, failed exec, fork, exit status, TCP connect/accept/bind/listen over IPv4 and IPv6),
//! checks every expected row arrived with the right values and that nothing was lost, prints
//! the verdict on the console and hands it to the host through the isa-debug-exit port.
//!
//! Usage: guest EBPF WORKLOAD [EXTRA EXTENSION ARGS...]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// qemu's isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4`): writing V makes qemu
/// exit with status (V << 1) | 1.
const DEBUG_EXIT_PORT: u64 = 0xf4;

fn verdict(ok: bool) -> ! {
    println!("GUEST RESULT: {}", if ok { "PASS" } else { "FAIL" });
    let _ = std::io::stdout().flush();
    // let the serial console drain before qemu exits
    std::thread::sleep(Duration::from_millis(500));
    let byte = [if ok { 0u8 } else { 1u8 }];
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/port") {
        use std::os::unix::fs::FileExt;
        let _ = f.write_at(&byte, DEBUG_EXIT_PORT);
    }
    // not under qemu (or no /dev/port): the exit status tells
    std::process::exit(if ok { 0 } else { 1 });
}

/// Run the workload to completion; returns its pid and the facts it printed.
fn workload(bin: &str, args: &[&str]) -> (u32, Value) {
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn workload");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait workload");
    let facts = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (pid, facts)
}

struct Rows {
    rx: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Rows {
    /// Wait until a row matching `pred` arrives.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(r) = self.seen.iter().find(|r| pred(r)) {
            return Some(r.clone());
        }
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(r) = self.rx.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(r.clone());
                if pred(&r) {
                    return Some(r);
                }
            }
        }
        println!("MISSING: {what}");
        None
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(ebpf), Some(work)) = (args.first(), args.get(1)) else {
        eprintln!("usage: guest EBPF WORKLOAD [EXTENSION ARGS...]");
        verdict(false);
    };
    let extra = &args[2..];
    println!(
        "guest: kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    // `check` (in the default run only): what an operator sees before a rollout, and its
    // verdict and hook set must agree with what the extension then does
    let check_ok = extra.is_empty().then(|| {
        let out = Command::new(ebpf)
            .args(["check", "--json"])
            .env("OSQUERY_EBPF_CONFIG", "/dev/null")
            .output()
            .expect("run check");
        let text = Command::new(ebpf)
            .arg("check")
            .env("OSQUERY_EBPF_CONFIG", "/dev/null")
            .output()
            .expect("run check");
        print!("{}", String::from_utf8_lossy(&text.stdout));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let want = std::env::var("EXPECT_HOOKS").unwrap_or_default();
        let ok = out.status.success()
            && report["status"] == 0
            && (want.is_empty()
                || (report["process_hooks"] == want.as_str()
                    && report["socket_hooks"] == want.as_str()));
        (ok, report)
    });
    let mut ext = Command::new(ebpf)
        .args(["watch", "--json", "--stats-every", "0"])
        .args(extra)
        .env("OSQUERY_EBPF_CONFIG", "/dev/null")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the extension");
    let (tx, rx) = mpsc::channel();
    let out = ext.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let (etx, erx) = mpsc::channel();
    let err = ext.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            println!("ext: {line}");
            let _ = etx.send(line);
        }
    });
    let mut rows = Rows {
        rx,
        seen: Vec::new(),
    };
    let slow = Duration::from_secs(90); // software emulation is slow

    // ready when a row of ours shows
    let start = Instant::now();
    let ready = loop {
        let (pid, _) = workload(work, &["exit", "0"]);
        let found = rows.wait("readiness", Duration::from_secs(2), |r| {
            s(r, "pid") == pid.to_string() && s(r, "syscall") == "execve"
        });
        if found.is_some() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(180) || ext.try_wait().ok().flatten().is_some() {
            break false;
        }
    };
    if !ready {
        println!("FAIL: the extension never produced a row");
        verdict(false);
    }
    let mut ok = true;
    let mut check = |cond: bool, what: String| {
        println!("{} {what}", if cond { "ok  " } else { "FAIL" });
        ok &= cond;
    };
    if let Some((check_ok, report)) = &check_ok {
        check(
            *check_ok,
            format!("check: status 0 and the expected hooks: {report}"),
        );
    }

    // exec with arguments, exit status 3
    let (p, _) = workload(work, &["exit", "3"]);
    let exec = rows.wait("execve of exit 3", slow, |r| {
        s(r, "pid") == p.to_string() && s(r, "syscall") == "execve"
    });
    check(
        exec.as_ref().is_some_and(|r| {
            s(r, "path") == *work
                && s(r, "cmdline") == format!("{work} exit 3")
                && s(r, "exit_code") == "0"
        }),
        format!("execve row: {exec:?}"),
    );
    // the hidden context columns, from the kernel and the process context
    check(
        exec.as_ref().is_some_and(|r| {
            let n = |k: &str| s(r, k).parse::<u64>().unwrap_or(0);
            s(r, "euid") == s(r, "uid")
                && s(r, "egid") == s(r, "gid")
                // 0 in the guest: its init never made a session
                && s(r, "sid").parse::<u32>().is_ok()
                && n("start_time") > 0
                && n("start_time") <= n("ntime")
                && !s(r, "auid").is_empty()
                && s(r, "parent_path")
                    == std::env::current_exe()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default()
                && s(r, "exe_memfd") == "0"
                && s(r, "exe_deleted") == "0"
        }),
        format!("context columns of the execve row: {exec:?}"),
    );
    let (mp, _) = workload(work, &["memfd-exec"]);
    let memfd = rows.wait("exec of a memfd", slow, |r| {
        s(r, "pid") == mp.to_string() && s(r, "syscall") == "execveat"
    });
    match memfd {
        // arm64 5.10 refuses execveat(memfd, "", AT_EMPTY_PATH) with ENOENT: nothing to check
        Some(r) if s(&r, "exit_code") != "0" => {
            println!("SKIP memfd exec refused by this kernel: {r:?}")
        }
        memfd => check(
            memfd.as_ref().is_some_and(|r| {
                s(r, "exe_memfd") == "1" && s(r, "path") == "/memfd:workload-copy"
            }),
            format!("memfd exec: {memfd:?}"),
        ),
    }
    let exit = rows.wait("exit of exit 3", slow, |r| {
        s(r, "pid") == p.to_string() && s(r, "syscall") == "exit_group"
    });
    check(
        exit.as_ref().is_some_and(|r| s(r, "exit_code") == "3"),
        format!("exit_group row with status 3: {exit:?}"),
    );

    // failed exec
    let (p, _) = workload(work, &["exec-fail", "/nonexistent/binary"]);
    let failed = rows.wait("failed execve", slow, |r| {
        s(r, "pid") == p.to_string() && s(r, "syscall") == "execve" && s(r, "exit_code") != "0"
    });
    check(
        failed
            .as_ref()
            .is_some_and(|r| s(r, "exit_code") == "-2" && s(r, "path") == "/nonexistent/binary"),
        format!("failed execve row (ENOENT): {failed:?}"),
    );

    // fork (the fork syscall) and the child's exit
    // (fork(2) on x86_64; arm64 has none, and the workload uses clone there)
    let (p, facts) = workload(work, &["fork"]);
    let child = facts["child"].as_u64().unwrap_or(0).to_string();
    let fork_call = s(&facts, "syscall");
    let fork = rows.wait(&fork_call, slow, |r| {
        s(r, "pid") == p.to_string() && s(r, "syscall") == fork_call
    });
    check(
        fork.as_ref().is_some_and(|r| s(r, "exit_code") == child),
        format!("{fork_call} row naming child {child}: {fork:?}"),
    );
    let cexit = rows.wait("child exit", slow, |r| {
        s(r, "pid") == child && s(r, "syscall") == "exit_group"
    });
    check(
        cexit
            .as_ref()
            .is_some_and(|r| s(r, "parent") == p.to_string()),
        format!("child's exit row with its parent: {cexit:?}"),
    );

    // TCP over IPv4 and IPv6 on loopback
    let trampolines = std::env::var("EXPECT_HOOKS").is_ok_and(|h| h == "trampoline");
    for (n, (addr, shown)) in [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1")]
        .into_iter()
        .enumerate()
    {
        let port = (41000 + n).to_string();
        let server = Command::new(work)
            .args(["tcp-server", addr, &port])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let sp = server.id().to_string();
        let (cp, cfacts) = workload(work, &["tcp-client", addr, &port]);
        // the server exits after its one accept; if the client never connected, it would wait
        // for ever: give it a minute, then end it (the checks below then fail)
        let mut server = server;
        let started = Instant::now();
        while server.try_wait().ok().flatten().is_none()
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = server.kill();
        let _ = server.wait();
        let cport = cfacts["local_port"].as_u64().unwrap_or(0).to_string();
        for call in ["bind", "listen", "accept4"] {
            let r = rows.wait(call, slow, |r| s(r, "pid") == sp && s(r, "syscall") == call);
            let want_port = if call == "accept4" {
                cport.clone()
            } else {
                String::new()
            };
            check(
                r.as_ref().is_some_and(|r| {
                    s(r, "local_address") == shown
                        && s(r, "local_port") == port
                        && s(r, "exit_code").parse::<i64>().is_ok_and(|c| c >= 0)
                        && (want_port.is_empty()
                            || (s(r, "remote_port") == want_port
                                && s(r, "remote_address") == shown))
                }),
                format!("{call} on {shown}: {r:?}"),
            );
        }
        // (the client retries until the server listens: earlier attempts are refused rows)
        let c = rows.wait("connect", slow, |r| {
            s(r, "pid") == cp.to_string()
                && s(r, "syscall") == "connect"
                && s(r, "exit_code") == "0"
        });
        check(
            c.as_ref().is_some_and(|r| {
                s(r, "remote_address") == shown
                    && s(r, "remote_port") == port
                    && s(r, "local_port") == cport
                    // the trampoline set has no entry time for socket calls: duration 0
                    && (!trampolines || s(r, "duration") == "0")
                    && s(r, "netns").parse::<u64>().unwrap_or(0) > 0
            }),
            format!("connect on {shown}: {c:?}"),
        );
    }

    // socket operations through io_uring: rows from 6.0 (the completion tracepoint names the
    // request), bind and listen in the ring from 6.11
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version: Vec<u32> = release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    let (up, facts) = workload(work, &["uring-tcp"]);
    if facts.is_null() {
        println!("SKIP io_uring: the workload could not use it on this kernel");
    } else if version.first().is_some_and(|&major| major < 6) {
        println!("SKIP io_uring rows: 5.x kernels do not name the request at completion");
    } else {
        let port = facts["port"].to_string();
        let client_port = facts["client_port"].to_string();
        let listener_fd = facts["listener_fd"].to_string();
        for call in ["connect", "accept"] {
            let r = rows.wait(&format!("io_uring {call}"), slow, |r| {
                s(r, "pid") == up.to_string()
                    && s(r, "syscall") == call
                    && s(r, "via_io_uring") == "1"
                    // (not the second connect, on a registered file)
                    && (call != "connect" || s(r, "local_port") == client_port)
            });
            // connect: its descriptor, noted when it was submitted; accept: the new one
            let (want_port, want_fd) = if call == "connect" {
                ("remote_port", facts["client_fd"].to_string())
            } else {
                ("local_port", facts["accept"].to_string())
            };
            check(
                r.as_ref()
                    .is_some_and(|r| s(r, want_port) == port && s(r, "fd") == want_fd),
                format!("io_uring {call} row: {r:?}"),
            );
        }
        // a refused connect names its destination (from the caller's sockaddr)
        let refused_port = facts["refused_port"].to_string();
        let r = rows.wait("io_uring refused connect", slow, |r| {
            s(r, "pid") == up.to_string()
                && s(r, "syscall") == "connect"
                && s(r, "via_io_uring") == "1"
                && s(r, "exit_code") == "-111"
        });
        check(
            r.as_ref().is_some_and(|r| {
                s(r, "remote_address") == "127.0.0.1" && s(r, "remote_port") == refused_port
            }),
            format!("io_uring refused connect row: {r:?}"),
        );
        if facts["bind_by_ring"] == true {
            let r = rows.wait("io_uring listen", slow, |r| {
                s(r, "pid") == up.to_string()
                    && s(r, "syscall") == "listen"
                    && s(r, "via_io_uring") == "1"
            });
            check(
                r.as_ref()
                    .is_some_and(|r| s(r, "local_port") == port && s(r, "fd") == listener_fd),
                format!("io_uring listen row: {r:?}"),
            );
        }
    }

    // stop the extension; its last stats line: nothing lost
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ext.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = ext.wait().expect("wait extension");
    check(status.success(), format!("extension exit: {status}"));
    // every line up to the end of its stderr: the reader thread may still be forwarding the
    // last ones (the final stats line) when wait() returns
    let mut log = Vec::new();
    while let Ok(line) = erx.recv_timeout(Duration::from_secs(10)) {
        log.push(line);
    }
    let stats: BTreeMap<String, u64> = log
        .iter()
        .rev()
        .find_map(|l| l.split_once("stats: ").map(|(_, s)| s.to_string()))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    let lost: u64 = [
        "kernel_exec_dropped",
        "kernel_fork_dropped",
        "kernel_exit_dropped",
        "kernel_socket_dropped",
        "queue_dropped",
        "decode_errors",
    ]
    .iter()
    .map(|k| stats.get(*k).copied().unwrap_or(0))
    .sum();
    check(
        !stats.is_empty() && lost == 0,
        format!("nothing lost: {lost}"),
    );
    if let Some(btf) = extra
        .iter()
        .position(|a| a == "--btf-path")
        .and_then(|i| extra.get(i + 1))
    {
        let used = log
            .iter()
            .any(|l| l.contains(&format!("use the BTF file {btf}")));
        check(used, format!("CO-RE relocations used {btf}"));
    }
    let want_perf = u64::from(extra.iter().any(|a| a == "perf"));
    check(
        stats.get("transport_perf_buffer") == Some(&want_perf),
        format!(
            "transport: transport_perf_buffer={:?}, wanted {want_perf}",
            stats.get("transport_perf_buffer")
        ),
    );
    // the hook set: what the run must end up with (EXPECT_HOOKS from the kernel command line)
    let want_hooks = std::env::var("EXPECT_HOOKS").unwrap_or_default();
    if !want_hooks.is_empty() {
        let want = u64::from(want_hooks == "trampoline");
        for table in ["process", "socket"] {
            let key = format!("{table}_hooks_trampoline");
            check(
                stats.get(&key) == Some(&want),
                format!(
                    "{table} hooks: {key}={:?}, wanted {want_hooks}",
                    stats.get(&key)
                ),
            );
        }
        // every syscall program of the set ran, none of the other set was loaded
        let (ours, theirs) = if want == 1 {
            (["_fe", "_fx"], ["_tp", "_tp"])
        } else {
            (["_tp", "_tp"], ["_fe", "_fx"])
        };
        let progs = |ends: [&str; 2]| {
            stats
                .iter()
                .filter(|(k, _)| k.starts_with("probe_") && ends.iter().any(|e| k.ends_with(e)))
                .map(|(k, v)| (k.clone(), *v))
                .collect::<Vec<_>>()
        };
        let mine = progs(ours);
        check(
            mine.len() >= 13 && mine.iter().all(|(_, v)| *v == 1),
            format!("the {want_hooks} set's programs attached: {mine:?}"),
        );
        let other = progs(theirs);
        check(
            other.is_empty(),
            format!("no program of the other set: {other:?}"),
        );
        let said = log.iter().filter(|l| l.contains("hooks: ")).count();
        check(said == 1, format!("the hook set logged once: {said}"));
    }
    check(
        stats.get("probes_failed") == Some(&0),
        format!(
            "every probe attached: probes_failed={:?}",
            stats.get("probes_failed")
        ),
    );
    verdict(ok);
}
