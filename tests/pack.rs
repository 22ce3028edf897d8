//! The query pack in packaging/ run against rows the extension really produced: the rows are
//! fetched over the extension protocol, loaded into SQLite tables with the schema the extension
//! prints, and every query of the pack must find what the workloads did.

mod common;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use common::*;

/// Load rows into a SQLite table created from the extension's own schema.
fn load(db: &rusqlite::Connection, create: &str, table: &str, rows: &[Row]) {
    db.execute_batch(&create.replace(" HIDDEN", ""))
        .expect("create table");
    for r in rows {
        let cols: Vec<&String> = r.keys().collect();
        let marks = vec!["?"; cols.len()].join(",");
        let names: Vec<String> = cols.iter().map(|c| format!("`{c}`")).collect();
        let sql = format!("INSERT INTO {table} ({}) VALUES ({marks})", names.join(","));
        let values: Vec<&String> = r.values().collect();
        db.execute(&sql, rusqlite::params_from_iter(values))
            .expect("insert");
    }
}

fn query(db: &rusqlite::Connection, sql: &str) -> Vec<BTreeMap<String, String>> {
    let mut st = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let names: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
    let rows = st
        .query_map([], |row| {
            let mut m = BTreeMap::new();
            for (i, n) in names.iter().enumerate() {
                let v: rusqlite::types::Value = row.get(i)?;
                let text = match v {
                    rusqlite::types::Value::Null => String::new(),
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Blob(_) => "<blob>".into(),
                };
                m.insert(n.clone(), text);
            }
            Ok(m)
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

#[test]
fn every_query_of_the_pack_finds_what_happened() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let me = std::process::id();

    // a listening socket, an outbound connection, and an accept by this process
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _accepted = listener.accept().expect("accept");

    // a program run from /tmp
    let dir = tempfile::Builder::new()
        .prefix("oe-pack")
        .tempdir_in("/tmp")
        .expect("tmp");
    let copy = dir.path().join("oe-true");
    std::fs::copy("/bin/true", &copy).expect("copy");
    let mut c = Command::new(&copy)
        .arg("from-tmp")
        .spawn()
        .expect("run copy");
    let tmp_pid = c.id();
    c.wait().expect("wait");

    // a shell started by a process that accepted a connection (this one)
    let mut sh = Command::new("/bin/sh")
        .args(["-c", "true"])
        .spawn()
        .expect("sh");
    let sh_pid = sh.id();
    sh.wait().expect("wait");

    // a process killed by a signal
    let mut victim = Command::new(workload())
        .args(["sleep", "60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sleep");
    let victim_pid = victim.id();
    std::thread::sleep(std::time::Duration::from_millis(200));
    victim.kill().expect("kill");
    victim.wait().expect("wait");

    for (pid, syscall) in [
        (tmp_pid, "execve"),
        (sh_pid, "execve"),
        (victim_pid, "signal"),
    ] {
        let rows = h.rows_for_pid(pid, |r| find(r, syscall).is_some());
        assert!(find(&rows, syscall).is_some(), "no {syscall} row for {pid}");
    }
    let sock_rows = h.poll_rows(SOCKET_TABLE, SOCKET_COLUMNS, me, |r| {
        r.iter().any(|x| x["syscall"] == "accept4")
    });
    assert!(!sock_rows.is_empty());

    // The schema as the extension prints it, and every row it serves.
    let schema = Command::new(env!("CARGO_BIN_EXE_osquery-ebpf"))
        .arg("schema")
        .env("OSQUERY_EBPF_CONFIG", "/dev/null")
        .output()
        .expect("schema");
    let schema = String::from_utf8_lossy(&schema.stdout).into_owned();
    let create = |t: &str| {
        schema
            .lines()
            .find(|l| l.starts_with(&format!("CREATE TABLE {t}(")))
            .unwrap_or_else(|| panic!("no schema for {t}"))
            .to_string()
    };
    let db = rusqlite::Connection::open_in_memory().expect("sqlite");
    let procs = h
        .client
        .generate(PROCESS_TABLE, &context(PROCESS_COLUMNS, &[]));
    let socks = h
        .client
        .generate(SOCKET_TABLE, &context(SOCKET_COLUMNS, &[]));
    load(&db, &create(PROCESS_TABLE), PROCESS_TABLE, &procs);
    load(&db, &create(SOCKET_TABLE), SOCKET_TABLE, &socks);
    db.execute_batch(&format!(
        "CREATE TABLE time(unix_time INTEGER); INSERT INTO time VALUES ({});",
        unix_now()
    ))
    .expect("time table");

    let pack: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/osquery-ebpf-pack.conf"
        ))
        .expect("pack"),
    )
    .expect("pack is JSON");
    let queries = pack["queries"].as_object().expect("queries");
    let run = |name: &str| {
        let sql = queries[name]["query"].as_str().expect("query text");
        query(&db, sql)
    };
    let me_s = me.to_string();
    let port_s = port.to_string();

    let listening = run("new_listening_sockets");
    assert!(
        listening
            .iter()
            .any(|r| r["local_port"] == port_s && r["pid"] == me_s),
        "{listening:?}"
    );
    let outbound = run("outbound_connections_by_binary");
    assert!(
        outbound
            .iter()
            .any(|r| r["remote_port"] == port_s && r["remote_address"] == "127.0.0.1"),
        "{outbound:?}"
    );
    let from_tmp = run("execs_from_tmp_or_shm");
    let copy_path = std::fs::canonicalize(&copy).expect("canon");
    assert!(
        from_tmp
            .iter()
            .any(|r| r["pid"] == tmp_pid.to_string() && r["path"] == copy_path.to_string_lossy()),
        "{from_tmp:?}"
    );
    let shells = run("shells_spawned_by_network_services");
    assert!(
        shells
            .iter()
            .any(|r| r["pid"] == sh_pid.to_string() && r["parent"] == me_s),
        "{shells:?}"
    );
    let killed = run("processes_killed_by_signals");
    assert!(
        killed
            .iter()
            .any(|r| r["pid"] == victim_pid.to_string() && r["signal"] == "9"),
        "{killed:?}"
    );
    assert_eq!(queries.len(), 5, "every query of the pack is covered above");
}
