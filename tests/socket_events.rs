//! Root integration tests for `bpf_socket_events_v2`: real sockets on loopback (and across
//! network namespaces over a veth pair), every row checked against what the workload knows.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};

use common::*;

/// The socket-table row of `pid` that `pick` finds, polling until it appears.
fn wait_row(h: &mut Harness, pid: u32, what: &str, pick: impl Fn(&Row) -> bool) -> Row {
    let rows = h.poll_rows(SOCKET_TABLE, SOCKET_COLUMNS, pid, |rows| {
        rows.iter().any(&pick)
    });
    let row = rows
        .iter()
        .find(|r| pick(r))
        .unwrap_or_else(|| panic!("no {what} row among {} rows: {rows:#?}", rows.len()));
    assert_eq!(row.len(), SOCKET_COLUMNS.len());
    row.clone()
}

fn is(r: &Row, syscall: &str, fd: i32) -> bool {
    r["syscall"] == syscall && r["fd"] == fd.to_string()
}

/// family, type, protocol, local, remote, exit_code
fn check(
    r: &Row,
    family: i32,
    ty: i32,
    proto: i32,
    local: (&str, u16),
    remote: (&str, u16),
    ret: i64,
) {
    let me = std::process::id();
    assert_eq!(r["pid"], me.to_string(), "{r:?}");
    assert_eq!(r["parent"], nix::unistd::getppid().to_string(), "{r:?}");
    assert_eq!(r["uid"], nix::unistd::getuid().to_string());
    assert_eq!(
        r["path"],
        std::fs::canonicalize("/proc/self/exe")
            .expect("exe")
            .to_string_lossy()
    );
    assert_eq!(
        (
            r["family"].as_str(),
            r["type"].as_str(),
            r["protocol"].as_str()
        ),
        (
            family.to_string().as_str(),
            ty.to_string().as_str(),
            proto.to_string().as_str()
        ),
        "{r:?}"
    );
    assert_eq!(
        (r["local_address"].as_str(), r["local_port"].as_str()),
        (local.0, local.1.to_string().as_str()),
        "{r:?}"
    );
    assert_eq!(
        (r["remote_address"].as_str(), r["remote_port"].as_str()),
        (remote.0, remote.1.to_string().as_str()),
        "{r:?}"
    );
    assert_eq!(r["exit_code"], ret.to_string(), "{r:?}");
    assert_eq!(r["probe_error"], "0");
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}

