//! The perf-buffer transport (for kernels without the BPF ring buffer), forced on this kernel:
//! the same rows, through the same pipeline, with the same loss accounting.

mod common;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use common::*;

#[test]
fn the_perf_buffer_transport_delivers_the_same_rows() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[("OSQUERY_EBPF_TRANSPORT", "perf")]);
    let (pid, exec) = h.exec_true(&["perf-transport", "two words"]);
    assert_eq!(exec["cmdline"], "/bin/true perf-transport 'two words'");
    assert_eq!(exec["path"], bin_true_path());
    assert_eq!(exec["parent"], std::process::id().to_string());
    let rows = h.rows_for_pid(pid, |r| find(r, "exit_group").is_some());
    assert_eq!(
        find(&rows, "exit_group").expect("exit row")["exit_code"],
        "0"
    );

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let me = std::process::id();
    let rows = h.poll_rows(SOCKET_TABLE, SOCKET_COLUMNS, me, |rows| {
        rows.iter()
            .any(|r| r["syscall"] == "connect" && r["fd"] == client.as_raw_fd().to_string())
    });
    let connect = rows
        .iter()
        .find(|r| r["syscall"] == "connect" && r["fd"] == client.as_raw_fd().to_string())
        .unwrap_or_else(|| panic!("no connect row: {rows:?}"));
    assert_eq!(connect["remote_port"], port.to_string());
    assert_eq!(connect["remote_address"], "127.0.0.1");
    assert_eq!(connect["exit_code"], "0");

    let s = stats(&mut h);
    assert_eq!(s["transport_perf_buffer"], 1, "{s:?}");
    assert_eq!(s["probes_failed"], 0, "{s:?}");
    assert_eq!(
        s["kernel_exec_dropped"] + s["kernel_socket_dropped"] + s["perf_lost"],
        0
    );
    assert!(s["kernel_exec_emitted"] >= s["exec_received"] && s["exec_received"] > 0);
}

#[test]
fn the_ring_buffer_is_the_default_on_this_kernel() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    h.exec_true(&["ring-transport"]);
    assert_eq!(stats(&mut h)["transport_perf_buffer"], 0);
}
