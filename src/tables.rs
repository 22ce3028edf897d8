//! The tables: each column declared once, with its type, options and the accessor that writes
//! its cell, and each table's `generate`, which writes the selected rows cell by cell into a
//! [`RowSink`] (the Thrift reply on the extension socket, or a collection for tests and
//! benchmarks). No row is built as a map of strings on the way.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use osquery_rust_ng::plugin::{ColumnOptions, ColumnType};

use crate::clock::unix_now;
use crate::constraints::Query;
use crate::containers::{CgroupInfo, Cgroups};
use crate::format::{write_cmdline, write_json_cmdline};
use crate::protocol::serve::ServeCounters;
use crate::rows::{write_endpoint, ProcessRow, RowBase, SocketRow};
use crate::stats::Stat;
use crate::store::{Entry, Store};

/// One column of a table of `R`s.
pub struct Column<R> {
    pub name: &'static str,
    pub ty: ColumnType,
    pub options: ColumnOptions,
    /// Appends the cell's text.
    pub write: fn(&R, &mut Vec<u8>),
}

fn column<R>(name: &'static str, ty: ColumnType, write: fn(&R, &mut Vec<u8>)) -> Column<R> {
    Column {
        name,
        ty,
        options: ColumnOptions::DEFAULT,
        write,
    }
}

fn hidden<R>(mut c: Column<R>) -> Column<R> {
    c.options |= ColumnOptions::HIDDEN;
    c
}

fn int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn text(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// A column as osquery's registry and `columns` see it.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: &'static str,
    pub ty: ColumnType,
    pub options: ColumnOptions,
}

pub fn specs<R>(columns: &[Column<R>]) -> Vec<Spec> {
    columns
        .iter()
        .map(|c| Spec {
            name: c.name,
            ty: c.ty.clone(),
            options: c.options.clone(),
        })
        .collect()
}

/// The table's routes, as registration and the `columns` action give them to osquery.
pub fn routes(specs: &[Spec]) -> Vec<BTreeMap<String, String>> {
    specs
        .iter()
        .map(|s| {
            BTreeMap::from([
                ("id".to_string(), "column".to_string()),
                ("name".to_string(), s.name.to_string()),
                ("type".to_string(), s.ty.to_string()),
                ("op".to_string(), s.options.bits().to_string()),
            ])
        })
        .collect()
}

/// The table as osqueryi's `.schema` would show it.
pub fn create_statement(name: &str, specs: &[Spec]) -> String {
    let cols: Vec<String> = specs
        .iter()
        .map(|s| {
            let hidden = if s.options.contains(ColumnOptions::HIDDEN) {
                " HIDDEN"
            } else {
                ""
            };
            format!("`{}` {}{hidden}", s.name, s.ty)
        })
        .collect();
    format!("CREATE TABLE {name}({});", cols.join(", "))
}

/// Where a table's rows go: their number first, then each row's cells.
pub trait RowSink {
    fn begin(&mut self, rows: usize) -> thrift::Result<()>;
    fn begin_row(&mut self, cells: usize) -> thrift::Result<()>;
    fn cell(&mut self, name: &str, value: &[u8]) -> thrift::Result<()>;
    fn end_row(&mut self) -> thrift::Result<()> {
        Ok(())
    }
    fn end(&mut self) -> thrift::Result<()> {
        Ok(())
    }
}

/// The columns of `columns` that the query uses, in name order: the order of the map a caller
/// decodes each row into (std::map in osquery, BTreeMap in Rust), which then only appends.
fn used<'c, R>(columns: &'c [Column<R>], q: &Query) -> Vec<&'c Column<R>> {
    let mut used: Vec<_> = columns.iter().filter(|c| q.uses(c.name)).collect();
    used.sort_by_key(|c| c.name);
    used
}

/// Write `rows`, each with the cells of `columns`, one reused buffer for every cell.
pub fn write_rows<'r, R: 'r>(
    columns: &[&Column<R>],
    rows: impl ExactSizeIterator<Item = &'r R>,
    out: &mut dyn RowSink,
) -> thrift::Result<()> {
    out.begin(rows.len())?;
    let mut cell = Vec::with_capacity(256);
    for row in rows {
        out.begin_row(columns.len())?;
        for c in columns {
            cell.clear();
            (c.write)(row, &mut cell);
            out.cell(c.name, &cell)?;
        }
        out.end_row()?;
    }
    out.end()
}