fn tcp_roundtrip(h: &mut Harness, ip: &str, family: i32) {
    let me = std::process::id();
    let listener = TcpListener::bind(sa(ip, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let lfd = listener.as_raw_fd();
    let r = wait_row(h, me, "bind", |r| {
        is(r, "bind", lfd) && r["local_port"] == port.to_string()
    });
    check(&r, family, 1, 6, (ip, port), ("", 0), 0);
    let r = wait_row(h, me, "listen", |r| {
        is(r, "listen", lfd) && r["local_port"] == port.to_string()
    });
    check(&r, family, 1, 6, (ip, port), ("", 0), 0);

    // connect, and accept4 (std) with the peer buffer
    let client = TcpStream::connect(sa(ip, port)).expect("connect");
    let cport = client.local_addr().expect("local").port();
    let (accepted, _) = listener.accept().expect("accept");
    let r = wait_row(h, me, "connect", |r| {
        is(r, "connect", client.as_raw_fd()) && r["remote_port"] == port.to_string()
    });
    check(&r, family, 1, 6, (ip, cport), (ip, port), 0);
    let r = wait_row(h, me, "accept4", |r| {
        is(r, "accept4", accepted.as_raw_fd()) && r["local_port"] == port.to_string()
    });
    check(
        &r,
        family,
        1,
        6,
        (ip, port),
        (ip, cport),
        i64::from(accepted.as_raw_fd()),
    );

    // accept(fd, NULL, NULL): the peer comes from the kernel socket
    let client2 = TcpStream::connect(sa(ip, port)).expect("connect");
    let cport2 = client2.local_addr().expect("local").port();
    // SAFETY: plain accept on a listening socket we own, no address buffer.
    let fd = unsafe { libc::accept(lfd, std::ptr::null_mut(), std::ptr::null_mut()) };
    assert!(fd >= 0);
    // SAFETY: fd is a new descriptor we own.
    let _owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let r = wait_row(h, me, "accept", |r| {
        is(r, "accept", fd) && r["local_port"] == port.to_string()
    });
    check(&r, family, 1, 6, (ip, port), (ip, cport2), i64::from(fd));

    // accept4 with SOCK_NONBLOCK|SOCK_CLOEXEC: type has no flag bits
    let client3 = TcpStream::connect(sa(ip, port)).expect("connect");
    let cport3 = client3.local_addr().expect("local").port();
    // SAFETY: as above.
    let fd = unsafe {
        libc::accept4(
            lfd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    assert!(fd >= 0);
    // SAFETY: as above.
    let _owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let r = wait_row(h, me, "accept4 flags", |r| {
        is(r, "accept4", fd) && r["remote_port"] == cport3.to_string()
    });
    check(&r, family, 1, 6, (ip, port), (ip, cport3), i64::from(fd));
}

#[test]
fn tcp_over_ipv4_and_ipv6_loopback() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    tcp_roundtrip(&mut h, "127.0.0.1", 2);
    tcp_roundtrip(&mut h, "::1", 10);
}

#[test]
fn udp_bind_and_connect() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let me = std::process::id();
    for (ip, family) in [("127.0.0.1", 2), ("::1", 10)] {
        let server = UdpSocket::bind(sa(ip, 0)).expect("bind");
        let sport = server.local_addr().expect("addr").port();
        let r = wait_row(&mut h, me, "udp bind", |r| {
            is(r, "bind", server.as_raw_fd()) && r["local_port"] == sport.to_string()
        });
        check(&r, family, 2, 17, (ip, sport), ("", 0), 0);
        let client = UdpSocket::bind(sa(ip, 0)).expect("bind");
        client.connect(sa(ip, sport)).expect("connect");
        let cport = client.local_addr().expect("addr").port();
        let r = wait_row(&mut h, me, "udp connect", |r| {
            is(r, "connect", client.as_raw_fd()) && r["remote_port"] == sport.to_string()
        });
        check(&r, family, 2, 17, (ip, cport), (ip, sport), 0);
    }
}

#[test]
fn failed_connect_and_bind_are_rows_with_the_errno() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let me = std::process::id();

    // ECONNREFUSED: a port nobody listens on
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    // SAFETY: creating a socket.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    // SAFETY: fd is ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: a valid sockaddr_in of the given length.
    let rc = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            len,
        )
    };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::ECONNREFUSED))
    );
    let r = wait_row(&mut h, me, "refused connect", |r| {
        is(r, "connect", fd) && r["exit_code"] == "-111"
    });
    assert_eq!(
        (r["remote_address"].as_str(), r["remote_port"].as_str()),
        ("127.0.0.1", port.to_string().as_str())
    );
    assert_eq!((r["family"].as_str(), r["type"].as_str()), ("2", "1"));

    // A non-blocking connect: the row's exit_code is what the caller got (EINPROGRESS or 0).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let lport = listener.local_addr().expect("addr").port();
    // SAFETY: creating a socket.
    let nfd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
    // SAFETY: nfd is ours.
    let nsock = unsafe { OwnedFd::from_raw_fd(nfd) };
    let sa = libc::sockaddr_in {
        sin_port: lport.to_be(),
        ..sa
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::connect(
            nsock.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            len,
        )
    };
    let expected = if rc == 0 {
        0
    } else {
        -i64::from(
            std::io::Error::last_os_error()
                .raw_os_error()
                .expect("errno"),
        )
    };
    assert!(
        expected == 0 || expected == -i64::from(libc::EINPROGRESS),
        "{expected}"
    );
    let r = wait_row(&mut h, me, "non-blocking connect", |r| {
        is(r, "connect", nfd) && r["remote_port"] == lport.to_string()
    });
    assert_eq!(r["exit_code"], expected.to_string());
    assert_eq!(r["local_address"], "127.0.0.1");
    assert_ne!(r["local_port"], "0", "the kernel-assigned port is filled");

    // EADDRINUSE
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let tport = taken.local_addr().expect("addr").port();
    // SAFETY: creating a socket.
    let bfd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    // SAFETY: bfd is ours.
    let bsock = unsafe { OwnedFd::from_raw_fd(bfd) };
    let sa = libc::sockaddr_in {
        sin_port: tport.to_be(),
        ..sa
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::bind(
            bsock.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            len,
        )
    };
    assert_eq!(
        (rc, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EADDRINUSE))
    );
    let r = wait_row(&mut h, me, "bind in use", |r| {
        is(r, "bind", bfd) && r["exit_code"] == "-98"
    });
    assert_eq!(
        (r["local_address"].as_str(), r["local_port"].as_str()),
        ("127.0.0.1", tport.to_string().as_str())
    );
}

