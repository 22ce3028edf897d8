//! Overload: a stalled consumer while a storm runs. The kernel side never blocks, losses are
//! counted per kind and shown, the extension keeps answering, and capture resumes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_stalled_consumer_loses_counted_events_and_recovers() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let pause = dir.path().join("pause");
    std::fs::write(&pause, b"").expect("pause file");
    let pause_env = pause.to_string_lossy().into_owned();
    let mut h = Harness::start(&[
        ("OSQUERY_EBPF_RING_BUFFER_SIZE", "65536"),
        ("OSQUERY_EBPF_TEST_PAUSE_FILE", &pause_env),
    ]);

    // 400 execs with 300-byte command lines: far more than a 64 KiB ring holds.
    let arg = "z".repeat(300);
    let storm = Instant::now();
    for _ in 0..400 {
        Command::new("/bin/true").arg(&arg).status().expect("true");
    }
    let storm_time = storm.elapsed();

    // Still answering while stalled, and the loss is visible.
    let pinged = Instant::now();
    assert_eq!(h.client.ping().expect("ping").code, Some(0));
    assert!(pinged.elapsed() < Duration::from_secs(1));
    let s = stats(&mut h);
    assert!(s["kernel_exec_dropped"] > 0, "{s:?}");
    assert!(s["kernel_exec_emitted"] > 0, "{s:?}");
    assert!(
        s["kernel_exec_emitted"] + s["kernel_exec_dropped"] >= 400,
        "{s:?}"
    );
    assert_eq!(s["exec_received"], 0, "the consumer is stalled: {s:?}");
    // The workload was never slowed down to wait for the consumer.
    assert!(storm_time < Duration::from_secs(60));

    // Unstall: what the ring held is delivered, then new events again.
    let held = stats(&mut h)["kernel_exec_emitted"];
    std::fs::remove_file(&pause).expect("unpause");
    // Everything the ring held is delivered (other tests' processes may add more: compare
    // with what had been emitted before unstalling).
    let start = Instant::now();
    while stats(&mut h)["exec_received"] < held {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the ring was not drained"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    h.exec_true(&["after-the-stall"]); // capture resumed

    // The loss was also logged as a warning.
    let start = Instant::now();
    while !h.ext.log_text().contains("events were lost") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no loss warning:\n{}",
            h.ext.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn concurrent_generates_during_a_storm_and_freezes_and_pings_stay_prompt() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let sock = h.manager.ext_socket(h.uuid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("/bin/true").arg("concurrent-storm").status();
                n += 1;
            }
            n
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (sock, stop) = (sock.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = ExtClient::connect(&sock, Duration::from_secs(5));
                let mut calls = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let rows = c.generate(PROCESS_TABLE, &context(PROCESS_COLUMNS, &[]));
                    assert!(rows.iter().all(|r| r.len() == PROCESS_COLUMNS.len()));
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(5);
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let t = Instant::now();
        // A new connection per health check, as osqueryd's extension watcher opens one.
        let pong = ExtClient::connect(&sock, Duration::from_secs(1)).ping();
        assert!(
            matches!(&pong, Ok(st) if st.code == Some(0)),
            "ping: {pong:?}; extension exit: {:?}\n{}",
            h.ext.child.try_wait(),
            h.ext.log_text()
        );
        slowest = slowest.max(t.elapsed());
        // Freeze and thaw the extension mid-generate (a debugger, a cgroup freeze): its
        // blocked socket calls are interrupted and must resume without losing a byte.
        h.ext.signal(nix::sys::signal::Signal::SIGSTOP);
        std::thread::sleep(Duration::from_millis(20));
        h.ext.signal(nix::sys::signal::Signal::SIGCONT);
        std::thread::sleep(Duration::from_millis(80));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let execs = storm.join().expect("storm");
    let calls: u32 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(execs > 0 && calls > 0);
    assert!(slowest < Duration::from_secs(1), "a ping took {slowest:?}");
    let s = stats(&mut h);
    assert_eq!(s["kernel_exec_dropped"] + s["queue_dropped"], 0, "{s:?}");
}

#[test]
fn restarts_cleanly_after_kill_9() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    h.ext.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(h.ext.wait_exit(Duration::from_secs(5)).is_some());
    let stale = h.manager.ext_socket(h.uuid);
    assert!(stale.exists(), "a killed run leaves its socket");
    // osqueryd notices the dead extension and forgets it; the next run may get the same uuid.
    h.manager.state.lock().expect("state").registered.clear();
    h.manager.set_next_uuid(h.uuid);
    let again = Extension::spawn(&h.manager, &[]);
    let uuid = h
        .manager
        .wait_registered(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no registration:\n{}", again.log_text()));
    assert_eq!(uuid, h.uuid);
    let mut c = ExtClient::connect(&stale, Duration::from_secs(10));
    assert_eq!(c.ping().expect("ping").code, Some(0));
    assert_eq!(c.columns(PROCESS_TABLE).len(), PROCESS_COLUMN_COUNT);
}

#[test]
fn a_probe_object_that_fails_leaves_the_other_table_working() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[("OSQUERY_EBPF_TEST_FAIL_PROBES", "socket")]);
    assert!(
        h.ext.log_text().contains("socket events are unavailable"),
        "{}",
        h.ext.log_text()
    );
    let s = stats(&mut h);
    assert!(s["probes_failed"] >= 1, "{s:?}");
    assert!(s["probes_attached"] >= 10, "{s:?}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let _c = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    h.exec_true(&["degraded"]); // the process table still works
    let sockets = h.client.generate("bpf_socket_events_v2", "{}");
    assert!(
        sockets.is_empty(),
        "no socket rows without the socket probes"
    );
}

