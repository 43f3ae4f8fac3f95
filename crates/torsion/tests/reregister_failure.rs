//! A connection whose descriptor the backend refuses to watch again is closed with that
//! error, never left stalled. The refusal is made real: the test swaps a regular file in
//! under the accepted socket's descriptor number, which epoll refuses (`EPERM`) when the
//! connection asks to read again after a pause.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use torsion::net::Transport;
use torsion::net::tcp::ListenOptions;
use torsion::prelude::*;
use torsion::reactor::backend::BackendKind;

/// The descriptor number of the socket connected to `peer`, found among this process's
/// open descriptors.
fn fd_of_connection_to(peer: std::net::SocketAddr) -> Option<RawFd> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()? {
        let fd: RawFd = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let mut addr = zeroed_storage();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `getpeername` writes at most `len` bytes into `addr`, a local of that
        // size; `fd` is only a number to it (a closed or non-socket one fails).
        let rc = unsafe { libc::getpeername(fd, (&raw mut addr).cast(), &mut len) };
        if rc != 0 || i32::from(addr.ss_family) != libc::AF_INET {
            continue;
        }
        // SAFETY: the family is AF_INET, so the storage holds a `sockaddr_in`.
        let sin: libc::sockaddr_in = unsafe { *(&raw const addr).cast() };
        let port = u16::from_be(sin.sin_port);
        if port == peer.port() {
            return Some(fd);
        }
    }
    None
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: `sockaddr_storage` is plain old data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

struct Victim {
    lost: Rc<RefCell<Option<Failure>>>,
    reactor: Reactor,
}

impl Protocol for Victim {
    fn connection_made(&mut self, t: Transport) {
        let Some(fd) = t.peer().socket_addr().and_then(fd_of_connection_to) else {
            return;
        };
        let file = std::fs::File::open("/proc/self/status").expect("a regular file");
        t.pause_producing();
        // SAFETY: both are open descriptors of this process; `dup2` replaces what `fd`
        // refers to (the connection's socket, which torsion keeps and closes later) with
        // the file, and touches no memory.
        let rc = unsafe { libc::dup2(file.as_raw_fd(), fd) };
        assert_eq!(rc, fd, "dup2");
        t.resume_producing();
    }
    fn connection_lost(&mut self, reason: Failure) {
        *self.lost.borrow_mut() = Some(reason);
        let _ = self.reactor.stop();
    }
}

#[test]
fn a_connection_the_backend_will_not_watch_again_is_closed_with_the_error() {
    let reactor = Reactor::builder()
        .backend(BackendKind::Epoll)
        .build()
        .expect("an epoll reactor");
    let lost = Rc::new(RefCell::new(None));
    let (l, r) = (lost.clone(), reactor.clone());
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..ListenOptions::default()
    };
    let port = reactor
        .listen_tcp_with(
            0,
            Rc::new(move || Victim {
                lost: l.clone(),
                reactor: r.clone(),
            }),
            options,
        )
        .expect("listen");
    let n = port.host().port().expect("port");
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", n)).expect("connect");
        let _ = s.write_all(b"hello");
        std::thread::sleep(std::time::Duration::from_millis(200));
    });
    let r = reactor.clone();
    let safety = reactor.call_later(20.0, move || {
        let _ = r.stop();
    });
    reactor.run().expect("run");
    let _ = safety.cancel();
    client.join().expect("client");
    drop(port);
    let lost = lost.borrow();
    let failure = lost.as_ref().expect("connection_lost was delivered");
    let error = failure
        .downcast_ref::<std::io::Error>()
        .expect("the backend's error");
    assert_eq!(error.raw_os_error(), Some(libc::EPERM), "{failure}");
}
