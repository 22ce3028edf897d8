//! The query path with the real extension: a registration osquery forgets, pings while a big
//! `generate` is being written, requests too large to read, and osquery's own Python client.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use osquery_ebpf::protocol::osquery::ExtensionResponse;
use thrift::protocol::{TBinaryInputProtocol, TInputProtocol, TSerializable};

/// Fill the process table with the rows of `n` execs of /bin/true (clone, execve, exit each).
fn fill(h: &mut Harness, n: usize) -> usize {
    let st = Command::new("sh")
        .args([
            "-c",
            &format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"),
        ])
        .status()
        .expect("sh");
    assert!(st.success());
    let start = Instant::now();
    loop {
        let rows = stats(h).get("process_rows_buffered").copied().unwrap_or(0) as usize;
        if rows >= 2 * n || start.elapsed() > Duration::from_secs(30) {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn registers_again_when_osquery_forgets_it_and_serves_the_same_rows() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let (pid, row) = h.exec_true(&["forgotten-marker"]);
    h.manager.forget(h.uuid);
    let new = h
        .manager
        .wait_registered_again(h.uuid, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("not registered again within 10 s:\n{}", h.ext.log_text()));
    let mut c = ExtClient::connect(&h.manager.ext_socket(new), Duration::from_secs(5));
    let pid = pid.to_string();
    let rows = c.generate(
        PROCESS_TABLE,
        &context(PROCESS_COLUMNS, &[("pid", 2, pid.as_str())]),
    );
    assert!(
        rows.iter().any(|r| r == &row),
        "the same row, eid {}, under the new uuid: {rows:?}",
        row["eid"]
    );
    let registry = h.manager.registry(new).expect("registry");
    assert_eq!(registry["table"][PROCESS_TABLE].len(), PROCESS_COLUMN_COUNT);
    assert!(!h.manager.ext_socket(h.uuid).exists(), "old socket removed");
    assert_eq!(stats(&mut h)["osquery_registrations"], 2);
    let log = h.ext.log_text();
    assert_eq!(
        log.matches("osquery no longer lists this extension")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn a_refused_registration_after_osquery_forgot_it_exits_2() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    h.manager
        .refuse("Failed adding registry: the osquery core is shutting down");
    h.manager.forget(h.uuid);
    let st = h
        .ext
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running:\n{}", h.ext.log_text()));
    assert_eq!(st.code(), Some(2), "{}", h.ext.log_text());
    assert!(h
        .ext
        .log_text()
        .contains("osquery refused the registration"));
}

#[test]
fn pings_are_answered_while_a_full_store_generate_is_written() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let rows = fill(&mut h, 3000);
    assert!(rows >= 6000, "{rows} rows buffered");
    let socket = h.manager.ext_socket(h.uuid);
    // A caller that asks for every row and does not read yet: the reply (megabytes) fills the
    // socket's buffers and the extension's writer waits in the middle of it.
    let mut slow = UnixStream::connect(&socket).expect("connect");
    slow.write_all(&generate_request(PROCESS_TABLE, ""))
        .expect("request");
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let mut c = ExtClient::connect(&socket, Duration::from_secs(5));
        let t = Instant::now();
        assert_eq!(c.ping().expect("ping").code, Some(0));
        worst = worst.max(t.elapsed());
    }
    // (a ping takes well under a millisecond; the bound leaves room for a loaded machine and
    // still fails if pings waited for the blocked reply, which waits up to 30 s)
    assert!(worst < Duration::from_secs(1), "slowest ping {worst:?}");
    // the slow caller gets the whole reply, which the generated types decode
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut i = TBinaryInputProtocol::new(&mut slow, true);
    let msg = i.read_message_begin().expect("reply");
    assert_eq!(msg.name, "call");
    i.read_struct_begin().expect("result");
    assert_eq!(i.read_field_begin().expect("success").id, Some(0));
    let resp = ExtensionResponse::read_from_in_protocol(&mut i).expect("response");
    assert_eq!(resp.status.and_then(|s| s.code), Some(0));
    let got = resp.response.unwrap_or_default();
    assert!(got.len() >= rows, "{} rows of {rows}", got.len());
    assert!(
        got.iter().all(|r| r.len() == PROCESS_COLUMN_COUNT),
        "every column, the hidden ones too"
    );
}

#[test]
fn requests_announcing_more_than_the_bound_are_refused_before_they_are_read() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let pid = h.ext.child.id();
    let before = status_kib(pid, "VmRSS:");
    // Eight callers each announce a 1 GiB string and send 8 MiB of it.
    let mut head = generate_request(PROCESS_TABLE, "")[..16].to_vec();
    head.extend_from_slice(&[11, 0, 1]);
    head.extend_from_slice(&(1i32 << 30).to_be_bytes());
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let mut s = UnixStream::connect(h.manager.ext_socket(h.uuid)).expect("connect");
            let head = head.clone();
            std::thread::spawn(move || {
                let _ = s.write_all(&head);
                let chunk = vec![b'x'; 1 << 20];
                let mut sent = 0;
                for _ in 0..8 {
                    match s.write_all(&chunk) {
                        Ok(()) => sent += 1,
                        Err(_) => break, // closed by the extension
                    }
                }
                let mut rest = Vec::new();
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                // closed: the end of the stream, or a reset (the extension closed with our
                // bytes unread); not a timeout
                let closed = match s.read_to_end(&mut rest) {
                    Ok(_) => true,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                };
                (sent, closed)
            })
        })
        .collect();
    for t in senders {
        let (sent, closed) = t.join().expect("sender");
        assert!(closed, "the connection was closed");
        assert!(
            sent < 8,
            "the extension read all 8 MiB of a refused request"
        );
    }
    let after = status_kib(pid, "VmRSS:");
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    assert_eq!(h.client.ping().expect("still serving").code, Some(0));
    assert_eq!(stats(&mut h)["requests_refused"], 8);
}

