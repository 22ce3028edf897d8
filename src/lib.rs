//! osquery-ebpf: an osquery extension serving `bpf_process_events_v2` (and, with the socket
//! probes, `bpf_socket_events_v2`) from precompiled libbpf CO-RE probes.

#![warn(clippy::unwrap_used)]

pub mod skel {
    #![allow(
        clippy::all,
        clippy::unwrap_used,
        missing_docs,
        dead_code,
        unused_imports,
        non_camel_case_types
    )]
    include!(concat!(env!("OUT_DIR"), "/process.skel.rs"));
}

pub mod config;
pub mod constraints;
pub mod event;
pub mod extension;
pub mod format;
pub mod logging;
pub mod pipeline;
pub mod probes;
pub mod procctx;
pub mod runtime;
pub mod stats;
pub mod store;
pub mod tables;
pub mod watch;
