//! The exclude_* settings: events to leave out, decided in the kernel before a record is
//! written to the ring buffer (see `excluded_task` and `muted` in bpf/common.bpf.h). What they
//! leave out is counted per kind (`kernel_*_filtered` in `osquery_ebpf_stats`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use crate::process_skel::types::exclude_bits;

/// `TASK_COMM_LEN` (`COMM_CAP` in bpf/events.h): a comm is at most 15 bytes and a NUL.
pub const COMM_CAP: usize = 16;
/// Bytes of an executable path that exclude_paths prefixes are matched against
/// (`PATH_PREFIX_CAP` in bpf/events.h).
pub const PATH_PREFIX_CAP: usize = 256;
/// Where cgroup v2 is mounted on a unified-hierarchy system; relative exclude_cgroups entries
/// are taken from the cgroup v2 root (see [`cgroup2_root`]).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup v2 hierarchy's mount point: /sys/fs/cgroup on unified systems, its `unified`
/// subdirectory on hybrid ones, else wherever /proc/self/mountinfo shows a cgroup2 mount.
/// `cid` values are ids in this hierarchy on every system (bpf_get_current_cgroup_id()).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts: Vec<PathBuf> = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map(|m| {
            m.into_iter()
                .filter(|m| m.fs_type == "cgroup2")
                .map(|m| m.mount_point)
                .collect()
        })
        .unwrap_or_default();
    for preferred in [CGROUP_ROOT, "/sys/fs/cgroup/unified"] {
        if let Some(m) = mounts.iter().find(|m| m.as_path() == Path::new(preferred)) {
            return Some(m.clone());
        }
    }
    mounts.into_iter().next()
}
/// Entries each exclude_* set can hold (`max_entries` of the filter maps).
pub const FILTER_ENTRIES_MAX: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Real uids whose events are left out.
    pub uids: Vec<u32>,
    /// Process names (comm, at most 15 bytes) whose events are left out.
    pub comms: Vec<String>,
    /// cgroups (paths relative to the cgroup v2 root, or absolute) whose processes, and those of their
    /// descendants, are left out.
    pub cgroups: Vec<PathBuf>,
    /// Prefixes of executable paths: the events of processes running a matching executable
    /// are left out (from their exec to their exit, children included until they exec).
    pub paths: Vec<String>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty()
            && self.comms.is_empty()
            && self.cgroups.is_empty()
            && self.paths.is_empty()
    }

    /// Check the lists; errors name the setting.
    pub fn check(&self) -> Result<()> {
        for (key, n) in [
            ("exclude_uids", self.uids.len()),
            ("exclude_comms", self.comms.len()),
            ("exclude_cgroups", self.cgroups.len()),
            ("exclude_paths", self.paths.len()),
        ] {
            if n > FILTER_ENTRIES_MAX {
                bail!("{key}: at most {FILTER_ENTRIES_MAX} entries, not {n}");
            }
        }
        for c in &self.comms {
            if c.is_empty() || c.len() >= COMM_CAP || c.contains('\0') {
                bail!(
                    "exclude_comms: {c:?} is not a process name (1 to {} bytes, as in /proc/PID/comm)",
                    COMM_CAP - 1
                );
            }
        }
        for p in &self.paths {
            if !p.starts_with('/') || p.len() > PATH_PREFIX_CAP || p.contains('\0') {
                bail!(
                    "exclude_paths: {p:?} is not an absolute path prefix of at most {PATH_PREFIX_CAP} bytes"
                );
            }
        }
        for c in &self.cgroups {
            cgroup_id(c)?;
        }
        Ok(())
    }

    /// The `enum exclude_bits` set for the probes' `filters` constant.
    pub fn bits(&self) -> u32 {
        let mut bits = 0;
        for (on, bit) in [
            (!self.uids.is_empty(), exclude_bits::EXCLUDE_UID),
            (!self.comms.is_empty(), exclude_bits::EXCLUDE_COMM),
            (!self.cgroups.is_empty(), exclude_bits::EXCLUDE_CGROUP),
            (!self.paths.is_empty(), exclude_bits::EXCLUDE_PATH),
        ] {
            if on {
                bits |= bit.0;
            }
        }
        bits
    }

    /// Whether an executable path matches exclude_paths, as the kernel decides it: a byte
    /// prefix of the path's first PATH_PREFIX_CAP bytes.
    pub fn path_excluded(&self, exe: &[u8]) -> bool {
        let exe = &exe[..exe.len().min(PATH_PREFIX_CAP)];
        self.paths.iter().any(|p| exe.starts_with(p.as_bytes()))
    }
}