/// osquery's own Python client (the PyPI package `osquery`, with its own generated Thrift
/// code) reads the rows the extension writes.
#[test]
fn osquerys_python_client_decodes_the_rows() {
    if !require_root() {
        return;
    }
    let probe = Command::new("python3")
        .args(["-c", "import osquery.extensions"])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "python3 with the PyPI package osquery is needed: bash packaging/install-build-deps.sh"
    );
    let mut h = Harness::start(&[]);
    let (pid, row) = h.exec_true(&["python-marker", "a b"]);
    let script = r#"
import json, sys
from osquery.extensions.ttypes import ExtensionStatus
from osquery.extensions import Extension
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport
sock = TSocket.TSocket(unix_socket=sys.argv[1])
transport = TTransport.TBufferedTransport(sock)
client = Extension.Client(TBinaryProtocol.TBinaryProtocol(transport))
transport.open()
ping = client.ping()
resp = client.call("table", sys.argv[2], {"action": "generate", "context": sys.argv[3]})
print(json.dumps({"ping": ping.code, "code": resp.status.code, "rows": resp.response}))
"#;
    let pid = pid.to_string();
    let out = stdout_of(
        Command::new("python3")
            .args(["-c", script])
            .arg(h.manager.ext_socket(h.uuid))
            .arg(PROCESS_TABLE)
            .arg(context(PROCESS_COLUMNS, &[("pid", 2, pid.as_str())])),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((v["ping"].as_i64(), v["code"].as_i64()), (Some(0), Some(0)));
    let rows: Vec<Row> = serde_json::from_value(v["rows"].clone()).expect("rows");
    assert!(rows.contains(&row), "{rows:?} lacks {row:?}");
}

#[test]
fn the_extension_socket_is_private_when_started_with_umask_0() {
    use std::os::unix::fs::PermissionsExt;
    if !require_root() {
        return;
    }
    // SAFETY: umask only changes this process's file-creation mask; the child inherits it.
    let old = unsafe { libc::umask(0) };
    let h = Harness::start(&[]);
    unsafe { libc::umask(old) };
    let path = h.manager.ext_socket(h.uuid);
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}
