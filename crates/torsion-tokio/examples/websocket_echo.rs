//! A WebSocket echo server on torsion's TCP, written with `tokio-tungstenite` over the
//! [`TokioStream`] adapter (Twisted: autobahn's `WebSocketServerProtocol` echo example).
//!
//! Run it with `cargo run -p torsion-tokio --example websocket_echo -- 9000` (port 0, the
//! default, lets the kernel choose); it prints `listening on 127.0.0.1:PORT` and echoes
//! every text and binary message until Ctrl-C. The Python peer in
//! `tests/interop/websocket_client.py` talks to it.
//!
//! Invariant: each connection is one task on the reactor's thread; the WebSocket codec
//! only sees tokio's I/O traits.

use std::process::ExitCode;

use futures_util::{SinkExt, StreamExt};
use torsion::net::Port;
use torsion::net::tcp::ListenOptions;
use torsion::{Failure, Reactor};
use torsion_tokio::{TokioStream, serve};

/// Echoes one WebSocket connection's messages until the client closes it.
pub async fn echo_connection(stream: TokioStream) -> Result<(), Failure> {
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        } else if message.is_close() {
            // tungstenite answers the close itself; the stream ends after it.
            break;
        }
    }
    Ok(())
}

/// Listens for WebSocket connections on 127.0.0.1:`port`.
pub fn listen(reactor: &Reactor, port: u16) -> Result<Port, Failure> {
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    };
    reactor.listen_tcp_with(port, serve(echo_connection), options)
}

fn main() -> ExitCode {
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        None => 0,
        Some(Ok(port)) => port,
        Some(Err(e)) => {
            eprintln!("usage: websocket_echo [PORT]: {e}");
            return ExitCode::FAILURE;
        }
    };
    torsion::task::react(move |reactor| async move {
        let listening = listen(&reactor, port)?;
        println!("listening on {}", listening.host());
        reactor.until_shutdown().await?;
        Ok(())
    })
}