#[test]
fn unix_stream_sockets_path_and_abstract() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let me = std::process::id();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("s.sock");
    let p = path.to_string_lossy().into_owned();
    let listener = UnixListener::bind(&path).expect("bind");
    let r = wait_row(&mut h, me, "unix bind", |r| {
        is(r, "bind", listener.as_raw_fd()) && r["local_address"] == p
    });
    check(&r, 1, 1, 0, (&p, 0), ("", 0), 0);
    let client = UnixStream::connect(&path).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    let r = wait_row(&mut h, me, "unix connect", |r| {
        is(r, "connect", client.as_raw_fd()) && r["remote_address"] == p
    });
    check(&r, 1, 1, 0, ("", 0), (&p, 0), 0);
    let r = wait_row(&mut h, me, "unix accept", |r| {
        is(r, "accept4", accepted.as_raw_fd()) && r["local_address"] == p
    });
    assert_eq!(r["family"], "1");

    use std::os::linux::net::SocketAddrExt;
    let name = format!("osquery-ebpf-test-{me}");
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract");
    let alistener = UnixListener::bind_addr(&addr).expect("bind abstract");
    let at = format!("@{name}");
    let r = wait_row(&mut h, me, "abstract bind", |r| {
        is(r, "bind", alistener.as_raw_fd()) && r["local_address"] == at
    });
    check(&r, 1, 1, 0, (&at, 0), ("", 0), 0);
    let aclient = UnixStream::connect_addr(&addr).expect("connect abstract");
    let r = wait_row(&mut h, me, "abstract connect", |r| {
        is(r, "connect", aclient.as_raw_fd()) && r["remote_address"] == at
    });
    check(&r, 1, 1, 0, ("", 0), (&at, 0), 0);
}

#[test]
fn a_socket_created_before_the_extension_started_is_complete() {
    if !require_root() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let cport = client.local_addr().expect("addr").port();
    let mut h = Harness::start(&[]); // probes load after the sockets exist
    let (accepted, _) = listener.accept().expect("accept");
    let r = wait_row(&mut h, std::process::id(), "accept of an old socket", |r| {
        is(r, "accept4", accepted.as_raw_fd()) && r["remote_port"] == cport.to_string()
    });
    check(
        &r,
        2,
        1,
        6,
        ("127.0.0.1", port),
        ("127.0.0.1", cport),
        i64::from(accepted.as_raw_fd()),
    );
}

/// Two network namespaces joined by a veth pair, removed on drop.
struct Netns {
    names: [String; 2],
}

impl Netns {
    fn ip(args: &[&str]) {
        let st = Command::new("ip").args(args).status().expect("ip");
        assert!(st.success(), "ip {args:?} failed");
    }

