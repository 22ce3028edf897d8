//! Where a `generate` of a full store goes: building the rows' cells, Thrift-encoding the
//! response, and decoding it as osqueryd would. In process, no root needed.
//!
//!     cargo bench --bench generate -- [--rows 50000]

use std::sync::Arc;
use std::time::Instant;

use osquery_ebpf::constraints::parse_context;
use osquery_ebpf::event::Syscall;
use osquery_ebpf::pipeline::{unix_now, ProcessRow, RowBase};
use osquery_ebpf::store::Store;
use osquery_ebpf::tables::EventTable;
use osquery_rust_ng::{ExtensionResponse, ExtensionStatus};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol, TSerializable};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let now = unix_now();
    let store = Arc::new(Store::new(rows, 3600));
    let path: Arc<str> = "/usr/bin/true".into();
    let cwd: Arc<str> = "/work/main".into();
    for i in 0..rows as u32 {
        let row = ProcessRow {
            base: RowBase {
                tid: 100_000 + i,
                pid: 100_000 + i,
                parent: 4242,
                uid: 0,
                gid: 0,
                cid: 1,
                exit_code: 0,
                probe_error: false,
                syscall: Syscall::Execve,
                path: path.clone(),
                duration: 123_456,
                ntime: 1_000_000_000_000 + u64::from(i),
            },
            cwd: cwd.clone(),
            args: vec!["/bin/true".to_string(), format!("storm4242-0-{i}")].into(),
        };
        store.push(now, row, now);
    }
    let table = EventTable {
        name: "bpf_process_events_v2".into(),
        store,
    };
    let q = parse_context("").expect("context");
    let (mut build, mut encode, mut free, mut decode) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let cells = table.rows(&q);
        build.push(t.elapsed().as_secs_f64() * 1e3);
        let resp = ExtensionResponse::new(
            ExtensionStatus::new(0, "OK".to_string(), None::<i64>),
            cells,
        );
        let t = Instant::now();
        let mut buf = Vec::new();
        resp.write_to_out_protocol(&mut TBinaryOutputProtocol::new(&mut buf, true))
            .expect("encode");
        encode.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        drop(resp);
        free.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let back = ExtensionResponse::read_from_in_protocol(&mut TBinaryInputProtocol::new(
            &mut buf.as_slice(),
            true,
        ))
        .expect("decode");
        assert_eq!(back.response.map(|r| r.len()), Some(rows));
        decode.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "generate of {rows} process rows, all columns (median of 5): build {:.1} ms, encode {:.1} ms, free {:.1} ms, decode {:.1} ms",
        med(&mut build),
        med(&mut encode),
        med(&mut free),
        med(&mut decode)
    );
}
