//! Overload: a stalled consumer while a storm runs. The kernel side never blocks, losses are
//! counted per kind and shown, the extension keeps answering, and capture resumes.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn stats(h: &mut Harness) -> BTreeMap<String, u64> {
    h.client
        .generate("osquery_ebpf_stats", "{}")
        .into_iter()
        .map(|r| (r["name"].clone(), r["value"].parse().unwrap_or(0)))
        .collect()
}

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
    std::fs::remove_file(&pause).expect("unpause");
    let start = Instant::now();
    loop {
        let s = stats(&mut h);
        if s["exec_received"] == s["kernel_exec_emitted"] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the ring was not drained: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = Command::new("/bin/true")
        .arg("after-the-stall")
        .spawn()
        .expect("spawn");
    let pid = c.id();
    c.wait().expect("wait");
    let rows = h.rows_for_pid(pid, |r| find(r, "execve").is_some());
    assert!(
        find(&rows, "execve").is_some(),
        "capture resumed: {:?}\n{}",
        stats(&mut h),
        h.ext.log_text()
    );
    let s = stats(&mut h);
    assert_eq!(s["exec_received"], s["kernel_exec_emitted"], "{s:?}");

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
