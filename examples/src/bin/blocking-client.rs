//! The Get Poetry Now! client, blocking edition (`blocking-client/get-poetry.py` of Dave
//! Peticolas' series, Part 2): it downloads the poems one after the other, each `read`
//! blocking until the server sends more, so three slow servers take three times as long
//! as one.
//!
//! Start some slow servers, then the client:
//!
//! ```text
//! cargo run -p torsion-cli -- poetry --listen tcp:10001 --num-bytes 30 --delay 0.1 poems/science.txt
//! cargo run -p torsion-cli -- poetry --listen tcp:10002 --num-bytes 30 --delay 0.1 poems/tyger.txt
//! cargo run -p torsion-examples --bin blocking-client -- 10001 10002
//! ```
//!
//! (or `blocking-server`s). It prints what it got from each server and how long it took;
//! poems are counted in bytes, never decoded.

use std::io::Read;
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use torsion::Failure;
use torsion_examples::address::ServerAddress;
use torsion_examples::program;
use torsion_examples::timedelta::format_elapsed;

/// This is the Get Poetry Now! client, blocking edition: it downloads a poem from each
/// server in turn.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The poetry servers, each as PORT or HOST:PORT (the host is 127.0.0.1 by default)
    #[arg(value_name = "[HOST:]PORT", required = true)]
    servers: Vec<ServerAddress>,
}

/// Downloads a poem from `address` (the tutorial's `get_poetry`).
fn get_poetry(address: &ServerAddress) -> Result<Vec<u8>, Failure> {
    let mut sock = TcpStream::connect((address.host.as_str(), address.port))
        .map_err(|e| Failure::msg(format!("cannot connect to {address}: {e}")))?;
    let mut poem = Vec::new();
    let mut data = [0u8; 1024];
    loop {
        // This is the blocking call of this synchronous program: `read` waits for an
        // indeterminate time for the server to send more bytes.
        match sock.read(&mut data) {
            Ok(0) => return Ok(poem),
            Ok(n) => poem.extend_from_slice(&data[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::msg(format!("cannot read from {address}: {e}"))),
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let mut elapsed = Duration::ZERO;
    for (i, address) in args.servers.iter().enumerate() {
        let task = i + 1;
        println!("Task {task}: get poetry from: {address}");
        let start = Instant::now();
        let poem = get_poetry(address)?;
        let time = start.elapsed();
        println!(
            "Task {task}: got {} bytes of poetry from {address} in {}",
            poem.len(),
            format_elapsed(time)
        );
        elapsed += time;
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
