//! Compiles the CO-RE probes in bpf/ into libbpf-rs skeletons. Nothing is compiled at run time.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROBES: &[&str] = &["process", "socket", "feature"];
const HEADERS: &[&str] = &[
    "bpf/events.h",
    "bpf/common.bpf.h",
    "bpf/syscall.bpf.h",
    "vmlinux/vmlinux.h",
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    for header in HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
    for probe in PROBES {
        let src = format!("bpf/{probe}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let skel = out.join(format!("{probe}.skel.rs"));
        // -Werror: clang 14 only warns about an undeclared helper, which would otherwise surface
        // as a confusing link error; libbpf-cargo reports clang's stderr when it fails.
        if let Err(err) = SkeletonBuilder::new()
            .source(&src)
            .clang_args(["-Ivmlinux", "-Ibpf", "-Wall", "-Werror", "-O2", "-g"])
            .build_and_generate(&skel)
        {
            panic!("compiling {src} failed:\n{err:#}");
        }
    }
}
