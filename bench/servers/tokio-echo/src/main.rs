//! Reference echo server for `bench/run_network.sh`: a tokio current_thread
//! runtime (or a multi-thread one with THREADS workers), one task per connection
//! reading into a 16 KiB buffer and writing back what it read. Accepted sockets
//! get TCP_NODELAY.
//!
//! Usage: `tokio-echo PORT [THREADS]` (listens on 127.0.0.1:PORT).

use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BUF_SIZE: usize = 16 * 1024;

async fn echo(mut stream: TcpStream) {
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

async fn serve(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(echo(stream));
            }
            // Running out of descriptors or a connection reset before accept
            // must not stop the server; back off briefly instead of spinning.
            Err(e) => {
                eprintln!("tokio-echo: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn main() -> ExitCode {
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: tokio-echo PORT [THREADS]");
            return ExitCode::from(2);
        }
    };
    let threads = match std::env::args().nth(2).map(|t| t.parse::<usize>()) {
        None => None,
        Some(Ok(threads)) if threads > 0 => Some(threads),
        Some(_) => {
            eprintln!("usage: tokio-echo PORT [THREADS]");
            return ExitCode::from(2);
        }
    };
    let mut builder = match threads {
        None => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    let rt = builder
        .enable_io()
        .enable_time()
        .build()
        .expect("building the tokio runtime");
    match rt.block_on(serve(port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
