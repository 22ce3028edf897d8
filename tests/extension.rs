//! The extension's life with osquery: registration, columns, bad requests, and every way it
//! can be stopped. Driven through the real protocol by the fake manager.

mod common;

use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

#[test]
fn registers_the_table_with_the_old_schema() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let info = h.manager.info(h.uuid).expect("info");
    assert_eq!(info.name.as_deref(), Some("osquery-ebpf"));
    let registry = h.manager.registry(h.uuid).expect("registry");
    let routes = &registry["table"][PROCESS_TABLE];
    let expected = [
        ("tid", "BIGINT", "0"),
        ("pid", "BIGINT", "0"),
        ("parent", "BIGINT", "0"),
        ("uid", "BIGINT", "0"),
        ("gid", "BIGINT", "0"),
        ("cid", "INTEGER", "0"),
        ("exit_code", "TEXT", "0"),
        ("probe_error", "INTEGER", "0"),
        ("syscall", "TEXT", "0"),
        ("path", "TEXT", "0"),
        ("cwd", "TEXT", "0"),
        ("cmdline", "TEXT", "0"),
        ("duration", "INTEGER", "0"),
        ("json_cmdline", "TEXT", "16"),
        ("ntime", "TEXT", "0"),
        ("time", "BIGINT", "20"),
        ("eid", "INTEGER", "16"),
        // this project's additions, all hidden: SELECT * is the old table's
        ("euid", "BIGINT", "16"),
        ("egid", "BIGINT", "16"),
        ("auid", "BIGINT", "16"),
        ("sid", "BIGINT", "16"),
        ("tty", "TEXT", "16"),
        ("start_time", "BIGINT", "16"),
        ("parent_path", "TEXT", "16"),
        ("parent_cmdline", "TEXT", "16"),
        ("exe_memfd", "INTEGER", "16"),
        ("exe_deleted", "INTEGER", "16"),
        ("exe_upper_layer", "INTEGER", "16"),
    ];
    let got: Vec<(String, String, String)> = routes
        .iter()
        .map(|r| (r["name"].clone(), r["type"].clone(), r["op"].clone()))
        .collect();
    let want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(routes.iter().all(|r| r["id"] == "column"));

    // columns over the extension socket, as SQLite asks when it creates the table
    let cols = h.client.columns(PROCESS_TABLE);
    assert_eq!(cols.len(), PROCESS_COLUMN_COUNT);
    assert_eq!(cols[15]["name"], "time");
    assert_eq!(h.client.ping().expect("ping").code, Some(0));
}

#[test]
fn bad_requests_get_errors_and_the_extension_keeps_serving() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    for ctx in [
        "{not json",
        "[1,2]",
        r#"{"constraints":[{"name":"time","list":[{"op":4,"expr":"yesterday"}]}]}"#,
        r#"{"constraints":[{"name":"pid","list":[{"op":"x","expr":"1"}]}]}"#,
    ] {
        let resp = h
            .client
            .call(PROCESS_TABLE, &[("action", "generate"), ("context", ctx)])
            .expect("a reply");
        let st = resp.status.expect("status");
        assert_eq!(st.code, Some(1), "{ctx}");
        assert!(!st.message.unwrap_or_default().is_empty());
    }
    let huge = format!(r#"{{"constraints":[],"pad":"{}"}}"#, "x".repeat(4 << 20));
    let resp = h
        .client
        .call(PROCESS_TABLE, &[("action", "generate"), ("context", &huge)])
        .expect("a reply to a huge context");
    assert_eq!(resp.status.and_then(|s| s.code), Some(0));

    let resp = h
        .client
        .call(PROCESS_TABLE, &[("action", "explode")])
        .expect("reply");
    assert_eq!(resp.status.and_then(|s| s.code), Some(1));

    // An unknown table is an error status, as osquery expects from any failed call.
    let resp = h
        .client
        .call("no_such_table", &[("action", "generate")])
        .expect("a reply for an unknown table");
    let st = resp.status.expect("status");
    assert_eq!(st.code, Some(1));
    assert!(st.message.unwrap_or_default().contains("no_such_table"));

    // Still serving, on a new connection as osquery would open.
    let mut c = ExtClient::connect(&h.manager.ext_socket(h.uuid), Duration::from_secs(5));
    assert_eq!(c.ping().expect("ping").code, Some(0));
    let rows = c.generate(PROCESS_TABLE, &context(PROCESS_COLUMNS, &[]));
    assert!(rows.iter().all(|r| r.len() == 17));
    assert_eq!(
        h.ext.child.try_wait().expect("status"),
        None,
        "still running"
    );
}

#[test]
fn shutdown_call_stops_it_cleanly() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let _ = h.client.shutdown();
    let st = h.ext.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(st.code(), Some(0), "log:\n{}", h.ext.log_text());
    assert!(!h.manager.ext_socket(h.uuid).exists(), "socket removed");
    assert!(h
        .manager
        .state
        .lock()
        .expect("state")
        .deregistered
        .contains(&h.uuid));
}

#[test]
fn sigterm_stops_it_cleanly() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    h.ext.signal(Signal::SIGTERM);
    let st = h.ext.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(st.code(), Some(0), "log:\n{}", h.ext.log_text());
    assert!(!h.manager.ext_socket(h.uuid).exists(), "socket removed");
}

#[test]
fn exits_when_osquery_goes_away() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let gone = Instant::now();
    h.manager.kill();
    // osquery's default interval is 3 s: gone within two intervals
    let st = h.ext.wait_exit(Duration::from_secs(6)).expect("exited");
    assert_eq!(st.code(), Some(0), "log:\n{}", h.ext.log_text());
    assert!(gone.elapsed() < Duration::from_secs(6));
}