/// A row's cells as text, in column order (for `watch`).
pub fn cells<R>(columns: &[Column<R>], row: &R) -> Vec<(&'static str, String)> {
    let mut cell = Vec::new();
    columns
        .iter()
        .map(|c| {
            cell.clear();
            (c.write)(row, &mut cell);
            (c.name, String::from_utf8_lossy(&cell).into_owned())
        })
        .collect()
}

/// Rows collected as maps, as a Thrift client decodes them (tests, benchmarks).
#[derive(Debug, Default)]
pub struct Collect(pub Vec<BTreeMap<String, String>>);

impl RowSink for Collect {
    fn begin(&mut self, rows: usize) -> thrift::Result<()> {
        self.0.reserve(rows);
        Ok(())
    }
    fn begin_row(&mut self, _: usize) -> thrift::Result<()> {
        self.0.push(BTreeMap::new());
        Ok(())
    }
    fn cell(&mut self, name: &str, value: &[u8]) -> thrift::Result<()> {
        if let Some(row) = self.0.last_mut() {
            row.insert(
                name.to_string(),
                String::from_utf8_lossy(value).into_owned(),
            );
        }
        Ok(())
    }
}

/// A table served to osquery.
pub trait Table: Send + Sync {
    fn name(&self) -> &str;
    fn specs(&self) -> Vec<Spec>;
    /// Write the rows `q` selects. Fails only when the sink does.
    fn generate(&self, q: &Query, out: &mut dyn RowSink) -> thrift::Result<()>;
}

/// A row of an event table: the columns both tables share come from its [`RowBase`].
pub trait EventRow: Send + Sync + Sized + 'static {
    fn base(&self) -> &RowBase;
    fn columns() -> &'static [Column<Entry<Self>>];
}

/// An event table's columns: as osquery 5.23's tables have them, tid to path (shared), the
/// table's own, duration (shared), the table's own after it, then ntime, time and eid
/// (shared; time and eid are the store entry's); then this project's hidden columns: the
/// task's context (shared), then the table's own.
fn event_columns<R: EventRow>(
    own: Vec<Column<Entry<R>>>,
    after_duration: Vec<Column<Entry<R>>>,
    own_hidden: Vec<Column<Entry<R>>>,
) -> Vec<Column<Entry<R>>> {
    use ColumnType::{BigInt, Integer, Text};
    let mut c: Vec<Column<Entry<R>>> = vec![
        column("tid", BigInt, |e, o| int(o, e.row.base().tid)),
        column("pid", BigInt, |e, o| int(o, e.row.base().pid)),
        column("parent", BigInt, |e, o| int(o, e.row.base().parent)),
        column("uid", BigInt, |e, o| int(o, e.row.base().uid)),
        column("gid", BigInt, |e, o| int(o, e.row.base().gid)),
        column("cid", Integer, |e, o| int(o, e.row.base().cid)),
        column("exit_code", Text, |e, o| int(o, e.row.base().exit_code)),
        column("probe_error", Integer, |e, o| {
            int(o, u8::from(e.row.base().probe_error))
        }),
        column("syscall", Text, |e, o| text(o, e.row.base().syscall.name())),
        column("path", Text, |e, o| text(o, &e.row.base().path)),
    ];
    c.extend(own);
    c.push(column("duration", Integer, |e, o| {
        int(o, e.row.base().duration)
    }));
    c.extend(after_duration);
    c.push(column("ntime", Text, |e, o| int(o, e.row.base().ntime)));
    let mut time = hidden(column("time", BigInt, |e: &Entry<R>, o| int(o, e.time)));
    time.options |= ColumnOptions::ADDITIONAL;
    c.push(time);
    c.push(hidden(column("eid", Integer, |e: &Entry<R>, o| {
        int(o, e.eid)
    })));
    c.extend(
        [
            column("euid", BigInt, |e: &Entry<R>, o| {
                int(o, e.row.base().task.euid)
            }),
            column("egid", BigInt, |e, o| int(o, e.row.base().task.egid)),
            column("auid", BigInt, |e, o| int(o, e.row.base().task.auid)),
            column("sid", BigInt, |e, o| int(o, e.row.base().task.sid)),
            column("tty", Text, |e, o| text(o, &e.row.base().task.tty)),
            column("start_time", BigInt, |e, o| {
                int(o, e.row.base().task.start_time)
            }),
        ]
        .map(hidden),
    );
    c.extend(own_hidden.into_iter().map(hidden));
    c
}

