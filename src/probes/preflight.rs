//! What must hold before anything is loaded: privileges, kernel BTF, tracefs.

use std::path::Path;

use anyhow::{Context, Result};

use super::{startup_error, StartupKind};

/// Loading and attaching needs CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON (root has all).
pub fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(startup_error(
        StartupKind::Privileges,
        "osquery-ebpf needs root (or CAP_BPF and CAP_PERFMON) to load its BPF programs; \
         run it as root, as osqueryd does"
            .into(),
    ))
}

/// Classic `tp/` attachment finds tracepoint ids in tracefs, which is not always mounted
/// (only the tracepoint hook set needs it).
pub fn ensure_tracefs() -> Result<()> {
    let tracing = Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    tracing::info!("tracefs is not mounted; mounting it at /sys/kernel/tracing");
    nix::mount::mount(
        Some("tracefs"),
        tracing,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        startup_error(
            StartupKind::NoTracefs,
            format!(
                "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({e}); \
                 mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
            ),
        )
    })
}

/// A btf_path file must be raw BTF (as in /sys/kernel/btf/vmlinux or from BTFHub) or an ELF
/// file with a .BTF section (a vmlinux image), as libbpf accepts.
fn check_btf_file(btf: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    let read =
        std::fs::File::open(btf).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    if let Err(e) = read {
        return Err(startup_error(
            StartupKind::NoBtf,
            format!("btf_path: cannot read the BTF file {}: {e}", btf.display()),
        ));
    }
    let raw_btf = magic[..2] == 0xeb9f_u16.to_le_bytes() || magic[..2] == 0xeb9f_u16.to_be_bytes();
    if !raw_btf && magic != *b"\x7fELF" {
        return Err(startup_error(
            StartupKind::NoBtf,
            format!(
                "btf_path: {} is neither a BTF file nor an ELF image with BTF",
                btf.display()
            ),
        ));
    }
    Ok(())
}

/// An object builder whose CO-RE relocations use `btf_path`, or the kernel's own BTF.
pub fn object_builder(btf_path: Option<&Path>) -> Result<libbpf_rs::ObjectBuilder> {
    let mut builder = libbpf_rs::ObjectBuilder::default();
    if let Some(btf) = btf_path {
        check_btf_file(btf)?;
        builder
            .btf_custom_path(btf)
            .with_context(|| format!("using BTF file {}", btf.display()))?;
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(startup_error(
            StartupKind::NoBtf,
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); \
             pass a BTF file for it with --btf-path (see the README)"
                .into(),
        ));
    }
    Ok(builder)
}
