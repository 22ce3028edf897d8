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
    /// The text of column `i` of `COLUMNS`; `time` and `eid` come from the store entry.
    fn cell(&self, i: usize) -> String;
}

fn num(v: impl itoa::Integer) -> String {
    itoa::Buffer::new().format(v).to_owned()
}

/// Where a cell's value comes from: the store entry, or the row itself.
#[derive(Debug, Clone, Copy)]
enum Source {
    Time,
    Eid,
    Row(usize),
}

/// Which columns of `R` a query asks for, in name order (the order of a row's map, so that
/// each row's map is built from sorted cells without a search per cell).
pub struct Layout<R> {
    cols: Vec<(&'static str, Source)>,
    row: std::marker::PhantomData<fn(&R)>,
}

impl<R: TableRow> Layout<R> {
    pub fn new(q: &Query) -> Self {
        let mut cols: Vec<(&'static str, Source)> = R::COLUMNS
            .iter()
            .enumerate()
            .filter(|(_, c)| q.uses(c.0))
            .map(|(i, c)| {
                let source = match c.0 {
                    "time" => Source::Time,
                    "eid" => Source::Eid,
                    _ => Source::Row(i),
                };
                (c.0, source)
            })
            .collect();
        cols.sort_by_key(|c| c.0);
        Layout {
            cols,
            row: std::marker::PhantomData,
        }
    }

    /// The cells of a stored row.
    pub fn cells(&self, e: &Entry<R>) -> BTreeMap<String, String> {
        self.cols
            .iter()
            .map(|&(name, source)| {
                let v = match source {
                    Source::Time => num(e.time),
                    Source::Eid => num(e.eid),
                    Source::Row(i) => e.row.cell(i),
                };
                (name.to_string(), v)
            })
            .collect()
    }
}

/// The cells of columns 0 to 9, which both tables share (tid to path).
fn base_cell(b: &RowBase, i: usize) -> String {
    match i {
        0 => num(b.tid),
        1 => num(b.pid),
        2 => num(b.parent),
        3 => num(b.uid),
        4 => num(b.gid),
        5 => num(b.cid),
        6 => num(b.exit_code),
        7 => num(u8::from(b.probe_error)),
        8 => b.syscall.name().to_string(),
        9 => b.path.to_string(),
        _ => String::new(),
    }
}

impl TableRow for ProcessRow {
    const COLUMNS: &'static [Column] = PROCESS_COLUMNS;

    fn pid(&self) -> u32 {
        self.base.pid
    }

    fn cell(&self, i: usize) -> String {
        match i {
            10 => self.cwd.to_string(),
            11 => cmdline(&self.args),
            12 => num(self.base.duration),
            13 => json_cmdline(&self.args),
            14 => num(self.base.ntime),
            _ => base_cell(&self.base, i),
        }
    }
}

impl TableRow for SocketRow {
    const COLUMNS: &'static [Column] = SOCKET_COLUMNS;

    fn pid(&self) -> u32 {
        self.base.pid
    }

    fn cell(&self, i: usize) -> String {
        match i {
            10 => num(self.fd),
            11 => num(self.family),
            12 => num(self.sock_type),
            13 => num(self.protocol),
            14 => endpoint_text(&self.local),
            15 => endpoint_text(&self.remote),
            16 => num(self.local.port()),
            17 => num(self.remote.port()),
            18 => num(self.base.duration),
            19 => num(self.base.ntime),
            _ => base_cell(&self.base, i),
        }
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
        let layout = Layout::new(q);
        selected.iter().map(|e| layout.cells(e)).collect()
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
                .map(|s| {
                    BTreeMap::from([
                        ("name".to_string(), s.name),
                        ("value".to_string(), s.value.to_string()),
                        ("description".to_string(), s.description),
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
    fn cells_are_named_by_their_columns_and_only_those_used() {
        use crate::event::Endpoint;
        let sock = SocketRow {
            base: row(7).base,
            fd: 3,
            family: 2,
            sock_type: 1,
            protocol: 6,
            local: Endpoint::Inet([127, 0, 0, 1].into(), 40000),
            remote: Endpoint::Inet([10, 0, 0, 2].into(), 443),
        };
        let e = Entry {
            eid: 11,
            time: 1_700_000_000,
            row: sock,
        };
        let all = Layout::<SocketRow>::new(&Query::default()).cells(&e);
        let want = [
            ("tid", "7"),
            ("pid", "7"),
            ("parent", "1"),
            ("uid", "0"),
            ("gid", "0"),
            ("cid", "9"),
            ("exit_code", "-2"),
            ("probe_error", "0"),
            ("syscall", "execve"),
            ("path", "/bin/x"),
            ("fd", "3"),
            ("family", "2"),
            ("type", "1"),
            ("protocol", "6"),
            ("local_address", "127.0.0.1"),
            ("remote_address", "10.0.0.2"),
            ("local_port", "40000"),
            ("remote_port", "443"),
            ("duration", "10"),
            ("ntime", "123"),
            ("time", "1700000000"),
            ("eid", "11"),
        ];
        assert_eq!(all.len(), SOCKET_COLUMNS.len());
        for (k, v) in want {
            assert_eq!(all[k], v, "column {k}");
        }
        let q = parse_context(r#"{"colsUsed":["remote_port","pid","eid"]}"#).expect("ctx");
        let some = Layout::<SocketRow>::new(&q).cells(&e);
        assert_eq!(
            some.into_iter().collect::<Vec<_>>(),
            [("eid", "11"), ("pid", "7"), ("remote_port", "443")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let p = Layout::<ProcessRow>::new(&Query::default()).cells(&Entry {
            eid: 1,
            time: 2,
            row: row(5),
        });
        assert_eq!((p["cwd"].as_str(), p["duration"].as_str()), ("/", "10"));
        assert_eq!(p["ntime"], "123");
    }

    #[test]
    fn a_panicking_body_becomes_an_error_status() {
        let req = ExtensionPluginRequest::new();
        let resp = guarded_generate("t", &req, |_| panic!("boom"));
        assert_eq!(resp.status.and_then(|s| s.code), Some(1));
    }
}
