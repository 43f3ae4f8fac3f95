//! An echo server: every byte received is sent back (Twisted's `echoserv.py`). Used by the
//! network benchmark (`bench/run_network.sh`) beside tokio's and Twisted's.
//!
//! Run with `cargo run --release -p torsion --example echo_server -- 8000`.

use std::rc::Rc;

use torsion::net::Transport;
use torsion::protocol::Protocol;
use torsion::reactor::backend::BackendKind;
use torsion::{Failure, Reactor};

#[derive(Default)]
struct Echo {
    transport: Option<Transport>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport.set_tcp_nodelay(true);
        // A peer that sends and never reads must not make our buffer grow without bound.
        transport.throttle_reading(true);
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(transport) = &self.transport {
            transport.write(data);
        }
    }
}

fn main() -> Result<(), Failure> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| Failure::msg(format!("not a port number: {arg}")))?,
        None => 8000,
    };
    let reactor = Reactor::builder()
        .install_signal_handlers(true)
        .backend(BackendKind::from_env()?.unwrap_or(BackendKind::Epoll))
        .build()?;
    let options = torsion::net::tcp::ListenOptions {
        backlog: 1024,
        ..Default::default()
    };
    let listening = reactor.listen_tcp_with(port, Rc::new(Echo::default), options)?;
    eprintln!("echo server on {}", listening.host());
    reactor.run()
}
