//! A TLS echo server: every byte received over TLS is sent back, the protocol being the
//! plain echo of `echo_server.rs` under `Reactor::listen_tls`. Used by the TLS benchmark
//! (`bench/run_tls.sh`) beside tokio-rustls's.
//!
//! The certificate and key are read from PEM files; `--no-resumption` turns session
//! resumption off (no session cache, no TLS 1.3 tickets).
//!
//! Run with `cargo run --release -p torsion --example tls_echo_server -- 8443 cert.pem
//! key.pem [--no-resumption]`.

use std::rc::Rc;

use torsion::net::Transport;
use torsion::protocol::Protocol;
use torsion::reactor::backend::BackendKind;
use torsion::tls::{Identity, ServerConfig};
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let resumption = !args.iter().any(|a| a == "--no-resumption");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [port, cert, key] = positional.as_slice() else {
        return Err(Failure::msg(
            "usage: tls_echo_server PORT CERT_PEM KEY_PEM [--no-resumption]",
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| Failure::msg(format!("not a port number: {port}")))?;
    let config = ServerConfig::builder(Identity::from_pem_files(cert, key)?)
        .session_resumption(resumption)
        .build()?;
    let reactor = Reactor::builder()
        .install_signal_handlers(true)
        .backend(BackendKind::from_env()?.unwrap_or(BackendKind::Epoll))
        .build()?;
    let options = torsion::net::tcp::ListenOptions {
        backlog: 1024,
        ..Default::default()
    };
    let listening = reactor.listen_tls_with(port, Rc::new(Echo::default), &config, options)?;
    eprintln!(
        "TLS echo server on {} (session resumption {})",
        listening.host(),
        if resumption { "on" } else { "off" }
    );
    reactor.run()
}
