//! osquery's extension protocol: the Thrift types and clients generated from `osquery.thrift`,
//! a request reader with a size bound, and the extension's side of the service.

pub mod bounded;
pub mod serve;

#[allow(
    clippy::all,
    clippy::unwrap_used,
    unused_imports,
    unused_extern_crates,
    dead_code,
    non_camel_case_types
)]
#[rustfmt::skip]
pub mod osquery;
