//! The osquery table plugins: schemas (identical to osquery 5.23's tables) and `generate`.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use osquery_rust_ng::plugin::{ColumnDef, ColumnOptions, ColumnType, ReadOnlyTable};
use osquery_rust_ng::{ExtensionPluginRequest, ExtensionResponse, ExtensionStatus};

use crate::constraints::{parse_context, Query};
use crate::containers::{CgroupInfo, Cgroups};
use crate::format::{cmdline, json_cmdline};
use crate::pipeline::{endpoint_text, unix_now, ProcessRow, RowBase, SocketRow};
use crate::store::{Entry, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Integer,
    BigInt,
}

impl Type {
    pub fn sql(self) -> &'static str {
        match self {
            Type::Text => "TEXT",
            Type::Integer => "INTEGER",
            Type::BigInt => "BIGINT",
        }
    }
}

/// Column option bits (osquery `column.h`).
pub const HIDDEN: u32 = 16;
pub const ADDITIONAL: u32 = 4;

/// name, type, options
pub type Column = (&'static str, Type, u32);

/// `bpf_socket_events` of osquery 5.23: 22 columns, in this order.
pub const SOCKET_COLUMNS: &[Column] = &[
    ("tid", Type::BigInt, 0),
    ("pid", Type::BigInt, 0),
    ("parent", Type::BigInt, 0),
    ("uid", Type::BigInt, 0),
    ("gid", Type::BigInt, 0),
    ("cid", Type::Integer, 0),
    ("exit_code", Type::Text, 0),
    ("probe_error", Type::Integer, 0),
    ("syscall", Type::Text, 0),
    ("path", Type::Text, 0),
    ("fd", Type::Text, 0),
    ("family", Type::Integer, 0),
    ("type", Type::Integer, 0),
    ("protocol", Type::Integer, 0),
    ("local_address", Type::Text, 0),
    ("remote_address", Type::Text, 0),
    ("local_port", Type::Integer, 0),
    ("remote_port", Type::Integer, 0),
    ("duration", Type::Integer, 0),
    ("ntime", Type::Text, 0),
    ("time", Type::BigInt, HIDDEN | ADDITIONAL),
    ("eid", Type::Integer, HIDDEN),
];

/// `bpf_process_events` of osquery 5.23: 17 columns, in this order.
pub const PROCESS_COLUMNS: &[Column] = &[
    ("tid", Type::BigInt, 0),
    ("pid", Type::BigInt, 0),
    ("parent", Type::BigInt, 0),
    ("uid", Type::BigInt, 0),
    ("gid", Type::BigInt, 0),
    ("cid", Type::Integer, 0),
    ("exit_code", Type::Text, 0),
    ("probe_error", Type::Integer, 0),
    ("syscall", Type::Text, 0),
    ("path", Type::Text, 0),
    ("cwd", Type::Text, 0),
    ("cmdline", Type::Text, 0),
    ("duration", Type::Integer, 0),
    ("json_cmdline", Type::Text, HIDDEN),
    ("ntime", Type::Text, 0),
    ("time", Type::BigInt, HIDDEN | ADDITIONAL),
    ("eid", Type::Integer, HIDDEN),
];

pub fn column_defs(columns: &[Column]) -> Vec<ColumnDef> {
    columns
        .iter()
        .map(|&(name, ty, op)| {
            let t = match ty {
                Type::Text => ColumnType::Text,
                Type::Integer => ColumnType::Integer,
                Type::BigInt => ColumnType::BigInt,
            };
            ColumnDef::new(name, t, ColumnOptions::from_bits_truncate(op))
        })
        .collect()
}

/// The table as osqueryi's `.schema` would show it.
pub fn create_statement(name: &str, columns: &[Column]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|&(n, ty, op)| {
            let mut c = format!("`{n}` {}", ty.sql());
            if op & HIDDEN != 0 {
                c.push_str(" HIDDEN");
            }
            c
        })
        .collect();
    format!("CREATE TABLE {name}({});", cols.join(", "))
}

/// A row type a table serves.
pub trait TableRow: Send + Sync + 'static {
    const COLUMNS: &'static [Column];
    fn pid(&self) -> u32;
    /// The cells of the columns `q` uses (time and eid are added from the store entry).
    fn cells(&self, q: &Query, put: &mut dyn FnMut(&str, String));
}

/// The cells of a stored row, for the columns `q` uses.
pub fn cells<R: TableRow>(e: &Entry<R>, q: &Query) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        if q.uses(k) {
            m.insert(k.to_string(), v);
        }
    };
    e.row.cells(q, &mut put);
    put("time", e.time.to_string());
    put("eid", e.eid.to_string());
    m
}

