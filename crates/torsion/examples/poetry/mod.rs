//! The pieces the poetry examples share (Dave Peticolas' "An Introduction to Asynchronous
//! Programming and Twisted"): the poetry server and client, the transform service and its
//! client, and the caching proxy. Each example includes this module with
//! `#[path = "poetry/mod.rs"] mod poetry;`, and `tests/tutorial_programs.rs` includes it too,
//! so the tests run the examples' own logic.
//!
//! Poems are bytes from end to end, as in Twisted: the server sends a file's bytes as they
//! are, the clients and the proxy pass them on untouched, the transforms change ASCII
//! letters only, and the clients print them with [`print_poem`], without decoding.
//!
//! `poems/science.txt` at the top of the repository is a poem to serve; `poems/nachtlied.latin1.txt` is one in
//! Latin-1, not UTF-8 (Goethe's "Wandrers Nachtlied"), to show that nothing decodes it.

// Each example uses only some of these pieces.
#![allow(dead_code)]

pub mod client;
pub mod proxy;
pub mod server;
pub mod transform;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

use torsion::Failure;

/// A server's command line: `[--port P] [--iface I] ARG...` (the tutorials' `optparse`
/// options). The port defaults to 0 (any free port, printed at start), the interface to
/// 127.0.0.1.
pub struct ServerArgs {
    pub port: u16,
    pub iface: IpAddr,
    /// The positional arguments, in order.
    pub rest: Vec<String>,
}

impl ServerArgs {
    /// Parses `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<ServerArgs, Failure> {
        let mut parsed = ServerArgs {
            port: 0,
            iface: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rest: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| Failure::msg(format!("{name} needs a value")))
            };
            match arg.as_str() {
                "--port" => parsed.port = parse_port(&value("--port")?)?,
                "--iface" => {
                    let iface = value("--iface")?;
                    parsed.iface = iface
                        .parse()
                        .map_err(|_| Failure::msg(format!("not an IP address: {iface}")))?;
                }
                _ => parsed.rest.push(arg),
            }
        }
        Ok(parsed)
    }
}

/// Prints a poem's bytes as they are, then a newline: no decoding, so a poem in any
/// encoding reaches the terminal (or a pipe) intact.
pub fn print_poem(poem: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(poem)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(Failure::new)
}

/// Parses a client's `[host:]port` argument; the host defaults to 127.0.0.1 (the tutorials'
/// `parse_args`).
pub fn parse_address(arg: &str) -> Result<(String, u16), Failure> {
    match arg.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_string(), parse_port(port)?)),
        None => Ok(("127.0.0.1".to_string(), parse_port(arg)?)),
    }
}

fn parse_port(arg: &str) -> Result<u16, Failure> {
    arg.parse()
        .map_err(|_| Failure::msg(format!("not a port number: {arg}")))
}