#[test]
fn a_program_the_kernel_rejects_is_left_out_and_the_rest_load() {
    if !require_root() {
        return;
    }
    // the kernel refuses these two as it would on a kernel without their features
    let mut h = Harness::start(&[(
        "OSQUERY_EBPF_TEST_FAIL_PROBES",
        "enter_clone3_tp,exit_listen_tp",
    )]);
    let log = h.ext.log_text();
    assert!(
        log.contains("rejected the process probe enter_clone3_tp"),
        "{log}"
    );
    assert!(
        log.contains("rejected the socket probe exit_listen_tp"),
        "{log}"
    );
    let s = stats(&mut h);
    assert_eq!(s["probes_failed"], 2, "{s:?}");
    assert_eq!(s["probe_enter_clone3_tp"], 0, "{s:?}");
    assert_eq!(s["probe_exit_listen_tp"], 0, "{s:?}");
    assert_eq!(s["probe_on_exec"], 1, "{s:?}");
    assert_eq!(s["probe_exit_connect_tp"], 1, "{s:?}");
    // everything else still produces rows
    let (pid, _) = h.exec_true(&["partly-loaded"]);
    let rows = h.rows_for_pid(pid, |r| find(r, "exit_group").is_some());
    assert!(find(&rows, "exit_group").is_some(), "{rows:?}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let me = std::process::id();
    let rows = h.poll_rows(SOCKET_TABLE, SOCKET_COLUMNS, me, |rows| {
        rows.iter()
            .any(|r| r["syscall"] == "connect" && r["remote_port"] == port.to_string())
    });
    assert!(
        rows.iter()
            .any(|r| r["syscall"] == "connect" && r["remote_port"] == port.to_string()),
        "{rows:?}"
    );
    assert!(!rows.iter().any(|r| r["syscall"] == "listen"), "{rows:?}");
}

#[test]
fn an_essential_program_the_kernel_rejects_stops_the_start_with_status_7() {
    if !require_root() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osquery-ebpf"))
        .args(["watch", "--duration", "1"])
        .env("OSQUERY_EBPF_CONFIG", "/dev/null")
        .env("OSQUERY_EBPF_TEST_FAIL_PROBES", "on_exec")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("loading the process probes into the kernel failed"),
        "{stderr}"
    );
}