/// `bpf_process_events` of osquery 5.23: 17 columns, in this order; then 11 hidden ones.
pub static PROCESS_COLUMNS: LazyLock<Vec<Column<Entry<ProcessRow>>>> = LazyLock::new(|| {
    use ColumnType::{Integer, Text};
    event_columns(
        vec![
            column("cwd", Text, |e, o| text(o, &e.row.cwd)),
            column("cmdline", Text, |e, o| write_cmdline(o, &e.row.args)),
        ],
        vec![hidden(column("json_cmdline", Text, |e, o| {
            write_json_cmdline(o, &e.row.args)
        }))],
        vec![
            column("parent_path", Text, |e, o| text(o, &e.row.parent_path)),
            column("parent_cmdline", Text, |e, o| {
                write_cmdline(o, &e.row.parent_args)
            }),
            column("exe_memfd", Integer, |e, o| {
                int(o, u8::from(e.row.exe_memfd))
            }),
            column("exe_deleted", Integer, |e, o| {
                int(o, u8::from(e.row.exe_deleted))
            }),
            column("exe_upper_layer", Integer, |e, o| {
                int(o, u8::from(e.row.exe_upper_layer))
            }),
        ],
    )
});

/// `bpf_socket_events` of osquery 5.23: 22 columns, in this order; then 8 hidden ones.
pub static SOCKET_COLUMNS: LazyLock<Vec<Column<Entry<SocketRow>>>> = LazyLock::new(|| {
    use ColumnType::{BigInt, Integer, Text};
    event_columns(
        vec![
            column("fd", Text, |e, o| int(o, e.row.fd)),
            column("family", Integer, |e, o| int(o, e.row.family)),
            column("type", Integer, |e, o| int(o, e.row.sock_type)),
            column("protocol", Integer, |e, o| int(o, e.row.protocol)),
            column("local_address", Text, |e, o| {
                write_endpoint(o, &e.row.local)
            }),
            column("remote_address", Text, |e, o| {
                write_endpoint(o, &e.row.remote)
            }),
            column("local_port", Integer, |e, o| int(o, e.row.local.port())),
            column("remote_port", Integer, |e, o| int(o, e.row.remote.port())),
        ],
        vec![],
        vec![
            column("netns", BigInt, |e, o| int(o, e.row.netns)),
            column("via_io_uring", Integer, |e, o| {
                int(o, u8::from(e.row.via_io_uring))
            }),
        ],
    )
});

impl EventRow for ProcessRow {
    fn base(&self) -> &RowBase {
        &self.base
    }
    fn columns() -> &'static [Column<Entry<Self>>] {
        &PROCESS_COLUMNS
    }
}

impl EventRow for SocketRow {
    fn base(&self) -> &RowBase {
        &self.base
    }
    fn columns() -> &'static [Column<Entry<Self>>] {
        &SOCKET_COLUMNS
    }
}

/// An event table, answering from its store.
pub struct EventTable<R> {
    pub name: String,
    pub store: Arc<Store<R>>,
}

impl<R: EventRow> Table for EventTable<R> {
    fn name(&self) -> &str {
        &self.name
    }

    fn specs(&self) -> Vec<Spec> {
        specs(R::columns())
    }

    fn generate(&self, q: &Query, out: &mut dyn RowSink) -> thrift::Result<()> {
        // the store's lock is held only to select (clone handles); the rows are written after
        let rows = self.store.select(unix_now(), |e| {
            q.time_matches(e.time) && q.pid_matches(e.row.base().pid)
        });
        write_rows(&used(R::columns(), q), rows.iter().map(|e| &**e), out)
    }
}

/// `osquery_ebpf_stats`: every counter, one row each.
pub const STATS_TABLE: &str = "osquery_ebpf_stats";