#[test]
fn survives_a_stale_socket_from_a_killed_run() {
    if !require_root() {
        return;
    }
    let manager = Manager::start();
    manager.set_next_uuid(4242);
    let stale = manager.ext_socket(4242);
    drop(UnixListener::bind(&stale).expect("stale socket"));
    assert!(stale.exists());
    let ext = Extension::spawn(&manager, &[]);
    let uuid = manager
        .wait_registered(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no registration:\n{}", ext.log_text()));
    assert_eq!(uuid, 4242);
    let mut c = ExtClient::connect(&stale, Duration::from_secs(10));
    assert_eq!(c.ping().expect("ping").code, Some(0));
    assert_eq!(c.columns(PROCESS_TABLE).len(), PROCESS_COLUMN_COUNT);
}

#[test]
fn refused_registration_exits_with_a_clear_message() {
    if !require_root() {
        return;
    }
    let manager = Manager::start();
    manager.refuse("Failed adding registry: table bpf_process_events_v2 conflicts with another item of the same name");
    let mut ext = Extension::spawn(&manager, &[]);
    let st = ext
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still running:\n{}", ext.log_text()));
    assert_eq!(st.code(), Some(2));
    let log = ext.log_text();
    assert!(log.contains("osquery refused the registration"), "{log}");
    assert!(
        log.contains("process_table"),
        "the message says how to rename: {log}"
    );
}

#[test]
fn no_osquery_socket_exits_after_the_timeout() {
    if !require_root() {
        return;
    }
    let manager = Manager::start();
    manager.kill(); // socket removed
    let mut ext = Extension::spawn_with_args(&manager, &[], &["--timeout", "1", "--interval", "3"]);
    let st = ext.wait_exit(Duration::from_secs(60)).expect("exited");
    assert_eq!(st.code(), Some(3));
    assert!(ext.log_text().contains("did not accept a connection"));
}

#[test]
fn alternative_table_names_are_served() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[("OSQUERY_EBPF_PROCESS_TABLE", "bpf_process_events")]);
    let registry = h.manager.registry(h.uuid).expect("registry");
    assert!(registry["table"].contains_key("bpf_process_events"));
    assert_eq!(
        h.client.columns("bpf_process_events").len(),
        PROCESS_COLUMN_COUNT
    );
}

#[test]
fn invalid_settings_fail_before_anything_starts() {
    // a value the settings check refuses, and one the flag parser refuses: both are invalid
    // settings (status 1, not clap's 2, which would read as a refused registration)
    for (key, value, named) in [
        ("OSQUERY_EBPF_ARGV_MAX", "0", "argv_max"),
        ("OSQUERY_EBPF_TRANSPORT", "carrier-pigeon", "carrier-pigeon"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_osquery-ebpf"))
            .args(["schema"])
            .env(key, value)
            .env("OSQUERY_EBPF_CONFIG", "/dev/null")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{key}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{key}={value}: {stderr}");
    }
}

#[test]
fn schema_prints_the_table_as_osquery_shows_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_osquery-ebpf"))
        .arg("schema")
        .env("OSQUERY_EBPF_CONFIG", "/dev/null")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(
            "CREATE TABLE bpf_process_events_v2(`tid` BIGINT, `pid` BIGINT, `parent` BIGINT"
        ),
        "{text}"
    );
}

#[test]
fn watch_streams_json_rows() {
    if !require_root() {
        return;
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_osquery-ebpf"));
    cmd.env("OSQUERY_EBPF_CONFIG", "/dev/null");
    let w = watch_with_marker(cmd, "watch-marker");
    assert!(w.status.success(), "{}", w.stderr);
    let row = w
        .row
        .unwrap_or_else(|| panic!("no marker row; log:\n{}", w.stderr));
    assert_eq!(row["table"], "bpf_process_events_v2");
    assert_eq!(row["syscall"], "execve");
    assert_eq!(row["path"], bin_true_path());
    assert!(
        w.stderr.contains("kernel_exec_dropped="),
        "counters shown: {}",
        w.stderr
    );
}

#[test]
fn stats_table_shows_every_counter() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[("OSQUERY_EBPF_RING_BUFFER_SIZE", "1048576")]);
    h.exec_true(&["stats-test"]); // its row is served, so it was received
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let _c = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    h.exec_true(&["stats-test-after-connect"]); // one ordered ring: the connect came first
    let s = stats(&mut h);
    for kind in ["exec", "fork", "exit", "socket"] {
        let (got, sent) = (
            s[&format!("{kind}_received")],
            s[&format!("kernel_{kind}_emitted")],
        );
        assert!(got > 0 && sent >= got, "{kind}: {s:?}");
    }
    assert_eq!(s["ring_buffer_size"], 1 << 20);
    assert!(s["probes_attached"] >= 20, "{s:?}");
    assert_eq!(s["probes_failed"], 0);
    assert!(s["rss_bytes"] > 0);
    assert_eq!(s["osquery_registrations"], 1);
    assert_eq!((s["requests_refused"], s["connections_refused"]), (0, 0));
    for name in [
        "kernel_exec_dropped",
        "kernel_socket_dropped",
        "queue_dropped",
        "decode_errors",
        "process_rows_buffered",
        "socket_rows_evicted_count",
        "cpu_user_ms",
    ] {
        assert!(s.contains_key(name), "{name} missing: {s:?}");
    }
    let rows = h.client.generate("osquery_ebpf_stats", "{}");
    assert!(rows.iter().all(|r| !r["description"].is_empty()));
}
