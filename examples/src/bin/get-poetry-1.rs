//! Poetry client 1.0 (`twisted-client-1/get-poetry.py` of Dave Peticolas' series, Part 4):
//! the asynchronous client with torsion's reactor in place of the hand-written `poll`
//! loop. Each `PoetrySocket` is a non-blocking socket the reactor watches with
//! `add_reader` (Twisted's `IReactorFDSet.addReader`); the reactor calls its `do_read`
//! when data waits, and its `connection_lost` once it is done. The last socket to finish
//! stops the reactor.
//!
//! ```text
//! cargo run -p torsion-cli -- poetry --listen tcp:10001 --num-bytes 30 --delay 0.1 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 --num-bytes 30 --delay 0.1 poems/tyger.txt
//! cargo run -p torsion-examples --bin get-poetry-1 -- 10001 10002
//! ```

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use clap::Parser;
use torsion::error::{ConnectionDone, ConnectionLost};
use torsion::reactor::{FileDescriptor, ReadDescriptor};
use torsion::{Failure, Reactor};
use torsion_examples::address::ServerAddress;
use torsion_examples::program;
use torsion_examples::timedelta::format_elapsed;

/// This is the Get Poetry Now! client, Twisted version 1.0: it downloads a poem from every
/// server at once, the reactor telling it which socket has data.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The poetry servers, each as PORT or HOST:PORT (the host is 127.0.0.1 by default)
    #[arg(value_name = "[HOST:]PORT", required = true)]
    servers: Vec<ServerAddress>,
}

/// One download: a non-blocking socket and the poem so far (the tutorial's
/// `PoetrySocket`, an `IReadDescriptor`).
struct PoetrySocket {
    task_num: usize,
    address: ServerAddress,
    /// The socket; `None` once closed.
    sock: RefCell<Option<TcpStream>>,
    poem: RefCell<Vec<u8>>,
    reactor: Reactor,
    /// The descriptors of every `PoetrySocket`, to tell ours apart among the reactor's
    /// readers (the tutorial's `isinstance(reader, PoetrySocket)`).
    ours: Rc<RefCell<HashSet<RawFd>>>,
}

impl PoetrySocket {
    /// Connects to `address` and tells the reactor to watch the socket for reading.
    fn new(
        task_num: usize,
        address: ServerAddress,
        reactor: &Reactor,
        ours: &Rc<RefCell<HashSet<RawFd>>>,
    ) -> Result<Rc<PoetrySocket>, Failure> {
        let sock = TcpStream::connect((address.host.as_str(), address.port))
            .map_err(|e| Failure::msg(format!("cannot connect to {address}: {e}")))?;
        sock.set_nonblocking(true).map_err(Failure::new)?;
        ours.borrow_mut().insert(sock.as_raw_fd());
        let poetry = Rc::new(PoetrySocket {
            task_num,
            address,
            sock: RefCell::new(Some(sock)),
            poem: RefCell::new(Vec::new()),
            reactor: reactor.clone(),
            ours: ours.clone(),
        });
        // Tell the reactor to monitor this socket for reading.
        reactor
            .add_reader(poetry.clone())
            .map_err(|e| Failure::msg(format!("cannot watch the socket: {e}")))?;
        Ok(poetry)
    }
}

impl FileDescriptor for PoetrySocket {
    fn fileno(&self) -> RawFd {
        self.sock
            .borrow()
            .as_ref()
            .map_or(-1, |sock| sock.as_raw_fd())
    }

    fn connection_lost(&self, reason: Failure) {
        if !reason.check::<ConnectionDone>() {
            eprintln!("Task {}: the connection was lost: {reason}", self.task_num);
        }
        // The reactor has stopped watching the socket already; close it.
        let sock = self.sock.borrow_mut().take();
        if let Some(sock) = sock {
            self.ours.borrow_mut().remove(&sock.as_raw_fd());
        }
        // Are any poetry sockets left?
        let ours = self.ours.borrow();
        if self.reactor.readers().iter().any(|fd| ours.contains(fd)) {
            return;
        }
        let _ = self.reactor.stop(); // no more poetry
    }

    fn log_prefix(&self) -> String {
        "poetry".into()
    }
}

impl ReadDescriptor for PoetrySocket {
    fn do_read(&self) -> Result<(), Failure> {
        let mut chunks = Vec::new();
        {
            let sock = self.sock.borrow();
            let Some(sock) = sock.as_ref() else {
                return Err(ConnectionDone.into());
            };
            let mut buf = [0u8; 1024];
            loop {
                match (&*sock).read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => chunks.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return Err(ConnectionLost.into()),
                }
            }
        }
        if chunks.is_empty() {
            println!("Task {} finished", self.task_num);
            return Err(ConnectionDone.into());
        }
        println!(
            "Task {}: got {} bytes of poetry from {}",
            self.task_num,
            chunks.len(),
            self.address
        );
        self.poem.borrow_mut().extend_from_slice(&chunks);
        Ok(())
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let start = Instant::now();
    let reactor = program::reactor()?;
    let ours = Rc::new(RefCell::new(HashSet::new()));
    let sockets = args
        .servers
        .iter()
        .enumerate()
        .map(|(i, address)| PoetrySocket::new(i + 1, address.clone(), &reactor, &ours))
        .collect::<Result<Vec<_>, Failure>>()?;
    reactor.run()?;
    let elapsed = start.elapsed();
    for socket in &sockets {
        println!(
            "Task {}: {} bytes of poetry",
            socket.task_num,
            socket.poem.borrow().len()
        );
    }
    println!(
        "Got {} poems in {}",
        args.servers.len(),
        format_elapsed(elapsed)
    );
    Ok(())
}

fn main() -> ExitCode {
    program::exit(run(Args::parse()))
}