/// The cells both tables share.
fn base_cells(b: &RowBase, put: &mut dyn FnMut(&str, String)) {
    for (name, v) in ["tid", "pid", "parent", "uid", "gid"]
        .iter()
        .zip([b.tid, b.pid, b.parent, b.uid, b.gid])
    {
        put(name, v.to_string());
    }
    put("cid", b.cid.to_string());
    put("exit_code", b.exit_code.to_string());
    put("probe_error", u8::from(b.probe_error).to_string());
    put("syscall", b.syscall.name().to_string());
    put("path", b.path.to_string());
    put("duration", b.duration.to_string());
    put("ntime", b.ntime.to_string());
}

impl TableRow for ProcessRow {
    const COLUMNS: &'static [Column] = PROCESS_COLUMNS;

    fn pid(&self) -> u32 {
        self.base.pid
    }

    fn cells(&self, q: &Query, put: &mut dyn FnMut(&str, String)) {
        base_cells(&self.base, put);
        put("cwd", self.cwd.to_string());
        if q.uses("cmdline") {
            put("cmdline", cmdline(&self.args));
        }
        if q.uses("json_cmdline") {
            put("json_cmdline", json_cmdline(&self.args));
        }
    }
}

impl TableRow for SocketRow {
    const COLUMNS: &'static [Column] = SOCKET_COLUMNS;

    fn pid(&self) -> u32 {
        self.base.pid
    }

    fn cells(&self, _q: &Query, put: &mut dyn FnMut(&str, String)) {
        base_cells(&self.base, put);
        let r = self;
        put("fd", r.fd.to_string());
        put("family", r.family.to_string());
        put("type", r.sock_type.to_string());
        put("protocol", r.protocol.to_string());
        let (local_address, local_port) = endpoint_text(&r.local);
        let (remote_address, remote_port) = endpoint_text(&r.remote);
        put("local_address", local_address);
        put("remote_address", remote_address);
        put("local_port", local_port.to_string());
        put("remote_port", remote_port.to_string());
    }
}

fn failure(message: String) -> ExtensionResponse {
    tracing::warn!("generate failed: {message}");
    ExtensionResponse::new(ExtensionStatus::new(1, message, None), vec![])
}

/// An event table, answering from its store.
pub struct EventTable<R> {
    pub name: String,
    pub store: Arc<Store<R>>,
}

impl<R: TableRow> EventTable<R> {
    pub fn rows(&self, q: &Query) -> Vec<BTreeMap<String, String>> {
        let selected = self.store.select(unix_now(), |e| {
            q.time_matches(e.time) && q.pid_matches(e.row.pid())
        });
        selected.iter().map(|e| cells(e, q)).collect()
    }
}

/// Run a generate body so that a bad request or a bug becomes status 1, never a crash or a
/// dropped connection.
pub fn guarded_generate(
    table: &str,
    req: &ExtensionPluginRequest,
    body: impl FnOnce(&Query) -> Vec<BTreeMap<String, String>>,
) -> ExtensionResponse {
    let context = req.get("context").map(String::as_str).unwrap_or("");
    let query = match parse_context(context) {
        Ok(q) => q,
        Err(e) => return failure(format!("{table}: {e}")),
    };
    match catch_unwind(AssertUnwindSafe(|| body(&query))) {
        Ok(rows) => ExtensionResponse::new(ExtensionStatus::new(0, "OK".to_string(), None), rows),
        Err(_) => failure(format!("{table}: internal error while generating rows")),
    }
}

impl<R: TableRow> ReadOnlyTable for EventTable<R> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn columns(&self) -> Vec<ColumnDef> {
        column_defs(R::COLUMNS)
    }

    fn generate(&self, req: ExtensionPluginRequest) -> ExtensionResponse {
        guarded_generate(&self.name, &req, |q| self.rows(q))
    }

    fn shutdown(&self) {
        tracing::debug!(table = %self.name, "table shut down");
    }
}

/// `osquery_ebpf_stats`: every counter, one row each.
pub const STATS_TABLE: &str = "osquery_ebpf_stats";
pub const STATS_COLUMNS: &[Column] = &[
    ("name", Type::Text, 0),
    ("value", Type::BigInt, 0),
    ("description", Type::Text, 0),
];

pub struct StatsTable {
    pub runtime: Arc<crate::runtime::Runtime>,
}

impl ReadOnlyTable for StatsTable {
    fn name(&self) -> String {
        STATS_TABLE.to_string()
    }

    fn columns(&self) -> Vec<ColumnDef> {
        column_defs(STATS_COLUMNS)
    }

    fn generate(&self, req: ExtensionPluginRequest) -> ExtensionResponse {
        guarded_generate(STATS_TABLE, &req, |_| {
            self.runtime
                .stats()
                .into_iter()
                .map(|(name, value, description)| {
                    BTreeMap::from([
                        ("name".to_string(), name),
                        ("value".to_string(), value.to_string()),
                        ("description".to_string(), description),
                    ])
                })
                .collect()
        })
    }

    fn shutdown(&self) {}
}

