//! Real containers: Docker (dockerd, its containerd and runc), Podman (conmon and runc) and
//! containerd alone (ctr and runc), each started here in a private directory with an image
//! built from the host's static busybox, while the extension runs. Every check is a known
//! answer: host pids, the runtime's shim or conmon above the container's init, command lines,
//! loopback sockets inside the container's own network namespace, `exec` into a running
//! container, and each row's `cid` mapped in `bpf_process_containers_v2` to the runtime and the
//! exact id the runtime reports; with Docker also `watch`'s container fields and
//! `exclude_cgroups`. `packaging/test.sh` installs the runtimes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// What every container runs: an exec, a subshell that exits 3, and a loopback TCP
/// connection from a client to a listener, all inside the container (the client tries again
/// until the listener is up: a loaded machine may start it late).
const SCRIPT: &str = "/bin/true mark-exec; (sleep 0.1; exit 3) & wait; \
    nc -l -p 5555 -e /bin/true & until echo x | nc 127.0.0.1 5555; do sleep 0.1; done; wait";

/// A root filesystem of busybox applets, and the same as a tar file to import as an image.
fn busybox_rootfs(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        // linking `busybox` over the binary itself would make a symlink loop
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    let tar = dir.join("busybox.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    (root, tar)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Docker,
    Podman,
    Containerd,
}

/// One runtime, set up in a private directory, its daemon (if any) stopped when dropped.
struct Runtime {
    kind: Kind,
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    daemon: Option<Child>,
}

impl Runtime {
    /// Start `kind` (its programs must be installed: packaging/test.sh does).
    fn start(kind: Kind) -> Runtime {
        let needs: &[&str] = match kind {
            Kind::Docker => &[
                "/usr/sbin/dockerd",
                "/usr/bin/docker",
                "/usr/bin/containerd",
            ],
            Kind::Podman => &["/usr/bin/podman", "/usr/bin/conmon"],
            Kind::Containerd => &["/usr/bin/containerd", "/usr/bin/ctr"],
        };
        if let Some(missing) = needs
            .iter()
            .chain(&["/usr/sbin/runc", "/bin/busybox"])
            .find(|p| !Path::new(p).exists())
        {
            panic!("{missing} is missing: packaging/test.sh installs the container runtimes");
        }
        let dir = tempfile::Builder::new()
            .prefix("osq-ebpf-rt")
            .tempdir()
            .expect("tempdir");
        let (rootfs, tar) = busybox_rootfs(dir.path());
        let mut rt = Runtime {
            kind,
            dir,
            rootfs,
            daemon: None,
        };
        let d = rt.dir.path().to_path_buf();
        match kind {
            Kind::Docker => {
                // no bridge and no iptables rules: the containers use --network none
                rt.start_daemon(
                    Command::new("/usr/sbin/dockerd")
                        .arg("--data-root")
                        .arg(d.join("data"))
                        .arg("--exec-root")
                        .arg(d.join("exec"))
                        .arg("--pidfile")
                        .arg(d.join("docker.pid"))
                        .arg("-H")
                        .arg(format!("unix://{}", d.join("docker.sock").display()))
                        .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"]),
                    "dockerd.log",
                    "info",
                );
            }
            Kind::Podman => {
                std::fs::write(
                    d.join("containers.conf"),
                    "[containers]\n\
                     default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                     [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                     events_logger = \"file\"\n",
                )
                .expect("containers.conf");
                std::fs::write(
                    d.join("storage.conf"),
                    format!(
                        "[storage]\ndriver = \"overlay\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/graph\"\n",
                        d.display()
                    ),
                )
                .expect("storage.conf");
            }
            Kind::Containerd => {
                std::fs::write(
                    d.join("config.toml"),
                    format!(
                        "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                         [grpc]\n  address = \"{0}/containerd.sock\"\n",
                        d.display()
                    ),
                )
                .expect("config.toml");
                rt.start_daemon(
                    Command::new("/usr/bin/containerd")
                        .arg("--config")
                        .arg(d.join("config.toml")),
                    "containerd.log",
                    "version",
                );
            }
        }
        if kind != Kind::Containerd {
            stdout_of(rt.cli().arg("import").arg(&tar).arg("localhost/bb:1"));
        }
        rt
    }

    /// Start the runtime's daemon, its stderr in `log`, and wait until `cli() probe` succeeds.
    fn start_daemon(&mut self, cmd: &mut Command, log: &str, probe: &str) {
        let log = std::fs::File::create(self.dir.path().join(log)).expect("log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        self.daemon = Some(child);
        let start = Instant::now();
        while !self
            .cli()
            .arg(probe)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{:?} did not start: {}",
                self.kind,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        ["dockerd.log", "containerd.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .collect()
    }

    /// The runtime's name in `container_runtime`.
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Docker => "docker",
            Kind::Podman => "podman",
            Kind::Containerd => "containerd",
        }
    }

    /// The process that is the container's init's parent: the shim, or conmon.
    fn parent_binary(&self) -> &'static str {
        match self.kind {
            Kind::Docker | Kind::Containerd => "/usr/bin/containerd-shim-runc-v2",
            Kind::Podman => "/usr/bin/conmon",
        }
    }

    fn cli(&self) -> Command {
        let d = self.dir.path();
        match self.kind {
            Kind::Docker => {
                // Debian's client: a newer one in /usr/local/bin may come first on PATH
                let mut c = Command::new("/usr/bin/docker");
                c.arg("-H")
                    .arg(format!("unix://{}", d.join("docker.sock").display()));
                c
            }
            Kind::Podman => {
                let mut c = Command::new("/usr/bin/podman");
                c.env("CONTAINERS_CONF", d.join("containers.conf"))
                    .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"));
                c
            }
            Kind::Containerd => {
                let mut c = Command::new("/usr/bin/ctr");
                c.arg("-a").arg(d.join("containerd.sock"));
                c
            }
        }
    }

    /// Run `sh -c script` in a new container to its end; returns the container's id.
    fn run(&self, salt: u64, script: &str, detached: bool) -> String {
        match self.kind {
            Kind::Docker | Kind::Podman => {
                let cidfile = self.dir.path().join(format!("cid-{salt}"));
                let mut c = self.cli();
                c.arg("run")
                    .args(["--network", "none", "--cidfile"])
                    .arg(&cidfile);
                c.arg(if detached { "-d" } else { "--rm" });
                stdout_of(c.args(["localhost/bb:1", "/bin/sh", "-c", script]));
                std::fs::read_to_string(&cidfile)
                    .expect("cidfile")
                    .trim()
                    .to_string()
            }
            Kind::Containerd => {
                let id = hex_id(salt);
                let mut c = self.cli();
                c.arg("run").arg(if detached { "-d" } else { "--rm" });
                c.args(["--env", "PATH=/bin", "--rootfs"]).arg(&self.rootfs);
                stdout_of(c.args([id.as_str(), "/bin/sh", "-c", script]));
                id
            }
        }
    }

    /// `exec` a command into the running container `id`.
    fn exec(&self, id: &str, args: &[&str]) {
        let mut c = self.cli();
        match self.kind {
            Kind::Docker | Kind::Podman => c.arg("exec").arg(id),
            Kind::Containerd => c.args(["task", "exec", "--exec-id", "test-exec", id]),
        };
        stdout_of(c.args(args));
    }

    fn remove(&self, id: &str) {
        match self.kind {
            Kind::Docker | Kind::Podman => {
                let _ = self.cli().args(["rm", "-f", id]).output();
            }
            Kind::Containerd => {
                let _ = self.cli().args(["task", "kill", "-s", "KILL", id]).output();
                std::thread::sleep(Duration::from_millis(300));
                let _ = self.cli().args(["task", "delete", id]).output();
                let _ = self.cli().args(["container", "delete", id]).output();
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(d.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if d.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// Poll until `table` has rows of cgroup `cid` that satisfy `done`; returns them.
fn rows_of(
    h: &mut Harness,
    table: &str,
    columns: &[&str],
    cid: &str,
    done: impl Fn(&[Row]) -> bool,
) -> Vec<Row> {
    let ctx = context(columns, &[]);
    let start = Instant::now();
    loop {
        let rows: Vec<Row> = h
            .client
            .generate(table, &ctx)
            .into_iter()
            .filter(|r| r["cid"] == cid)
            .collect();
        if done(&rows) || start.elapsed() > Duration::from_secs(15) {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn one<'a>(rows: &'a [Row], what: &str, pred: impl Fn(&Row) -> bool) -> &'a Row {
    rows.iter()
        .find(|r| pred(r))
        .unwrap_or_else(|| panic!("no {what} row among {rows:#?}"))
}

/// Every check of one runtime; returns it, still running.
fn known_answers(kind: Kind) -> Runtime {
    let rt = Runtime::start(kind);
    let mut h = Harness::start(&[]);
    let runtime = rt.name();

    // 1. a container that runs SCRIPT to its end
    let id = rt.run(1, SCRIPT, false);
    let map = container_row(&mut h, &id);
    assert_eq!(map["container_runtime"], runtime, "{map:?}");
    let cid = map["cid"].clone();
    let cmdline = format!("/bin/sh -c '{SCRIPT}'");
    let columns = [PROCESS_COLUMNS, &["exe_upper_layer"]].concat();
    let rows = rows_of(&mut h, PROCESS_TABLE, &columns, &cid, |r| {
        r.iter()
            .any(|r| r["cmdline"] == "nc 127.0.0.1 5555" && r["syscall"] == "exit_group")
    });
    let init = one(&rows, "container init exec", |r| {
        r["syscall"] == "execve" && r["cmdline"] == cmdline
    });
    assert_ne!(init["pid"], "1", "host pids, not the container's");
    // the init's parent is the runtime's shim or conmon, started for this container (conmon
    // daemonizes: the parent is its fork, whose rows carry conmon's binary and command line)
    let parent = init["parent"].clone();
    let all = h.client.generate(
        PROCESS_TABLE,
        &context(PROCESS_COLUMNS, &[("pid", 2, parent.as_str())]),
    );
    let shim = one(&all, "shim or conmon", |_| true);
    assert_eq!(shim["path"], rt.parent_binary(), "{shim:?}");
    assert!(
        shim["cmdline"].contains(&id[..12]),
        "the shim names the container: {shim:?}"
    );
    assert_ne!(
        shim["cid"], cid,
        "the shim is outside the container's cgroup"
    );
    // the marked exec, child of the init
    let marked = one(&rows, "marked exec", |r| {
        r["syscall"] == "execve" && r["cmdline"] == "/bin/true mark-exec"
    });
    assert_eq!(marked["parent"], init["pid"]);
    assert_eq!(marked["path"], "/bin/busybox");
    assert_eq!(
        marked["exe_upper_layer"], "0",
        "the image's file: {marked:?}"
    );
    // the subshell: a fork by the init and the child's exit with status 3
    let exit = one(&rows, "subshell exit", |r| {
        r["syscall"] == "exit_group" && r["exit_code"] == "3"
    });
    assert_eq!(exit["parent"], init["pid"]);
    one(&rows, "subshell fork", |r| {
        r["pid"] == init["pid"]
            && matches!(r["syscall"].as_str(), "clone" | "clone3" | "fork" | "vfork")
            && r["exit_code"] == exit["pid"]
    });
    // the loopback connection inside the container's network namespace
    let socks = rows_of(&mut h, SOCKET_TABLE, SOCKET_COLUMNS, &cid, |r| {
        r.iter().any(|r| r["syscall"].starts_with("accept"))
    });
    let connect = one(&socks, "connect", |r| {
        r["syscall"] == "connect" && r["exit_code"] == "0"
    });
    assert_eq!(
        (
            connect["remote_address"].as_str(),
            connect["remote_port"].as_str()
        ),
        ("127.0.0.1", "5555"),
        "{connect:?}"
    );
    let accept = one(&socks, "accept", |r| r["syscall"].starts_with("accept"));
    assert_eq!(accept["local_port"], "5555", "{accept:?}");
    assert_eq!(accept["remote_port"], connect["local_port"]);
    assert!(
        accept["remote_address"].ends_with("127.0.0.1"),
        "{accept:?}"
    );

    // 1b. a `--rm` container of one short command, gone before the extension's next poll:
    // its first exec woke the extension, which resolved its cgroup while it existed
    let id = rt.run(6, "/bin/true rm-mark", false);
    let short = container_row(&mut h, &id);
    assert_eq!(short["container_runtime"], runtime, "{short:?}");
    let rows = rows_of(&mut h, PROCESS_TABLE, PROCESS_COLUMNS, &short["cid"], |r| {
        r.iter().any(|r| r["cmdline"] == "/bin/true rm-mark")
    });
    one(&rows, "exec of the short container", |r| {
        r["syscall"] == "execve" && r["cmdline"] == "/bin/true rm-mark"
    });

    // 1c. a file written inside the container, then run: on the overlay's upper layer (the
    // containerd test runs on a plain directory, not an overlay)
    if kind != Kind::Containerd {
        let id = rt.run(
            5,
            "cp /bin/busybox /tmp/true && /tmp/true upper-mark",
            false,
        );
        let cid = container_row(&mut h, &id)["cid"].clone();
        let rows = rows_of(&mut h, PROCESS_TABLE, &columns, &cid, |r| {
            r.iter().any(|r| r["cmdline"] == "/tmp/true upper-mark")
        });
        let drift = one(&rows, "exec of the written file", |r| {
            r["syscall"] == "execve" && r["cmdline"] == "/tmp/true upper-mark"
        });
        assert_eq!(drift["exe_upper_layer"], "1", "{drift:?}");
        assert_eq!(drift["path"], "/tmp/true");
    }

    // 2. exec into a running container
    let running = rt.run(2, "exec sleep 60", true);
    let map2 = container_row(&mut h, &running);
    assert_eq!(map2["container_runtime"], runtime);
    rt.exec(&running, &["/bin/true", "mark-exec-into"]);
    let rows = rows_of(&mut h, PROCESS_TABLE, PROCESS_COLUMNS, &map2["cid"], |r| {
        r.iter().any(|r| r["cmdline"] == "/bin/true mark-exec-into")
    });
    let into = one(&rows, "exec into the container", |r| {
        r["cmdline"] == "/bin/true mark-exec-into" && r["syscall"] == "execve"
    });
    assert_ne!(into["pid"], "1");
    rt.remove(&running);
    rt
}

#[test]
fn docker_containers_have_known_rows_in_watch_too_and_exclude_cgroups_leaves_them_out() {
    if !require_root() {
        return;
    }
    let rt = known_answers(Kind::Docker);

    // watch names the container of a row
    let mut id = String::new();
    let row = watch_exec_row(
        || id = rt.run(3, "/bin/true watch-mark; sleep 1", false),
        "/bin/true watch-mark",
    );
    assert_eq!(row["container_runtime"], "docker", "{row}");
    assert_eq!(row["container_id"], id.as_str(), "{row}");
    assert_eq!(
        row["cgroup_path"],
        format!("/docker/{id}").as_str(),
        "{row}"
    );

    // exclude_cgroups = docker (below the cgroup v2 root; docker made it for the containers
    // above): the container's events are left out in the kernel, the host's are not
    let mut h = Harness::start(&[("OSQUERY_EBPF_EXCLUDE_CGROUPS", "docker")]);
    rt.run(4, "exec /bin/true excluded-mark", false);
    let (_, host) = h.exec_true(&["host-mark"]);
    assert_eq!(host["cmdline"], "/bin/true host-mark");
    let rows = h
        .client
        .generate(PROCESS_TABLE, &context(PROCESS_COLUMNS, &[]));
    // (the host's `docker run` client has the marker in its command line, and is not excluded)
    assert!(
        rows.iter()
            .any(|r| r["cmdline"].contains("exec /bin/true excluded-mark")),
        "the docker client's row"
    );
    assert!(
        !rows
            .iter()
            .any(|r| r["cmdline"] == "/bin/true excluded-mark"),
        "an excluded container's row was served"
    );
    assert!(stats(&mut h)["kernel_exec_filtered"] > 0);
}

#[test]
fn podman_containers_have_known_rows() {
    if !require_root() {
        return;
    }
    known_answers(Kind::Podman);
}

#[test]
fn containerd_containers_have_known_rows() {
    if !require_root() {
        return;
    }
    known_answers(Kind::Containerd);
}