/// The id of a cgroup v2 directory, as bpf_get_current_cgroup_id() and the `cid` column give
/// it: the inode number of its directory.
pub fn cgroup_id(path: &Path) -> Result<u64> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let root = cgroup2_root()
            .context("exclude_cgroups: no cgroup v2 hierarchy is mounted on this system")?;
        root.join(path)
    };
    let meta = std::fs::metadata(&full).with_context(|| {
        format!(
            "exclude_cgroups: {} is not a cgroup v2 directory",
            full.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("exclude_cgroups: {} is not a directory", full.display());
    }
    Ok(meta.ino())
}

/// The key of the filter_comms map: the name, NUL-padded.
pub fn comm_key(comm: &str) -> [u8; COMM_CAP] {
    let mut key = [0u8; COMM_CAP];
    let n = comm.len().min(COMM_CAP - 1);
    key[..n].copy_from_slice(&comm.as_bytes()[..n]);
    key
}

/// The key of the filter_paths LPM trie (`struct path_prefix_key`): the prefix length in
/// bits, then the bytes.
pub fn path_key(prefix: &str) -> Vec<u8> {
    let bytes = &prefix.as_bytes()[..prefix.len().min(PATH_PREFIX_CAP)];
    let mut key = Vec::with_capacity(4 + PATH_PREFIX_CAP);
    key.extend_from_slice(&((bytes.len() * 8) as u32).to_ne_bytes());
    key.extend_from_slice(bytes);
    key.resize(4 + PATH_PREFIX_CAP, 0);
    key
}

/// The filter maps of one loaded object set.
pub struct FilterMaps<'a> {
    pub uids: &'a dyn MapCore,
    pub comms: &'a dyn MapCore,
    pub cgroups: &'a dyn MapCore,
    pub paths: &'a dyn MapCore,
    pub muted: &'a dyn MapCore,
}

/// Fill the filter maps.
pub fn install(filters: &Filters, maps: &FilterMaps<'_>) -> Result<()> {
    let one = [1u8];
    for uid in &filters.uids {
        maps.uids
            .update(&uid.to_ne_bytes(), &one, MapFlags::ANY)
            .context("exclude_uids: filling the kernel map")?;
    }
    for comm in &filters.comms {
        maps.comms
            .update(&comm_key(comm), &one, MapFlags::ANY)
            .context("exclude_comms: filling the kernel map")?;
    }
    for cg in &filters.cgroups {
        maps.cgroups
            .update(&cgroup_id(cg)?.to_ne_bytes(), &one, MapFlags::ANY)
            .context("exclude_cgroups: filling the kernel map")?;
    }
    for p in &filters.paths {
        maps.paths
            .update(&path_key(p), &one, MapFlags::ANY)
            .context("exclude_paths: filling the kernel map")?;
    }
    Ok(())
}