    fn new(tag: u32) -> Netns {
        let names = [format!("oe-srv-{tag}"), format!("oe-cli-{tag}")];
        let (srv, cli) = (&names[0], &names[1]);
        let (va, vb) = (
            format!("oes{}", tag % 100000),
            format!("oec{}", tag % 100000),
        );
        Netns::ip(&["netns", "add", srv]);
        Netns::ip(&["netns", "add", cli]);
        let ns = Netns {
            names: names.clone(),
        };
        Netns::ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        Netns::ip(&["link", "set", &va, "netns", srv]);
        Netns::ip(&["link", "set", &vb, "netns", cli]);
        Netns::ip(&["-n", srv, "addr", "add", "10.231.0.1/24", "dev", &va]);
        Netns::ip(&["-n", cli, "addr", "add", "10.231.0.2/24", "dev", &vb]);
        for (n, dev) in [(srv, &va), (cli, &vb)] {
            Netns::ip(&["-n", n, "link", "set", dev, "up"]);
            Netns::ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn a_connection_between_two_network_namespaces() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let ns = Netns::new(std::process::id());
    let helper = workload();
    let spawn = |ns: &str, args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&helper)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec")
    };
    let server = spawn(&ns.names[0], &["tcp-server", "10.231.0.1", "8080"]);
    let spid = server.id(); // `ip netns exec` execs the command in the same process
    let client = spawn(&ns.names[1], &["tcp-client", "10.231.0.1", "8080"]);
    let cpid = client.id();
    let cout = client.wait_with_output().expect("client");
    let sout = server.wait_with_output().expect("server");
    let facts = |o: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(o)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let c = facts(&cout.stdout);
    let s = facts(&sout.stdout);
    let cport = c[0]["local_port"].as_u64().expect("client port");
    assert_eq!(
        s.last().expect("server facts")["peer_port"].as_u64(),
        Some(cport)
    );

    let r = wait_row(&mut h, cpid, "netns connect", |r| {
        r["syscall"] == "connect" && r["exit_code"] == "0" && r["remote_address"] == "10.231.0.1"
    });
    assert_eq!(
        (r["local_address"].as_str(), r["local_port"].as_str()),
        ("10.231.0.2", cport.to_string().as_str())
    );
    assert_eq!(
        (r["remote_address"].as_str(), r["remote_port"].as_str()),
        ("10.231.0.1", "8080")
    );
    assert_eq!(r["fd"], c[0]["fd"].to_string());
    let r = wait_row(&mut h, spid, "netns accept", |r| {
        r["syscall"] == "accept4" && r["exit_code"] != "-11"
    });
    assert_eq!(
        (r["local_address"].as_str(), r["local_port"].as_str()),
        ("10.231.0.1", "8080")
    );
    assert_eq!(
        (r["remote_address"].as_str(), r["remote_port"].as_str()),
        ("10.231.0.2", cport.to_string().as_str())
    );
    assert_eq!(r["fd"], s.last().expect("facts")["fd"].to_string());
    let r = wait_row(&mut h, spid, "netns bind", |r| {
        r["syscall"] == "bind" && r["family"] == "2"
    });
    assert_eq!(
        (
            r["local_address"].as_str(),
            r["local_port"].as_str(),
            r["exit_code"].as_str()
        ),
        ("10.231.0.1", "8080", "0")
    );
}

