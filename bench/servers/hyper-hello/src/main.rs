//! Reference HTTP server for `bench/run_http.sh`: hyper 1.x's HTTP/1.1 server on a tokio
//! current_thread runtime, one task per connection, answering `hello world` (text/plain,
//! with Content-Length) to any request. Keep-alive is on, and so is pipeline flushing
//! (`http1::Builder::pipeline_flush`): the responses to a pipelined burst are written
//! together. Accepted sockets get TCP_NODELAY.
//!
//! Usage: `hyper-hello PORT` (listens on 127.0.0.1:PORT).

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello world";

async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(BODY.len()));
    Ok(response)
}

async fn serve(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).pipeline_flush(true);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let connection = builder.serve_connection(TokioIo::new(stream), service_fn(hello));
                tokio::spawn(async move {
                    // A client that goes away mid-request is not the server's error.
                    let _ = connection.await;
                });
            }
            // Running out of descriptors or a connection reset before accept must not
            // stop the server; back off briefly instead of spinning.
            Err(e) => {
                eprintln!("hyper-hello: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn main() -> ExitCode {
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: hyper-hello PORT");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("building the tokio runtime");
    match rt.block_on(serve(port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper-hello: {e}");
            ExitCode::FAILURE
        }
    }
}
