//! Compiles the CO-RE probes in bpf/ into libbpf-rs skeletons, against the vmlinux.h of the
//! target architecture (vmlinux/<arch>/vmlinux.h). Nothing is compiled at run time.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROBES: &[&str] = &["process", "socket", "feature"];
const HEADERS: &[&str] = &["bpf/events.h", "bpf/common.bpf.h", "bpf/syscall.bpf.h"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    // libbpf-cargo sets -D__TARGET_ARCH_<arch> from the same variable
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64",
        Ok("aarch64") => "arm64",
        other => panic!("no vmlinux.h for target architecture {other:?} (see vmlinux/README.md)"),
    };
    let vmlinux_dir = format!("vmlinux/{arch}");
    println!("cargo:rerun-if-changed={vmlinux_dir}/vmlinux.h");
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
            .clang_args([
                format!("-I{vmlinux_dir}"),
                "-Ibpf".into(),
                "-Wall".into(),
                "-Werror".into(),
                "-O2".into(),
                "-g".into(),
            ])
            .build_and_generate(&skel)
        {
            panic!("compiling {src} failed:\n{err:#}");
        }
    }
}