/// `bpf_process_containers_v2`: the cgroups behind the events' `cid`, and the containers they
/// name.
pub const CONTAINERS_TABLE: &str = "bpf_process_containers_v2";
pub const CONTAINERS_COLUMNS: &[Column] = &[
    ("cid", Type::BigInt, 0),
    ("cgroup_path", Type::Text, 0),
    ("container_id", Type::Text, 0),
    ("container_runtime", Type::Text, 0),
    ("pod_uid", Type::Text, 0),
    ("first_seen", Type::BigInt, 0),
    ("last_seen", Type::BigInt, 0),
];

/// The cells of one `bpf_process_containers_v2` row.
pub fn container_cells(info: &CgroupInfo) -> BTreeMap<String, String> {
    let c = info.container.clone().unwrap_or_default();
    BTreeMap::from([
        ("cid".to_string(), info.id.to_string()),
        ("cgroup_path".to_string(), info.path.clone()),
        ("container_id".to_string(), c.id),
        ("container_runtime".to_string(), c.runtime.to_string()),
        ("pod_uid".to_string(), c.pod_uid),
        ("first_seen".to_string(), info.first_seen.to_string()),
        ("last_seen".to_string(), info.last_seen.to_string()),
    ])
}

pub struct ContainersTable {
    pub cgroups: Arc<Cgroups>,
}

impl ReadOnlyTable for ContainersTable {
    fn name(&self) -> String {
        CONTAINERS_TABLE.to_string()
    }

    fn columns(&self) -> Vec<ColumnDef> {
        column_defs(CONTAINERS_COLUMNS)
    }

    fn generate(&self, req: ExtensionPluginRequest) -> ExtensionResponse {
        guarded_generate(CONTAINERS_TABLE, &req, |_| {
            self.cgroups.all().iter().map(container_cells).collect()
        })
    }

    fn shutdown(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Syscall;

    fn row(pid: u32) -> ProcessRow {
        ProcessRow {
            base: RowBase {
                tid: pid,
                pid,
                parent: 1,
                uid: 0,
                gid: 0,
                cid: 9,
                exit_code: -2,
                probe_error: false,
                syscall: Syscall::Execve,
                path: "/bin/x".into(),
                duration: 10,
                ntime: 123,
            },
            cwd: "/".into(),
            args: vec!["x".to_string(), "a b".to_string()].into(),
        }
    }

    #[test]
    fn schema_matches_the_old_tables() {
        assert_eq!(PROCESS_COLUMNS.len(), 17);
        assert_eq!(SOCKET_COLUMNS.len(), 22);
        let sock = create_statement("bpf_socket_events", SOCKET_COLUMNS);
        assert!(sock.contains("`fd` TEXT, `family` INTEGER, `type` INTEGER, `protocol` INTEGER, `local_address` TEXT, `remote_address` TEXT, `local_port` INTEGER, `remote_port` INTEGER, `duration` INTEGER, `ntime` TEXT, `time` BIGINT HIDDEN, `eid` INTEGER HIDDEN);"));
        let stmt = create_statement("bpf_process_events", PROCESS_COLUMNS);
        assert!(stmt.starts_with("CREATE TABLE bpf_process_events(`tid` BIGINT, `pid` BIGINT"));
        assert!(stmt.contains("`json_cmdline` TEXT HIDDEN, `ntime` TEXT, `time` BIGINT HIDDEN, `eid` INTEGER HIDDEN);"));
    }

    #[test]
    fn generate_applies_constraints_and_reports_bad_requests() {
        let store = Arc::new(Store::new(100, 3600));
        let now = unix_now();
        store.push(now - 10, row(5), now);
        store.push(now, row(6), now);
        let t = EventTable {
            name: "bpf_process_events_v2".into(),
            store,
        };
        let mut req = ExtensionPluginRequest::new();
        req.insert("action".into(), "generate".into());
        req.insert(
            "context".into(),
            format!(
                r#"{{"constraints":[{{"name":"time","list":[{{"op":4,"expr":"{}"}}]}}]}}"#,
                now - 5
            ),
        );
        let resp = t.generate(req.clone());
        let rows = resp.response.expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["pid"], "6");
        assert_eq!(rows[0]["cmdline"], "x 'a b'");
        assert_eq!(rows[0]["json_cmdline"], r#"["x","a b"]"#);
        assert_eq!(rows[0]["exit_code"], "-2");
        assert_eq!(rows[0]["eid"], "2");
        assert_eq!(rows[0].len(), 17);

        req.insert("context".into(), "{not json".into());
        let resp = t.generate(req);
        let status = resp.status.expect("status");
        assert_eq!(status.code, Some(1));
        assert!(status
            .message
            .unwrap_or_default()
            .contains("not valid JSON"));
    }

    #[test]
    fn a_panicking_body_becomes_an_error_status() {
        let req = ExtensionPluginRequest::new();
        let resp = guarded_generate("t", &req, |_| panic!("boom"));
        assert_eq!(resp.status.and_then(|s| s.code), Some(1));
    }
}
