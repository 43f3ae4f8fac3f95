//! A tokio program (`#[tokio::main]`) that runs a torsion service on a reactor thread and
//! calls into it (Twisted: `crochet`'s `run_in_reactor` from a threaded program).
//!
//! The reactor thread serves a torsion echo protocol on 127.0.0.1; the tokio side talks to
//! it with `tokio::net::TcpStream`, asks the reactor for a value through
//! [`call_from_tokio`], and stops it cleanly. Run it with
//! `cargo run -p torsion-tokio --example tokio_main`.
//!
//! Invariant: the reactor and everything on it stay on the reactor thread; tokio code
//! holds only its `ReactorHandle`.

use std::rc::Rc;
use std::sync::mpsc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use torsion::net::Transport;
use torsion::net::tcp::ListenOptions;
use torsion::protocol::Protocol;
use torsion::task::defer_later;
use torsion::{Failure, Reactor};
use torsion_tokio::{ReactorThread, call_from_tokio};

/// Twisted's `Echo` protocol.
#[derive(Default)]
struct Echo(Option<Transport>);

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        self.0 = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(transport) = &self.0 {
            transport.write(data);
        }
    }
}

/// What the tokio side saw: the echo, and the reactor's answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    /// What the torsion echo server sent back.
    pub echoed: String,
    /// What the reactor answered through `call_from_tokio`.
    pub answer: u64,
}

/// Starts the reactor thread with the echo service, uses it from tokio, and stops it.
pub async fn run() -> Result<Seen, Failure> {
    let (port_tx, port_rx) = mpsc::channel();
    let reactor = ReactorThread::start_with(Reactor::new, move |reactor| {
        let options = ListenOptions {
            interface: [127, 0, 0, 1].into(),
            ..Default::default()
        };
        let port = reactor.listen_tcp_with(0, Rc::new(Echo::default), options)?;
        let _ = port_tx.send(port.host().port().unwrap_or(0));
        Ok(())
    })?;
    let port = port_rx
        .recv()
        .map_err(|_| Failure::msg("the reactor thread did not say its port"))?;

    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    conn.write_all(b"hello, torsion").await?;
    let mut buf = [0u8; 14];
    conn.read_exact(&mut buf).await?;
    let echoed = String::from_utf8_lossy(&buf).into_owned();

    // A Deferred that fires later on the reactor, awaited from tokio.
    let answer = call_from_tokio(reactor.handle(), |r: &Reactor| {
        defer_later(r, 0.01, || Ok((1..=20u64).sum::<u64>()))
    })
    .await?;

    reactor.stop().await?;
    Ok(Seen { echoed, answer })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seen = run().await.map_err(|f| f.into_error())?;
    println!(
        "echoed {:?}; the reactor answered {}",
        seen.echoed, seen.answer
    );
    Ok(())
}