pub static STATS_COLUMNS: LazyLock<Vec<Column<Stat>>> = LazyLock::new(|| {
    use ColumnType::{BigInt, Text};
    vec![
        column("name", Text, |s: &Stat, o| text(o, &s.name)),
        column("value", BigInt, |s, o| int(o, s.value)),
        column("description", Text, |s, o| text(o, &s.description)),
    ]
});

pub struct StatsTable {
    pub runtime: Arc<crate::runtime::Runtime>,
    pub serving: Arc<ServeCounters>,
}

impl Table for StatsTable {
    fn name(&self) -> &str {
        STATS_TABLE
    }

    fn specs(&self) -> Vec<Spec> {
        specs(&STATS_COLUMNS)
    }

    fn generate(&self, q: &Query, out: &mut dyn RowSink) -> thrift::Result<()> {
        let mut stats = self.runtime.stats();
        stats.extend(self.serving.stats());
        write_rows(&used(&STATS_COLUMNS, q), stats.iter(), out)
    }
}

/// `bpf_process_containers_v2`: the cgroups behind the events' `cid`, and the containers they
/// name.
pub const CONTAINERS_TABLE: &str = "bpf_process_containers_v2";

pub static CONTAINERS_COLUMNS: LazyLock<Vec<Column<CgroupInfo>>> = LazyLock::new(|| {
    use ColumnType::{BigInt, Text};
    vec![
        column("cid", BigInt, |c: &CgroupInfo, o| int(o, c.id)),
        column("cgroup_path", Text, |c, o| text(o, &c.path)),
        column("container_id", Text, |c, o| {
            text(o, c.container.as_ref().map_or("", |k| k.id.as_str()))
        }),
        column("container_runtime", Text, |c, o| {
            text(o, c.container.as_ref().map_or("", |k| k.runtime))
        }),
        column("pod_uid", Text, |c, o| {
            text(o, c.container.as_ref().map_or("", |k| k.pod_uid.as_str()))
        }),
        column("first_seen", BigInt, |c, o| int(o, c.first_seen)),
        column("last_seen", BigInt, |c, o| int(o, c.last_seen)),
    ]
});

pub struct ContainersTable {
    pub cgroups: Arc<Cgroups>,
}

impl Table for ContainersTable {
    fn name(&self) -> &str {
        CONTAINERS_TABLE
    }

    fn specs(&self) -> Vec<Spec> {
        specs(&CONTAINERS_COLUMNS)
    }

    fn generate(&self, q: &Query, out: &mut dyn RowSink) -> thrift::Result<()> {
        let all = self.cgroups.all();
        write_rows(&used(&CONTAINERS_COLUMNS, q), all.iter(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraints::parse_context;
    use crate::event::{Endpoint, Syscall};

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
                task: Default::default(),
            },
            cwd: "/".into(),
            args: vec!["x".to_string(), "a b".to_string()].into(),
            parent_path: "/sbin/init".into(),
            parent_args: vec!["init".to_string()].into(),
            exe_memfd: false,
            exe_deleted: false,
            exe_upper_layer: false,
        }
    }

    fn generate(t: &dyn Table, context: &str) -> Vec<BTreeMap<String, String>> {
        let mut out = Collect::default();
        t.generate(&parse_context(context).expect("context"), &mut out)
            .expect("generate");
        out.0
    }