/// Mute the processes already running an excluded executable (the probes mute those that
/// exec one from now on). Returns how many were muted.
pub fn seed_muted(filters: &Filters, muted: &dyn MapCore) -> usize {
    if filters.paths.is_empty() {
        return 0;
    }
    let Ok(procs) = procfs::process::all_processes() else {
        return 0;
    };
    let mut n = 0;
    for p in procs.flatten() {
        let Ok(exe) = p.exe() else { continue };
        if filters.path_excluded(exe.as_os_str().as_encoded_bytes())
            && muted
                .update(&(p.pid as u32).to_ne_bytes(), &[1u8], MapFlags::ANY)
                .is_ok()
        {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_setting() {
        for (f, key) in [
            (
                Filters {
                    comms: vec!["a-name-longer-than-15".into()],
                    ..Filters::default()
                },
                "exclude_comms",
            ),
            (
                Filters {
                    comms: vec![String::new()],
                    ..Filters::default()
                },
                "exclude_comms",
            ),
            (
                Filters {
                    paths: vec!["usr/bin".into()],
                    ..Filters::default()
                },
                "exclude_paths",
            ),
            (
                Filters {
                    paths: vec![format!("/{}", "a".repeat(300))],
                    ..Filters::default()
                },
                "exclude_paths",
            ),
            (
                Filters {
                    cgroups: vec!["no/such/cgroup-osquery-ebpf".into()],
                    ..Filters::default()
                },
                "exclude_cgroups",
            ),
            (
                Filters {
                    uids: vec![7; FILTER_ENTRIES_MAX + 1],
                    ..Filters::default()
                },
                "exclude_uids",
            ),
        ] {
            let err = format!("{:#}", f.check().expect_err(key));
            assert!(err.contains(key), "{err} should name {key}");
        }
        let ok = Filters {
            uids: vec![0],
            comms: vec!["sshd".into(), "a15-byte-name-x".into()],
            paths: vec!["/usr/lib/".into()],
            cgroups: vec![],
        };
        ok.check().expect("valid");
        assert!(Filters::default().is_empty() && !ok.is_empty());
        assert_eq!(Filters::default().bits(), 0);
        assert_eq!(
            ok.bits(),
            exclude_bits::EXCLUDE_UID.0
                | exclude_bits::EXCLUDE_COMM.0
                | exclude_bits::EXCLUDE_PATH.0
        );
    }

    #[test]
    fn keys_have_the_kernel_layout() {
        assert_eq!(&comm_key("sshd")[..5], b"sshd\0");
        assert_eq!(comm_key("sshd").len(), 16);
        let k = path_key("/tmp/");
        assert_eq!(k.len(), 4 + PATH_PREFIX_CAP);
        assert_eq!(u32::from_ne_bytes(k[..4].try_into().expect("test")), 40);
        assert_eq!(&k[4..9], b"/tmp/");
        assert!(k[9..].iter().all(|&b| b == 0));
        assert_eq!(
            std::mem::size_of::<crate::process_skel::types::path_prefix_key>(),
            k.len()
        );
    }

    #[test]
    fn path_prefixes_match_bytes_within_the_cap() {
        let f = Filters {
            paths: vec!["/usr/lib/".into(), "/opt/agent".into()],
            ..Filters::default()
        };
        assert!(f.path_excluded(b"/usr/lib/systemd/systemd-journald"));
        assert!(f.path_excluded(b"/opt/agent-2/bin/x"));
        assert!(!f.path_excluded(b"/usr/libexec/x"));
        assert!(!f.path_excluded(b"/usr/bin/true"));
        // the kernel sees only the first PATH_PREFIX_CAP bytes: so does this check
        let long = Filters {
            paths: vec![format!("/{}", "d".repeat(PATH_PREFIX_CAP - 1))],
            ..Filters::default()
        };
        let exe = format!("/{}/x", "d".repeat(PATH_PREFIX_CAP + 10));
        assert!(long.path_excluded(exe.as_bytes()));
    }

    #[test]
    fn cgroup_ids_are_directory_inodes() {
        let Some(root) = cgroup2_root() else {
            return; // no cgroup v2 here
        };
        assert!(root.join("cgroup.procs").exists(), "{}", root.display());
        let ino = std::fs::metadata(&root).expect("test").ino();
        assert_eq!(cgroup_id(&root).expect("test"), ino);
        assert_eq!(cgroup_id(Path::new("")).expect("test"), ino);
    }
}
