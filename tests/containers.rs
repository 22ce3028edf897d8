//! Container attribution: a process placed in a container-named cgroup and in new pid, net
//! and mount namespaces (unshare) gets host ids in its rows, and its `cid` maps to the cgroup
//! path and container id in `bpf_process_containers_v2` and in `watch`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `sh` moves itself into `cgroup`, then runs `/bin/true MARKER` as pid 1 of new pid, net and
/// mount namespaces. Returns the pid of the unshare process (the marker's parent).
fn run_contained(cgroup: &std::path::Path, marker: &str) -> u32 {
    run_to_end(Command::new("/bin/sh").arg("-c").arg(format!(
        "echo 0 > {}/cgroup.procs && exec unshare --pid --net --mount --fork /bin/true {marker}",
        cgroup.display()
    )))
}

#[test]
fn container_rows_map_cid_to_cgroup_and_container() {
    if !require_root() {
        return;
    }
    let id = hex_id(1);
    let Some(cg) = TestCgroup::create(&format!("docker-{id}.scope")) else {
        return;
    };
    let cid = std::fs::metadata(&cg.inner).expect("stat cgroup").ino();
    let root = osquery_ebpf::filters::cgroup2_root().expect("cgroup2 root");
    let rel = format!(
        "/{}",
        cg.inner
            .strip_prefix(&root)
            .expect("under the root")
            .display()
    );

    let mut h = Harness::start(&[]);
    let unshare = run_contained(&cg.inner, "container-marker");

    // The exec row: host pid, the unshare process as parent, the container's cgroup.
    let ctx = context(PROCESS_COLUMNS, &[]);
    let start = Instant::now();
    let row = loop {
        let rows = h.client.generate(PROCESS_TABLE, &ctx);
        if let Some(r) = rows
            .into_iter()
            .find(|r| r["cmdline"] == "/bin/true container-marker" && r["syscall"] == "execve")
        {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no container-marker row"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(row["parent"], unshare.to_string(), "{row:?}");
    assert_ne!(row["pid"], "1", "pids are host pids, not the namespace's");
    assert_eq!(row["cid"], cid.to_string(), "{row:?}");
    assert_eq!(row["path"], bin_true_path());
    // the unshare process's own fork is in the same cgroup
    let forks = h.rows_for_pid(unshare, |r| {
        find(r, "clone").is_some() || find(r, "fork").is_some()
    });
    assert!(
        forks
            .iter()
            .any(|r| r["cid"] == cid.to_string() && r["exit_code"] == row["pid"]),
        "unshare's fork row: {forks:?}"
    );

    // The mapping table.
    let rows = h
        .client
        .generate(CONTAINERS_TABLE, &context(CONTAINERS_COLUMNS, &[]));
    let mapping = rows
        .iter()
        .find(|r| r["cid"] == cid.to_string())
        .unwrap_or_else(|| panic!("no row for cid {cid}: {rows:?}"));
    assert_eq!(mapping["cgroup_path"], rel);
    assert_eq!(mapping["container_id"], id);
    assert_eq!(mapping["container_runtime"], "docker");
    assert_eq!(mapping["pod_uid"], "");
    let (first, last): (u64, u64) = (
        mapping["first_seen"].parse().expect("first_seen"),
        mapping["last_seen"].parse().expect("last_seen"),
    );
    assert!(
        first <= last && last.abs_diff(unix_now()) < 60,
        "{mapping:?}"
    );
    // processes outside any container map to their cgroup with no container
    let (_, own) = h.exec_true(&["not-contained"]);
    let rows = h
        .client
        .generate(CONTAINERS_TABLE, &context(CONTAINERS_COLUMNS, &[]));
    let plain = rows
        .iter()
        .find(|r| r["cid"] == own["cid"])
        .expect("the test's own cgroup");
    assert_eq!(plain["container_id"], "");
    assert!(plain["cgroup_path"].starts_with('/'), "{plain:?}");
}

#[test]
fn watch_names_the_container() {
    if !require_root() {
        return;
    }
    let id = hex_id(2);
    let Some(cg) = TestCgroup::create(&format!("libpod-{id}.scope")) else {
        return;
    };
    let row = watch_exec_row(
        || {
            run_contained(&cg.inner, "watch-container-marker");
        },
        "/bin/true watch-container-marker",
    );
    assert_eq!(row["container_runtime"], "podman", "{row}");
    assert_eq!(row["container_id"], id.as_str(), "{row}");
    assert!(
        row["cgroup_path"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("/libpod-{id}.scope"))),
        "{row}"
    );
}

/// A container whose cgroup is removed right after its only process ran (as a `--rm`
/// container of one short command is, some tens of milliseconds after it exits) is still
/// mapped: its first exec record wakes the extension at once, which resolves the cgroup's
/// path while it exists (the extension otherwise collects records every 100 ms).
#[test]
fn a_container_removed_right_after_its_exec_is_mapped() {
    if !require_root() {
        return;
    }
    let id = hex_id(3);
    let Some(cg) = TestCgroup::create(&format!("docker-{id}.scope")) else {
        return;
    };
    let cid = std::fs::metadata(&cg.inner).expect("stat cgroup").ino();
    let mut h = Harness::start(&[]);
    run_to_end(Command::new("/bin/sh").arg("-c").arg(format!(
        "echo 0 > {}/cgroup.procs && exec /bin/true short-lived-marker",
        cg.inner.display()
    )));
    std::thread::sleep(Duration::from_millis(30));
    std::fs::remove_dir(&cg.inner).expect("remove the container's cgroup");
    let mapping = container_row(&mut h, &id);
    assert_eq!(mapping["cid"], cid.to_string(), "{mapping:?}");
    assert_eq!(
        (
            mapping["container_runtime"].as_str(),
            mapping["container_id"].as_str()
        ),
        ("docker", id.as_str()),
        "{mapping:?}"
    );
    assert!(
        mapping["cgroup_path"].ends_with(&format!("/docker-{id}.scope")),
        "{mapping:?}"
    );
}