/// Socket operations submitted to io_uring, with no connect/accept system call: the same rows
/// as the system calls', marked `via_io_uring` (bind and listen too where the kernel runs them
/// in the ring, 6.11+).
#[test]
fn io_uring_connect_accept_bind_and_listen_are_rows() {
    if !require_root() {
        return;
    }
    let mut h = Harness::start(&[]);
    let out = stdout_of(Command::new(workload()).arg("uring-tcp"));
    let facts: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("")).expect("facts");
    let pid = facts["pid"].as_u64().expect("pid") as u32;
    let (port, client_port) = (facts["port"].to_string(), facts["client_port"].to_string());
    assert_eq!(facts["connect"], 0, "{facts}");
    let accepted = facts["accept"].to_string();
    let cols = [SOCKET_COLUMNS, &["via_io_uring", "netns"]].concat();
    let rows = h.poll_rows(SOCKET_TABLE, &cols, pid, |r| {
        r.iter().filter(|r| r["syscall"] == "connect").count() == 3
            && r.iter().any(|r| r["syscall"] == "accept")
    });
    // the io_uring row of `syscall` on local port `local` ("" for any)
    let one = |syscall: &str, local: &str| {
        rows.iter()
            .find(|r| {
                r["syscall"] == syscall
                    && r["via_io_uring"] == "1"
                    && (local.is_empty() || r["local_port"] == local)
            })
            .unwrap_or_else(|| panic!("no io_uring {syscall} row on {local:?}: {rows:#?}"))
    };
    let (client_fd, listener_fd) = (
        facts["client_fd"].to_string(),
        facts["listener_fd"].to_string(),
    );
    // the connect on a descriptor: its fd, noted at submission
    let c = one("connect", &client_port);
    assert_eq!(
        (
            c["remote_address"].as_str(),
            c["remote_port"].as_str(),
            c["exit_code"].as_str(),
            c["fd"].as_str(),
        ),
        ("127.0.0.1", port.as_str(), "0", client_fd.as_str()),
        "{c:?}"
    );
    assert_eq!((c["family"].as_str(), c["protocol"].as_str()), ("2", "6"));
    c["duration"].parse::<u64>().expect("a duration");
    // the connect on a registered file names a slot, not a descriptor: fd -1
    assert_eq!(facts["fixed_connect"], 0, "{facts}");
    let f = one("connect", &facts["fixed_client_port"].to_string());
    assert_eq!(
        (
            f["remote_port"].as_str(),
            f["exit_code"].as_str(),
            f["fd"].as_str()
        ),
        (port.as_str(), "0", "-1"),
        "{f:?}"
    );
    // a refused connect: the destination from the caller's sockaddr (the kernel socket no
    // longer holds it), as for the system call
    assert_eq!(facts["refused_connect"], -libc::ECONNREFUSED, "{facts}");
    let refused = rows
        .iter()
        .find(|r| r["syscall"] == "connect" && r["via_io_uring"] == "1" && r["exit_code"] != "0")
        .unwrap_or_else(|| panic!("no refused io_uring connect row: {rows:#?}"));
    assert_eq!(
        (
            refused["exit_code"].as_str(),
            refused["fd"].as_str(),
            refused["remote_address"].as_str(),
            refused["remote_port"].as_str()
        ),
        (
            "-111",
            facts["refused_fd"].to_string().as_str(),
            "127.0.0.1",
            facts["refused_port"].to_string().as_str()
        ),
        "{refused:?}"
    );
    let a = one("accept", "");
    assert_eq!(
        (
            a["local_port"].as_str(),
            a["remote_port"].as_str(),
            a["exit_code"].as_str(),
            a["fd"].as_str(),
        ),
        (
            port.as_str(),
            client_port.as_str(),
            accepted.as_str(),
            accepted.as_str()
        ),
        "{a:?}"
    );
    // nothing came through the system calls
    assert!(
        !rows.iter().any(
            |r| matches!(r["syscall"].as_str(), "connect" | "accept" | "accept4")
                && r["via_io_uring"] == "0"
        ),
        "{rows:#?}"
    );
    if facts["bind_by_ring"] == true {
        for call in ["bind", "listen"] {
            let r = one(call, &port);
            assert_eq!(
                (r["exit_code"].as_str(), r["fd"].as_str()),
                ("0", listener_fd.as_str()),
                "{r:?}"
            );
        }
    } else {
        eprintln!("this kernel runs no bind/listen in io_uring (before 6.11): not checked");
    }
}
