//! The Slow Poetry Server, blocking edition (`blocking-server/slowpoetry.py` of Dave
//! Peticolas' series, Part 2): one client at a time, `--num-bytes` bytes every `--delay`
//! seconds, each send and each sleep blocking the whole program. A second client waits
//! until the first has its poem: the synchronous model the tutorial starts from.
//!
//! `cargo run -p torsion-examples --bin blocking-server -- --port 10000 poems/science.txt`
//!
//! The poem file's bytes are sent as they are (the tutorial's Python 3 version decodes and
//! re-encodes them as UTF-8; a Latin-1 poem goes through here untouched).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use torsion::Failure;
use torsion_examples::delay::parse_seconds;
use torsion_examples::program;

/// This is the Slow Poetry Server, blocking edition: it sends the poem in FILE to one
/// client at a time, NUM_BYTES bytes at a time, sleeping DELAY seconds in between.
#[derive(Parser)]
#[command(version, arg_required_else_help = true)]
struct Args {
    /// The port to listen on [default: a random available port]
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The interface to listen on
    #[arg(long, default_value = "127.0.0.1")]
    iface: IpAddr,
    /// The number of seconds between sends
    #[arg(long, default_value_t = 0.7, value_parser = parse_seconds)]
    delay: f64,
    /// The number of bytes to send at a time
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    num_bytes: u64,
    /// The poem to serve
    #[arg(value_name = "FILE")]
    poetry_file: PathBuf,
}

/// Sends the poem slowly down the socket, then closes it (the tutorial's `send_poetry`).
/// A client that goes away ends the transfer; the server goes on.
fn send_poetry(mut sock: TcpStream, poetry_file: &Path, num_bytes: u64, delay: Duration) {
    let mut inputf = match File::open(poetry_file) {
        Ok(file) => file.take(u64::MAX),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", poetry_file.display());
            return;
        }
    };
    let mut chunk = Vec::new();
    loop {
        chunk.clear();
        inputf.set_limit(num_bytes);
        if let Err(e) = inputf.read_to_end(&mut chunk) {
            eprintln!("error: cannot read {}: {e}", poetry_file.display());
            return;
        }
        if chunk.is_empty() {
            return; // no more poetry :( (dropping the socket closes it)
        }
        println!("Sending {} bytes", chunk.len());
        // This is a blocking call.
        if sock.write_all(&chunk).is_err() {
            return;
        }
        std::thread::sleep(delay);
    }
}

/// Accepts one client at a time, forever (the tutorial's `serve`).
fn serve(listener: &TcpListener, args: &Args) -> io::Result<()> {
    let delay = Duration::from_secs_f64(args.delay);
    loop {
        let (sock, addr) = listener.accept()?;
        println!("Somebody at {addr} wants poetry!");
        send_poetry(sock, &args.poetry_file, args.num_bytes, delay);
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    if !args.poetry_file.is_file() {
        return Err(Failure::msg(format!(
            "no such file: {}",
            args.poetry_file.display()
        )));
    }
    // std sets SO_REUSEADDR on Unix listeners, as the tutorial does by hand.
    let listener = TcpListener::bind(SocketAddr::new(args.iface, args.port)).map_err(|e| {
        Failure::msg(format!(
            "cannot listen on {}:{}: {e}",
            args.iface, args.port
        ))
    })?;
    let port = listener.local_addr().map_err(Failure::new)?.port();
    println!("Serving {} on port {port}.", args.poetry_file.display());
    serve(&listener, args).map_err(|e| Failure::msg(format!("cannot accept a client: {e}")))
}

fn main() -> ExitCode {
    program::exit(run(&Args::parse()))
}
