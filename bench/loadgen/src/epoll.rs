//! The lean ping-pong engine: one edge-triggered epoll loop per thread.
//!
//! Per message a connection costs one `write` and (for payloads the kernel
//! hands over in one piece) one `read`, plus its share of `epoll_wait`: a
//! reply is read only once epoll reports the socket readable, so the
//! generator never spends a syscall on an empty socket the way a
//! readiness-cached runtime does right after sending. A short read means the
//! socket was drained at that moment, and any later arrival raises a new edge,
//! so waiting for the next edge never loses data.
//!
//! With TLS (`--tls`) each connection's handshake is done on the blocking
//! socket before it joins the loop; then a message is encrypted by a rustls
//! `ClientConnection` and its records written with one `write_tls` (one
//! `writev`), and replies are read from the socket into a 64 KiB buffer that
//! is fed to rustls from memory, so the short-read rule above still holds.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use rustls::ClientConnection;

use crate::{MEASURE, STOP, Shared, Tally};

/// Bytes read from the socket at a time on TLS connections.
const RAW_SIZE: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    tls: Option<ClientConnection>,
    sending: bool,
    done: usize,
    started: Instant,
    alive: bool,
}

struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 has no preconditions; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: i32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open and `ev` is a valid epoll_event.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `events` is valid for writes of `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

/// Drives one connection as far as it can go without blocking.
/// `readable`/`writable` are the readiness bits epoll reported.
fn progress(
    c: &mut Conn,
    out: &[u8],
    back: &mut [u8],
    mut readable: bool,
    mut writable: bool,
    shared: &Shared,
    tally: &mut Tally,
) -> io::Result<()> {
    let len = out.len();
    loop {
        if c.sending {
            if !writable {
                return Ok(());
            }
            match c.stream.write(&out[c.done..]) {
                Ok(n) => {
                    c.done += n;
                    if c.done < len {
                        // Send buffer full: wait for an EPOLLOUT edge.
                        writable = false;
                        continue;
                    }
                    c.sending = false;
                    c.done = 0;
                    // The reply cannot be there yet: wait for its edge.
                    readable = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        } else {
            if !readable {
                return Ok(());
            }
            match c.stream.read(&mut back[c.done..len]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    c.done += n;
                    if c.done < len {
                        // A short read drained the socket.
                        readable = false;
                        continue;
                    }
                    let rtt = c.started.elapsed().as_nanos() as u64;
                    tally.total += 1;
                    match shared.phase() {
                        MEASURE => tally.hist.record(rtt),
                        STOP => return Ok(()),
                        _ => {}
                    }
                    c.sending = true;
                    c.done = 0;
                    c.started = Instant::now();
                    writable = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// [`progress`] for a TLS connection: `done` counts plaintext bytes.
#[allow(clippy::too_many_arguments)]
fn progress_tls(
    c: &mut Conn,
    out: &[u8],
    back: &mut [u8],
    raw: &mut [u8],
    mut readable: bool,
    mut writable: bool,
    shared: &Shared,
    tally: &mut Tally,
) -> io::Result<()> {
    let len = out.len();
    let Conn {
        stream,
        tls,
        sending,
        done,
        started,
        ..
    } = c;
    let tls = tls.as_mut().expect("a TLS connection");
    loop {
        if *sending {
            if *done == 0 {
                // Encrypted into records at once: the handshake is over.
                tls.writer().write_all(out)?;
                *done = len;
            }
            while tls.wants_write() {
                if !writable {
                    return Ok(());
                }
                match tls.write_tls(stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            *sending = false;
            *done = 0;
            readable = false;
        } else {
            if !readable {
                return Ok(());
            }
            let n = match stream.read(raw) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    readable = false;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n < raw.len() {
                // A short read drained the socket.
                readable = false;
            }
            let mut rest = &raw[..n];
            while !rest.is_empty() {
                tls.read_tls(&mut rest)?;
                tls.process_new_packets().map_err(io::Error::other)?;
                loop {
                    match tls.reader().read(&mut back[*done..len]) {
                        Ok(0) if *done < len => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(0) => break,
                        Ok(k) => *done += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            if *done < len {
                continue;
            }
            let rtt = started.elapsed().as_nanos() as u64;
            tally.total += 1;
            match shared.phase() {
                MEASURE => tally.hist.record(rtt),
                STOP => return Ok(()),
                _ => {}
            }
            *sending = true;
            *done = 0;
            *started = Instant::now();
            writable = true;
        }
    }
}

/// Runs `count` ping-pong connections on the calling thread until the stop.
pub fn run(
    addr: SocketAddr,
    count: usize,
    payload: usize,
    tls: Option<&Arc<rustls::ClientConfig>>,
    shared: &Shared,
) -> Tally {
    let mut tally = Tally::default();
    let ep = match Epoll::new() {
        Ok(ep) => ep,
        Err(e) => {
            shared.error("epoll_create1", e);
            return tally;
        }
    };
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let setup = TcpStream::connect(addr).and_then(|mut s| {
            s.set_nodelay(true)?;
            let conn = tls
                .map(|config| crate::tls::handshake(&mut s, config))
                .transpose()?;
            s.set_nonblocking(true)?;
            ep.add(s.as_raw_fd(), i as u64)?;
            Ok((s, conn))
        });
        match setup {
            Ok((stream, tls)) => {
                shared
                    .connected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                conns.push(Conn {
                    stream,
                    tls,
                    sending: true,
                    done: 0,
                    started: Instant::now(),
                    alive: true,
                });
            }
            Err(e) => {
                shared.error("connect", e);
                return tally;
            }
        }
    }
    let out = vec![0xa5u8; payload];
    let mut back = vec![0u8; payload];
    let mut raw = vec![0u8; if tls.is_some() { RAW_SIZE } else { 0 }];
    let mut drive = |c: &mut Conn, readable: bool, writable: bool, tally: &mut Tally| {
        if c.tls.is_some() {
            progress_tls(
                c, &out, &mut back, &mut raw, readable, writable, shared, tally,
            )
        } else {
            progress(c, &out, &mut back, readable, writable, shared, tally)
        }
    };
    let mut alive = count;
    for c in conns.iter_mut() {
        c.started = Instant::now();
        if let Err(e) = drive(c, false, true, &mut tally) {
            shared.error("write", e);
            c.alive = false;
            alive -= 1;
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    while alive > 0 && shared.phase() != STOP {
        let n = match ep.wait(&mut events, 50) {
            Ok(n) => n,
            Err(e) => {
                shared.error("epoll_wait", e);
                break;
            }
        };
        for ev in &events[..n] {
            let bits = ev.events as i32;
            let c = &mut conns[ev.u64 as usize];
            if !c.alive {
                continue;
            }
            let hup = bits & (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) != 0;
            let readable = hup || bits & libc::EPOLLIN != 0;
            let writable = hup || bits & libc::EPOLLOUT != 0;
            if let Err(e) = drive(c, readable, writable, &mut tally) {
                shared.error(if c.sending { "write" } else { "read" }, e);
                c.alive = false;
                alive -= 1;
            }
        }
    }
    tally
}
