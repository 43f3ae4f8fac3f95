//! The Get Poetry Now! client, asynchronous edition (`async-client/get-poetry.py` of Dave
//! Peticolas' series, Part 2): one thread, every socket non-blocking, and one loop that
//! waits until some socket has data, reads what is there from each ready socket, and goes
//! back to waiting. That loop is the reactor pattern written by hand: where the tutorial
//! calls `select`, this calls `poll(2)`, the system call torsion's poll backend uses.
//!
//! ```text
//! cargo run -p torsion-cli -- poetry --listen tcp:10001 --num-bytes 30 --delay 0.1 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 --num-bytes 30 --delay 0.1 poems/tyger.txt
//! cargo run -p torsion-examples --bin async-client -- 10001 10002
//! ```
//!
//! The downloads interleave, so the whole takes as long as the slowest one. Poems are
//! counted in bytes, never decoded.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use rustix::event::{PollFd, PollFlags, poll};
use torsion::Failure;
use torsion_examples::address::ServerAddress;
use torsion_examples::program;
use torsion_examples::timedelta::format_elapsed;

/// This is the Get Poetry Now! client, asynchronous edition: it downloads a poem from
/// every server at once, in one thread.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The poetry servers, each as PORT or HOST:PORT (the host is 127.0.0.1 by default)
    #[arg(value_name = "[HOST:]PORT", required = true)]
    servers: Vec<ServerAddress>,
}

/// Connects to `address` and returns a non-blocking socket (the tutorial's `connect`).
fn connect(address: &ServerAddress) -> Result<TcpStream, Failure> {
    let sock = TcpStream::connect((address.host.as_str(), address.port))
        .map_err(|e| Failure::msg(format!("cannot connect to {address}: {e}")))?;
    sock.set_nonblocking(true).map_err(Failure::new)?;
    Ok(sock)
}

/// Downloads poetry from all the sockets at once (the tutorial's `get_poetry`): the poems,
/// in the sockets' order.
fn get_poetry(sockets: &[(TcpStream, &ServerAddress)]) -> Result<Vec<Vec<u8>>, Failure> {
    let mut poems = vec![Vec::new(); sockets.len()];
    // The indices of the sockets still open.
    let mut open: Vec<usize> = (0..sockets.len()).collect();

    // We go around this loop until we have all the poetry from all the sockets: this is
    // the reactor loop.
    while !open.is_empty() {
        // This call blocks until one or more of the sockets is ready to read.
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .map(|&i| PollFd::new(&sockets[i].0, PollFlags::IN))
            .collect();
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Failure::msg(format!("poll failed: {e}"))),
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&open)
            .filter(|(fd, _)| !fd.revents().is_empty())
            .map(|(_, &i)| i)
            .collect();
        drop(fds);

        for i in ready {
            let (sock, address) = &sockets[i];
            let task_num = i + 1;
            // Read what there is: until the socket would block, or the poem ends.
            let mut data = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match (&*sock).read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                    // Reading on would block: go on to the next socket.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Failure::msg(format!("cannot read from {address}: {e}")));
                    }
                }
            }
            if data.is_empty() {
                open.retain(|&j| j != i);
                println!("Task {task_num} finished");
            } else {
                println!(
                    "Task {task_num}: got {} bytes of poetry from {address}",
                    data.len()
                );
            }
            poems[i].extend_from_slice(&data);
        }
    }
    Ok(poems)
}

fn run(args: Args) -> Result<(), Failure> {
    let start = Instant::now();
    let sockets = args
        .servers
        .iter()
        .map(|address| Ok((connect(address)?, address)))
        .collect::<Result<Vec<_>, Failure>>()?;
    let poems = get_poetry(&sockets)?;
    let elapsed = start.elapsed();
    for (i, poem) in poems.iter().enumerate() {
        println!("Task {}: {} bytes of poetry", i + 1, poem.len());
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
