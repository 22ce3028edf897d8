//! Container attribution: the cgroup behind each `cid`, and the container it names.
//!
//! Every row carries `cid`, the cgroup v2 id of the process at the event (what
//! bpf_get_current_cgroup_id() returns: the inode number of the cgroup's directory in the
//! cgroup v2 hierarchy, see [`cgroup2_root`]). The pipeline hands each new id to
//! [`Cgroups::observe`], which resolves it to its path at once (while the cgroup still exists)
//! with open_by_handle_at(2), and reads the container runtime and id from the path's naming
//! conventions. The `bpf_process_containers_v2` table and `watch` show the result.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::filters::cgroup2_root;

/// Cgroups remembered at once; the least recently seen go first.
pub const CGROUPS_MAX: usize = 4096;

/// A container named by a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    /// docker, containerd, cri-o, podman, lxc, systemd-nspawn.
    pub runtime: &'static str,
    /// The runtime's id of the container (64 hex digits for OCI runtimes; the name for lxc and
    /// systemd-nspawn).
    pub id: String,
    /// The Kubernetes pod uid, when the path names a pod.
    pub pod_uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupInfo {
    pub id: u64,
    /// Relative to the cgroup v2 root, starting with '/'; empty when the cgroup was gone
    /// before it could be resolved.
    pub path: String,
    pub container: Option<Container>,
    /// Unix seconds of the first and last event seen from this cgroup.
    pub first_seen: u64,
    pub last_seen: u64,
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `<prefix><64 hex>.scope` (the systemd cgroup manager's unit) or `<prefix><64 hex>` (the
/// cgroupfs manager's directory, e.g. podman's `/libpod_parent/libpod-<id>`) -> the id.
fn scope_id<'a>(component: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = component.strip_prefix(prefix)?;
    let id = rest.strip_suffix(".scope").unwrap_or(rest);
    is_hex_id(id).then_some(id)
}

/// The pod uid in a kubepods component: `pod<uid>` (cgroupfs driver) or
/// `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd driver).
fn pod_uid(component: &str) -> Option<String> {
    let raw = if let Some(rest) = component.strip_suffix(".slice") {
        rest.rsplit_once("-pod")?.1
    } else {
        component.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

/// The runtime and id one path component names; `parent` is the component above it.
fn component_container(c: &str, parent: &str, kube: bool) -> Option<(&'static str, String)> {
    for (prefix, runtime) in [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        // nerdctl with the systemd cgroup manager: "system.slice:nerdctl:<id>"
        ("nerdctl-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = scope_id(c, prefix) {
            return Some((runtime, id.to_string()));
        }
    }
    if is_hex_id(c) && parent == "docker" {
        return Some(("docker", c.to_string()));
    }
    if is_hex_id(c) && kube {
        // cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>
        return Some(("containerd", c.to_string()));
    }
    if let Some(name) = c.strip_prefix("lxc.payload.") {
        return Some(("lxc", name.to_string()));
    }
    if parent == "lxc" {
        return Some(("lxc", c.to_string()));
    }
    c.strip_prefix("systemd-nspawn@")
        .and_then(|r| r.strip_suffix(".service"))
        .map(|name| ("systemd-nspawn", name.to_string()))
}

/// The container a cgroup path names, by the runtimes' conventions (innermost match wins).
pub fn container_of(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let kube = parts.iter().any(|c| c.starts_with("kubepods"));
    let pod = parts.iter().find_map(|c| pod_uid(c)).unwrap_or_default();
    let named = parts.iter().enumerate().rev().find_map(|(i, c)| {
        let parent = if i > 0 { parts[i - 1] } else { "" };
        component_container(c, parent, kube)
    });
    // containerd's own default, `/<namespace>/<id>` (ctr, and nerdctl with cgroupfs), for its
    // default namespace; other namespaces cannot be told from any two-level cgroup
    let named = named.or_else(|| match parts[..] {
        ["default", id] => Some(("containerd", id.to_string())),
        _ => None,
    });
    named.map(|(runtime, id)| Container {
        runtime,
        id,
        pod_uid: pod,
    })
}

/// The cgroup v2 hierarchy, for resolving ids to paths.
struct Hierarchy {
    root: PathBuf,
    /// The root, open, when it is a cgroup2 mount (where ids are kernfs file handles).
    dir: Option<OwnedFd>,
}

/// Why open_by_handle_at gave no path.
enum HandleError {
    /// The cgroup no longer exists.
    Gone,
    /// The mechanism is unavailable here (no capability, no support).
    Unavailable,
}

/// `struct file_handle` with the 8-byte kernfs handle (the cgroup id).
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// `FILEID_KERNFS` (include/linux/exportfs.h).
const FILEID_KERNFS: i32 = 0xfe;

impl Hierarchy {
    fn open(root: &Path) -> Hierarchy {
        let cgroup2 = nix::sys::statfs::statfs(root)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        let dir = cgroup2
            .then(|| std::fs::File::open(root).ok().map(OwnedFd::from))
            .flatten();
        Hierarchy {
            root: root.to_path_buf(),
            dir,
        }
    }

    /// The path of cgroup `id`, relative to the root ("/" for the root itself).
    fn resolve(&self, id: u64) -> Option<String> {
        match self.by_handle(id) {
            Ok(path) => Some(path),
            Err(HandleError::Gone) => None,
            Err(HandleError::Unavailable) => self.by_walk(id),
        }
    }

    /// open_by_handle_at(2) with the id as a kernfs file handle: exact and O(1). Needs
    /// CAP_DAC_READ_SEARCH, which root has.
    fn by_handle(&self, id: u64) -> Result<String, HandleError> {
        let dir = self.dir.as_ref().ok_or(HandleError::Unavailable)?;
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a valid file_handle with handle_bytes of payload following the
        // header; the kernel only reads it. The returned fd, if any, is owned here.
        let fd = unsafe {
            libc::open_by_handle_at(
                dir.as_raw_fd(),
                (&mut handle as *mut KernfsHandle).cast::<libc::file_handle>(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(match errno {
                libc::ESTALE | libc::ENOENT => HandleError::Gone,
                _ => HandleError::Unavailable,
            });
        }
        // SAFETY: fd was just returned by the kernel and is not owned elsewhere.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .ok()
            .and_then(|target| self.relative(&target))
            .ok_or(HandleError::Gone)
    }

    /// Without open_by_handle_at (no CAP_DAC_READ_SEARCH, or not a cgroup2 mount): search the
    /// hierarchy for the directory with this inode.
    fn by_walk(&self, id: u64) -> Option<String> {
        let mut stack = vec![(self.root.clone(), 0usize)];
        let mut seen = 0usize;
        while let Some((dir, depth)) = stack.pop() {
            let meta = std::fs::metadata(&dir).ok()?;
            if meta.ino() == id {
                return self.relative(&dir);
            }
            seen += 1;
            if depth >= 32 || seen > 100_000 {
                continue;
            }
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        None
    }

    fn relative(&self, target: &Path) -> Option<String> {
        let rel = target.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rel.to_string_lossy()))
    }
}

/// The cgroups seen in events, bounded.
pub struct Cgroups {
    hierarchy: Hierarchy,
    known: Mutex<HashMap<u64, CgroupInfo>>,
    max: usize,
}

impl Cgroups {
    /// Resolving in the cgroup v2 hierarchy (paths stay empty when there is none).
    pub fn new() -> Cgroups {
        let root = cgroup2_root().unwrap_or_else(|| PathBuf::from("/nonexistent-cgroup2"));
        Cgroups::with_root(&root, CGROUPS_MAX)
    }

    pub fn with_root(root: &Path, max: usize) -> Cgroups {
        Cgroups {
            hierarchy: Hierarchy::open(root),
            known: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// Note events from cgroups `ids` at unix time `now`; new ids are resolved now.
    pub fn observe(&self, ids: &[u64], now: u64) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        for &id in ids {
            if let Some(info) = known.get_mut(&id) {
                info.last_seen = now;
                continue;
            }
            let path = self.hierarchy.resolve(id).unwrap_or_default();
            let container = container_of(&path);
            if known.len() >= self.max {
                if let Some(oldest) = known
                    .values()
                    .min_by_key(|i| (i.last_seen, i.first_seen))
                    .map(|i| i.id)
                {
                    known.remove(&oldest);
                }
            }
            known.insert(
                id,
                CgroupInfo {
                    id,
                    path,
                    container,
                    first_seen: now,
                    last_seen: now,
                },
            );
        }
    }

    pub fn get(&self, id: u64) -> Option<CgroupInfo> {
        self.known.lock().ok()?.get(&id).cloned()
    }

    /// Every remembered cgroup, by id.
    pub fn all(&self) -> Vec<CgroupInfo> {
        let mut v: Vec<CgroupInfo> = self
            .known
            .lock()
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|i| i.id);
        v
    }
}

impl Default for Cgroups {
    fn default() -> Self {
        Cgroups::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4c01db0b339c4e5f8ea0d3d1c4e1f8a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6";

    fn c(runtime: &'static str, id: &str, pod: &str) -> Option<Container> {
        Some(Container {
            runtime,
            id: id.into(),
            pod_uid: pod.into(),
        })
    }

    #[test]
    fn runtimes_are_recognised_by_their_cgroup_names() {
        let pod = "0f2e4b3a-1c5d-4e6f-8a9b-0c1d2e3f4a5b";
        let pod_ = pod.replace('-', "_");
        for (path, want) in [
            (format!("/system.slice/docker-{ID}.scope"), c("docker", ID, "")),
            (format!("/docker/{ID}"), c("docker", ID, "")),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_}.slice/cri-containerd-{ID}.scope"),
                c("containerd", ID, pod),
            ),
            (
                format!("/kubepods/besteffort/pod{pod}/{ID}"),
                c("containerd", ID, pod),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{pod_}.slice/crio-{ID}.scope"),
                c("cri-o", ID, pod),
            ),
            (format!("/machine.slice/libpod-{ID}.scope"), c("podman", ID, "")),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"),
                c("podman", ID, ""),
            ),
            // podman with the cgroupfs manager: no .scope
            (format!("/libpod_parent/libpod-{ID}"), c("podman", ID, "")),
            (format!("/libpod_parent/libpod-conmon-{ID}"), None),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
            // CRI-O with the kubelet's cgroupfs driver, and its conmon
            (
                format!("/kubepods/burstable/pod{pod}/crio-{ID}"),
                c("cri-o", ID, pod),
            ),
            (format!("/kubepods/burstable/pod{pod}/crio-conmon-{ID}"), None),
            // the kubelet's systemd driver with Docker (cri-dockerd)
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod_}.slice/docker-{ID}.scope"),
                c("docker", ID, pod),
            ),
            // the kubelet's cgroupfs driver, guaranteed QoS (no QoS level)
            (format!("/kubepods/pod{pod}/{ID}"), c("containerd", ID, pod)),
            // containerd alone: ctr and nerdctl (cgroupfs) in the default namespace, nerdctl
            // with systemd
            ("/default/web3".into(), c("containerd", "web3", "")),
            (format!("/default/{ID}"), c("containerd", ID, "")),
            (format!("/system.slice/nerdctl-{ID}.scope"), c("containerd", ID, "")),
            ("/other-namespace/web3".into(), None),
            ("/default".into(), None),
            ("/lxc.payload.web1".into(), c("lxc", "web1", "")),
            ("/lxc/web2/init.scope".into(), c("lxc", "web2", "")),
            (
                "/machine.slice/systemd-nspawn@debian.service/payload".into(),
                c("systemd-nspawn", "debian", ""),
            ),
            ("/system.slice/ssh.service".into(), None),
            ("/user.slice/user-1000.slice/session-3.scope".into(), None),
            ("/".into(), None),
            ("".into(), None),
            (format!("/system.slice/docker-{}.scope", &ID[..63]), None),
            ("/docker/not-an-id".into(), None),
        ] {
            assert_eq!(container_of(&path), want, "{path}");
        }
    }

    #[test]
    fn ids_resolve_to_paths_and_stay_bounded() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        let scope = root.join(format!("system.slice/docker-{ID}.scope"));
        std::fs::create_dir_all(&scope).expect("mkdir");
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        // a plain directory tree is not kernfs: this exercises the search by inode
        let cg = Cgroups::with_root(root, 2);
        cg.observe(&[ino(&scope), ino(root)], 100);
        let info = cg.get(ino(&scope)).expect("known");
        assert_eq!(info.path, format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(info.container, c("docker", ID, ""));
        assert_eq!(cg.get(ino(root)).expect("root").path, "/");
        cg.observe(&[ino(&scope)], 200);
        assert_eq!(cg.get(ino(&scope)).expect("known").last_seen, 200);
        // an id that is nowhere: remembered with an empty path; the bound evicts the
        // least recently seen (the root, seen at 100)
        cg.observe(&[u64::MAX], 300);
        assert_eq!(cg.get(u64::MAX).expect("unknown").path, "");
        assert!(cg.get(ino(root)).is_none());
        assert_eq!(cg.all().len(), 2);
    }

    #[test]
    fn the_own_cgroup_resolves_on_this_machine() {
        // "0::/path" on a cgroup v2 machine
        let Some(own) = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(String::from))
            })
        else {
            return;
        };
        let Some(root) = cgroup2_root() else {
            return;
        };
        let Ok(meta) = std::fs::metadata(format!("{}{own}", root.display())) else {
            return;
        };
        let cg = Cgroups::new();
        cg.observe(&[meta.ino()], 1);
        assert_eq!(cg.get(meta.ino()).expect("known").path, own);
    }
}
