//! The storms the benchmarks run: fork+exec of /bin/true and loopback TCP connect+accept,
//! each from two worker threads for a fixed time. Shared by `storm` and `hookbench`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Run `workers` threads of `work(marker, n)` for `seconds`; returns operations done.
pub fn storm(seconds: u64, workers: usize, work: impl Fn(u64) + Send + Sync + 'static) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let work = Arc::new(work);
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (done, stop, work) = (done.clone(), stop.clone(), work.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    work(n);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    done.load(Ordering::Relaxed)
}

pub fn exec_storm(seconds: u64, marker: &str) -> u64 {
    let marker = marker.to_string();
    storm(seconds, 2, move |n| {
        let _ = Command::new("/bin/true")
            .arg(format!("{marker}-{n}"))
            .status();
    })
}

/// Close with a reset: no TIME_WAIT on this end, so the storm does not run out of ports.
fn reset_on_close(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on our own socket with a valid linger struct.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
}

pub fn connect_storm(seconds: u64) -> (u64, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // A deep accept queue (std listens with 128): an overflow drops the SYN and the client
    // waits a second to retry, which made single rounds of this storm swing from 700 to
    // 7,000 connects/s (TcpExtListenOverflows grew in every run).
    // SAFETY: listen(2) again on our own listening socket only changes its backlog.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) };
    let stop = Arc::new(AtomicBool::new(false));
    // Blocking acceptors (a non-blocking one would make every EAGAIN an accept row), as many
    // as there are clients, so that accepting keeps up.
    const ACCEPTORS: usize = 2;
    let acceptors: Vec<_> = (0..ACCEPTORS)
        .map(|_| {
            let (listener, stop) = (listener.try_clone().expect("clone listener"), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(mut c) = conn {
                        // both ends: whichever closes first would otherwise hold the 4-tuple
                        // in TIME_WAIT for a minute, and later storms ran out of ports
                        reset_on_close(std::os::fd::AsRawFd::as_raw_fd(&c));
                        let _ = c.read(&mut [0u8; 1]);
                    }
                }
            })
        })
        .collect();
    let ok = Arc::new(AtomicU64::new(0));
    let ok2 = ok.clone();
    storm(seconds, 2, move |_| {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            ok2.fetch_add(1, Ordering::Relaxed);
            reset_on_close(std::os::fd::AsRawFd::as_raw_fd(&c));
            let _ = c.write_all(b"x");
        }
    });
    let n = ok.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    // one connection per acceptor: each leaves at its next accept (any acceptor may take
    // any of them, so all are made before joining)
    for _ in 0..ACCEPTORS {
        let _ = TcpStream::connect(("127.0.0.1", port));
    }
    for a in acceptors {
        let _ = a.join();
    }
    (n, port)
}