    #[test]
    fn schema_matches_the_old_tables_and_every_addition_is_hidden() {
        // the old tables' 17 and 22 columns first, then this project's, all hidden
        assert_eq!(PROCESS_COLUMNS.len(), 17 + 11);
        assert_eq!(SOCKET_COLUMNS.len(), 22 + 8);
        let added = specs(&PROCESS_COLUMNS[17..])
            .into_iter()
            .chain(specs(&SOCKET_COLUMNS[22..]));
        for c in added {
            assert!(c.options.contains(ColumnOptions::HIDDEN), "{}", c.name);
        }
        let sock = create_statement("bpf_socket_events", &specs(&SOCKET_COLUMNS));
        assert!(sock.starts_with("CREATE TABLE bpf_socket_events(`tid` BIGINT, `pid` BIGINT, `parent` BIGINT, `uid` BIGINT, `gid` BIGINT, `cid` INTEGER, `exit_code` TEXT, `probe_error` INTEGER, `syscall` TEXT, `path` TEXT, "));
        assert!(sock.contains("`fd` TEXT, `family` INTEGER, `type` INTEGER, `protocol` INTEGER, `local_address` TEXT, `remote_address` TEXT, `local_port` INTEGER, `remote_port` INTEGER, `duration` INTEGER, `ntime` TEXT, `time` BIGINT HIDDEN, `eid` INTEGER HIDDEN, `euid` BIGINT HIDDEN, `egid` BIGINT HIDDEN, `auid` BIGINT HIDDEN, `sid` BIGINT HIDDEN, `tty` TEXT HIDDEN, `start_time` BIGINT HIDDEN, `netns` BIGINT HIDDEN, `via_io_uring` INTEGER HIDDEN);"));
        let stmt = create_statement("bpf_process_events", &specs(&PROCESS_COLUMNS));
        assert!(stmt.starts_with("CREATE TABLE bpf_process_events(`tid` BIGINT, `pid` BIGINT"));
        assert!(stmt.contains("`path` TEXT, `cwd` TEXT, `cmdline` TEXT, `duration` INTEGER, `json_cmdline` TEXT HIDDEN, `ntime` TEXT, `time` BIGINT HIDDEN, `eid` INTEGER HIDDEN, `euid` BIGINT HIDDEN, "));
        assert!(stmt.ends_with("`start_time` BIGINT HIDDEN, `parent_path` TEXT HIDDEN, `parent_cmdline` TEXT HIDDEN, `exe_memfd` INTEGER HIDDEN, `exe_deleted` INTEGER HIDDEN, `exe_upper_layer` INTEGER HIDDEN);"));
        // time is HIDDEN | ADDITIONAL (20), eid HIDDEN (16), as osquery 5.23 declares them
        let r = routes(&specs(&PROCESS_COLUMNS));
        let op = |n: &str| r.iter().find(|c| c["name"] == n).map(|c| c["op"].clone());
        assert_eq!(
            (op("time"), op("eid"), op("pid")),
            (Some("20".into()), Some("16".into()), Some("0".into()))
        );
    }

    #[test]
    fn generate_applies_constraints() {
        let store = Arc::new(Store::new(100, 3600));
        let now = unix_now();
        store.push(now - 10, row(5), now);
        store.push(now, row(6), now);
        let t = EventTable {
            name: "bpf_process_events_v2".into(),
            store,
        };
        let rows = generate(
            &t,
            &format!(
                r#"{{"constraints":[{{"name":"time","list":[{{"op":4,"expr":"{}"}}]}}]}}"#,
                now - 5
            ),
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["pid"], "6");
        assert_eq!(rows[0]["cmdline"], "x 'a b'");
        assert_eq!(rows[0]["json_cmdline"], r#"["x","a b"]"#);
        assert_eq!(rows[0]["exit_code"], "-2");
        assert_eq!(rows[0]["eid"], "2");
        assert_eq!(rows[0].len(), 17 + 11);
        assert_eq!(rows[0]["parent_cmdline"], "init");
        let rows = generate(
            &t,
            r#"{"constraints":[{"name":"pid","list":[{"op":2,"expr":"5"}]}]}"#,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["eid"], "1");
    }

    #[test]
    fn cells_are_named_by_their_columns_and_only_those_used() {
        let sock = SocketRow {
            base: row(7).base,
            fd: 3,
            family: 2,
            sock_type: 1,
            protocol: 6,
            local: Endpoint::Inet([127, 0, 0, 1].into(), 40000),
            remote: Endpoint::Inet([10, 0, 0, 2].into(), 443),
            netns: 7,
            via_io_uring: false,
        };
        let store = Arc::new(Store::new(10, 3600));
        store.push(unix_now(), sock, unix_now());
        let t = EventTable {
            name: "s".into(),
            store,
        };
        let all = generate(&t, "");
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
            ("eid", "1"),
        ];
        assert_eq!(all[0].len(), SOCKET_COLUMNS.len());
        for (k, v) in want {
            assert_eq!(all[0][k], v, "column {k}");
        }
        let some = generate(&t, r#"{"colsUsed":["remote_port","pid","eid"]}"#);
        assert_eq!(
            some[0].clone().into_iter().collect::<Vec<_>>(),
            [("eid", "1"), ("pid", "7"), ("remote_port", "443")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
