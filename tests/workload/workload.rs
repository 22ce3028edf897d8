//! Workloads with known answers for the integration tests. Each prints one JSON line of facts
//! (pids, errno) on stdout, then does what its name says.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStringExt;

fn cstrings(args: &[OsString]) -> Vec<CString> {
    args.iter()
        .map(|a| CString::new(a.clone().into_vec()).expect("argument without NUL"))
        .collect()
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn wait(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// vfork(2), the child calling exit_group(0) at once without touching the shared stack (libc's
/// vfork() wrapper is deprecated in Rust for that reason).
#[cfg(target_arch = "x86_64")]
fn vfork_and_exit_child() -> libc::pid_t {
    let ret: i64;
    // SAFETY: in the child, only two syscalls run, on registers; the parent resumes after it.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov eax, 231", // exit_group
            "xor edi, edi",
            "syscall",
            "2:",
            inout("rax") libc::SYS_vfork => ret,
            out("rdi") _,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret as libc::pid_t
}

#[cfg(not(target_arch = "x86_64"))]
fn vfork_and_exit_child() -> libc::pid_t {
    // SAFETY: the child only calls _exit.
    #[allow(deprecated)]
    let pid = unsafe { libc::vfork() };
    if pid == 0 {
        // SAFETY: leaving the child at once.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let cmd = args
        .first()
        .and_then(|a| a.to_str())
        .unwrap_or("")
        .to_string();
    let rest = &args[args.len().min(1)..];
    let me = std::process::id();
    let envp: Vec<*const libc::c_char> = vec![std::ptr::null()];
    match cmd.as_str() {
        // chdir(DIR) then execv("./PROG", ["./PROG", ARGS...])
        "exec-rel" => {
            std::env::set_current_dir(&rest[0]).expect("chdir");
            let mut argv = vec![OsString::from(format!("./{}", rest[1].to_string_lossy()))];
            argv.extend_from_slice(&rest[2..]);
            let c = cstrings(&argv);
            say(&format!(r#"{{"pid":{me}}}"#));
            // SAFETY: NUL-terminated argv/envp arrays of valid C strings.
            unsafe { libc::execve(c[0].as_ptr(), ptrs(&c).as_ptr(), envp.as_ptr()) };
            say(&format!(r#"{{"errno":{}}}"#, errno()));
        }
        // execveat(open(DIR), NAME, [NAME, ARGS...], 0)
        "execveat-dirfd" => {
            let dir = CString::new(rest[0].clone().into_vec()).expect("dir");
            // SAFETY: valid path string.
            let fd = unsafe { libc::open(dir.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
            let c = cstrings(&rest[1..]);
            say(&format!(r#"{{"pid":{me},"dirfd":{fd}}}"#));
            // SAFETY: as above.
            unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    c[0].as_ptr(),
                    ptrs(&c).as_ptr(),
                    envp.as_ptr(),
                    0,
                )
            };
            say(&format!(r#"{{"errno":{}}}"#, errno()));
        }
        // execveat(open(FILE), "", [ARGS...], AT_EMPTY_PATH)
        "execveat-empty" => {
            let file = CString::new(rest[0].clone().into_vec()).expect("file");
            // SAFETY: valid path string.
            let fd = unsafe { libc::open(file.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            let c = cstrings(&rest[1..]);
            let empty = CString::default();
            say(&format!(r#"{{"pid":{me},"fd":{fd}}}"#));
            // SAFETY: as above.
            unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    empty.as_ptr(),
                    ptrs(&c).as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            say(&format!(r#"{{"errno":{}}}"#, errno()));
        }
        // copy this binary into a memfd and fexecve it: [this, "exit", "0"] (a fileless exec)
        "memfd-exec" => {
            let bytes = std::fs::read("/proc/self/exe").expect("read self");
            let name = CString::new("workload-copy").expect("name");
            // SAFETY: a valid NUL-terminated name; the fd is ours.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
            assert!(fd >= 0, "memfd_create: errno {}", errno());
            // SAFETY: fd is a valid memfd; bytes outlives the call.
            let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
            assert_eq!(n, bytes.len() as isize, "write");
            let c = cstrings(&[OsString::from("workload"), "exit".into(), "0".into()]);
            say(&format!(r#"{{"pid":{me}}}"#));
            // SAFETY: NUL-terminated argv/envp arrays of valid C strings.
            unsafe { libc::fexecve(fd, ptrs(&c).as_ptr(), envp.as_ptr()) };
            say(&format!(r#"{{"errno":{}}}"#, errno()));
        }
        // execv(PATH, [PATH, ARGS...]) expected to fail
        "exec-fail" => {
            let c = cstrings(rest);
            // SAFETY: as above.
            unsafe { libc::execve(c[0].as_ptr(), ptrs(&c).as_ptr(), envp.as_ptr()) };
            say(&format!(r#"{{"pid":{me},"errno":{}}}"#, errno()));
        }
        "fork" => {
            // The fork(2) syscall itself (glibc's fork() calls clone); arm64 has no fork(2),
            // so there a plain clone(SIGCHLD). The facts name the syscall used.
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the child only calls _exit.
            let (pid, name) = (unsafe { libc::syscall(libc::SYS_fork) }, "fork");
            #[cfg(not(target_arch = "x86_64"))]
            // SAFETY: clone without CLONE_VM is a fork; the child only calls _exit.
            let (pid, name) = (
                unsafe {
                    libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0)
                },
                "clone",
            );
            let pid = pid as libc::pid_t;
            if pid == 0 {
                // SAFETY: leaving the child at once.
                unsafe { libc::_exit(0) };
            }
            wait(pid);
            say(&format!(
                r#"{{"pid":{me},"child":{pid},"syscall":"{name}"}}"#
            ));
        }
        "vfork" => {
            let pid = vfork_and_exit_child();
            wait(pid);
            say(&format!(r#"{{"pid":{me},"child":{pid}}}"#));
        }
        "clone3" => {
            let args = CloneArgs {
                exit_signal: libc::SIGCHLD as u64,
                ..CloneArgs::default()
            };
            // SAFETY: clone3 without CLONE_VM is a fork; the child only calls _exit.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            } as libc::pid_t;
            if pid == 0 {
                // SAFETY: leaving the child at once.
                unsafe { libc::_exit(0) };
            }
            wait(pid);
            say(&format!(r#"{{"pid":{me},"child":{pid}}}"#));
        }
        // execv from a thread that is not the group leader
        "thread-exec" => {
            say(&format!(r#"{{"pid":{me}}}"#));
            let c = cstrings(rest);
            let t = std::thread::spawn(move || {
                let envp: Vec<*const libc::c_char> = vec![std::ptr::null()];
                // SAFETY: NUL-terminated argv/envp arrays of valid C strings.
                unsafe { libc::execve(c[0].as_ptr(), ptrs(&c).as_ptr(), envp.as_ptr()) };
            });
            let _ = t.join();
            say(&format!(r#"{{"errno":{}}}"#, errno()));
        }
        // a thread that is not a process
        "thread" => {
            let t = std::thread::spawn(|| 1 + 1);
            let _ = t.join();
            say(&format!(r#"{{"pid":{me}}}"#));
        }
        "exit" => {
            let code: i32 = rest[0].to_string_lossy().parse().expect("code");
            say(&format!(r#"{{"pid":{me}}}"#));
            std::process::exit(code);
        }
        "sleep" => {
            say(&format!(r#"{{"pid":{me}}}"#));
            let secs: u64 = rest[0].to_string_lossy().parse().expect("secs");
            std::thread::sleep(std::time::Duration::from_secs(secs));
        }
        // loopback TCP through io_uring only: (bind and listen through the ring where the
        // kernel has them, 6.11+, else by system call), then accept and connect as ring
        // operations; the facts name what went through the ring and the results
        "uring-tcp" => uring_tcp(me),
        // accept one TCP connection on ADDR:PORT
        "tcp-server" => {
            let addr = format!(
                "{}:{}",
                rest[0].to_string_lossy(),
                rest[1].to_string_lossy()
            );
            let l = std::net::TcpListener::bind(&addr).expect("bind");
            say(&format!(r#"{{"pid":{me},"listening":true}}"#));
            let (c, peer) = l.accept().expect("accept");
            say(&format!(
                r#"{{"pid":{me},"peer_port":{},"fd":{}}}"#,
                peer.port(),
                std::os::fd::AsRawFd::as_raw_fd(&c)
            ));
        }
        // connect to ADDR:PORT
        "tcp-client" => {
            let addr = format!(
                "{}:{}",
                rest[0].to_string_lossy(),
                rest[1].to_string_lossy()
            );
            let start = std::time::Instant::now();
            let c = loop {
                match std::net::TcpStream::connect(&addr) {
                    Ok(c) => break c,
                    // long: an emulated guest on a loaded host can take seconds to start the server
                    Err(e) if start.elapsed() > std::time::Duration::from_secs(60) => {
                        panic!("connect: {e}")
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            };
            let local = c.local_addr().expect("local");
            say(&format!(
                r#"{{"pid":{me},"local_port":{},"fd":{}}}"#,
                local.port(),
                std::os::fd::AsRawFd::as_raw_fd(&c)
            ));
        }
        other => {
            eprintln!("unknown workload {other:?}");
            std::process::exit(64);
        }
    }
}

fn sockaddr_in(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Submit one operation and wait for its result.
fn uring_one(ring: &mut io_uring::IoUring, sqe: io_uring::squeue::Entry) -> i32 {
    // SAFETY: every buffer the entry points to outlives the wait below.
    unsafe { ring.submission().push(&sqe).expect("queue") };
    ring.submit_and_wait(1).expect("submit");
    ring.completion().next().expect("a completion").result()
}

fn uring_tcp(me: u32) {
    use io_uring::{opcode, types::Fd};
    let mut ring = io_uring::IoUring::new(8).expect("io_uring_setup");
    // SAFETY: plain socket(2) calls.
    let (l, c) = unsafe {
        (
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
        )
    };
    let any = sockaddr_in(0);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let addr = (&any as *const libc::sockaddr_in).cast::<libc::sockaddr>();
    let mut ring_bind = uring_one(&mut ring, opcode::Bind::new(Fd(l), addr, len).build());
    let bind_by_ring = ring_bind != -libc::EINVAL;
    if !bind_by_ring {
        // SAFETY: a valid sockaddr_in of `len` bytes.
        ring_bind = unsafe { libc::bind(l, addr, len) };
    }
    let mut ring_listen = uring_one(&mut ring, opcode::Listen::new(Fd(l), 16).build());
    if !bind_by_ring {
        // SAFETY: listen on our socket.
        ring_listen = unsafe { libc::listen(l, 16) };
    }
    let mut bound = sockaddr_in(0);
    let mut blen = len;
    // SAFETY: getsockname into a sockaddr_in-sized buffer.
    unsafe { libc::getsockname(l, (&mut bound as *mut libc::sockaddr_in).cast(), &mut blen) };
    let port = u16::from_be(bound.sin_port);
    let to = sockaddr_in(port);
    // accept first (it waits in the ring), then connect; both complete
    let accept = opcode::Accept::new(Fd(l), std::ptr::null_mut(), std::ptr::null_mut())
        .build()
        .user_data(1);
    let connect = opcode::Connect::new(Fd(c), (&to as *const libc::sockaddr_in).cast(), len)
        .build()
        .user_data(2);
    // SAFETY: `to` outlives the wait below.
    unsafe {
        ring.submission().push(&accept).expect("queue");
        ring.submission().push(&connect).expect("queue");
    }
    let mut results = [0i32; 3];
    let mut done = 0;
    while done < 2 {
        ring.submit_and_wait(1).expect("submit");
        for cqe in ring.completion() {
            results[cqe.user_data() as usize] = cqe.result();
            done += 1;
        }
    }
    // one more connect, on a registered (fixed) file: the request names slot 0, not an fd
    // SAFETY: a plain socket(2) call.
    let f = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    ring.submitter()
        .register_files(&[f])
        .expect("register files");
    let fixed = uring_one(
        &mut ring,
        opcode::Connect::new(
            io_uring::types::Fixed(0),
            (&to as *const libc::sockaddr_in).cast(),
            len,
        )
        .build(),
    );
    let port_of = |fd: i32| {
        let mut local = sockaddr_in(0);
        let mut llen = len;
        // SAFETY: getsockname into a sockaddr_in-sized buffer.
        unsafe { libc::getsockname(fd, (&mut local as *mut libc::sockaddr_in).cast(), &mut llen) };
        u16::from_be(local.sin_port)
    };
    // and one to a port nothing listens on (one just bound and closed): refused
    // SAFETY: plain socket(2), bind(2) and close(2) calls on our own sockets.
    let (r, closed_port) = unsafe {
        let t = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        libc::bind(t, addr, len);
        let p = port_of(t);
        libc::close(t);
        (libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0), p)
    };
    let nowhere = sockaddr_in(closed_port);
    let refused = uring_one(
        &mut ring,
        opcode::Connect::new(Fd(r), (&nowhere as *const libc::sockaddr_in).cast(), len).build(),
    );
    say(&format!(
        r#"{{"pid":{me},"port":{port},"listener_fd":{l},"client_fd":{c},"client_port":{},"accept":{},"connect":{},"fixed_connect":{fixed},"fixed_client_port":{},"refused_connect":{refused},"refused_fd":{r},"refused_port":{closed_port},"bind":{ring_bind},"listen":{ring_listen},"bind_by_ring":{bind_by_ring}}}"#,
        port_of(c),
        results[1],
        results[2],
        port_of(f)
    ));
}
