//! Reference TLS echo server for `bench/run_tls.sh`: tokio-rustls on a tokio
//! current_thread runtime, one task per connection reading into a 64 KiB buffer
//! and writing back what it read. Accepted sockets get TCP_NODELAY.
//!
//! The rustls configuration is built the way torsion's
//! `ServerConfig::builder(identity).session_resumption(on).build()` builds its
//! own: the `ring` provider named explicitly, rustls's safe default protocol
//! versions (TLS 1.2 and 1.3), no client certificates, one certificate, and
//! with resumption a ring `Ticketer` (plus rustls's default 256-entry session
//! cache); without it no session storage and no TLS 1.3 tickets.
//!
//! Usage: `tokio-tls-echo PORT CERT_PEM KEY_PEM [--no-resumption]` (listens on
//! 127.0.0.1:PORT).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const BUF_SIZE: usize = 64 * 1024;

fn server_config(cert: &str, key: &str, resumption: bool) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    if resumption {
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    } else {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

async fn echo(acceptor: TlsAcceptor, stream: TcpStream) {
    let Ok(mut stream) = acceptor.accept(stream).await else {
        return;
    };
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn serve(port: u16, acceptor: TlsAcceptor) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(echo(acceptor.clone(), stream));
            }
            // Running out of descriptors or a connection reset before accept
            // must not stop the server; back off briefly instead of spinning.
            Err(e) => {
                eprintln!("tokio-tls-echo: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let resumption = !args.iter().any(|a| a == "--no-resumption");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (port, cert, key) = match positional.as_slice() {
        [port, cert, key] if port.parse::<u16>().is_ok() => {
            (port.parse::<u16>().unwrap_or_default(), *cert, *key)
        }
        _ => {
            eprintln!("usage: tokio-tls-echo PORT CERT_PEM KEY_PEM [--no-resumption]");
            return ExitCode::from(2);
        }
    };
    let config = match server_config(cert, key, resumption) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tokio-tls-echo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("building the tokio runtime");
    match rt.block_on(serve(port, acceptor)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio-tls-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
