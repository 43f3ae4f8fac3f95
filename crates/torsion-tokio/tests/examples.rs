//! The examples end to end, through their library functions: reqwest fetching from a
//! torsion-web site, the WebSocket echo against Python's `websockets` client and against
//! tokio-tungstenite's own client over the adapter, and the `#[tokio::main]` program.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use torsion::Failure;
use torsion::endpoints::TcpClientEndpoint;

#[path = "../examples/reqwest_fetch.rs"]
#[allow(dead_code)]
mod reqwest_fetch;

#[path = "../examples/websocket_echo.rs"]
#[allow(dead_code)]
mod websocket_echo;

#[path = "../examples/tokio_main.rs"]
#[allow(dead_code)]
mod tokio_main;

#[test]
fn reqwest_fetches_from_a_torsion_web_site() {
    common::run(20.0, |reactor| async move {
        let body = reqwest_fetch::fetch_from_local_site(&reactor).await?;
        assert_eq!(body, reqwest_fetch::POEM);
        Ok(())
    })
    .unwrap();
}

#[test]
fn a_tokio_main_program_drives_a_reactor_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(tokio_main::run()).unwrap();
    assert_eq!(
        seen,
        tokio_main::Seen {
            echoed: "hello, torsion".into(),
            answer: 210,
        }
    );
}

#[test]
fn websocket_echo_answers_tokio_tungstenites_client_over_the_adapter() {
    common::run(20.0, |reactor| async move {
        let port = websocket_echo::listen(&reactor, 0)?;
        let addr = port.host().port().unwrap_or(0);
        let endpoint = TcpClientEndpoint::new(&reactor, "127.0.0.1", addr);
        let stream = torsion_tokio::connect_stream(&endpoint).await?;
        let url = format!("ws://127.0.0.1:{addr}/echo");
        let (mut ws, _response) = tokio_tungstenite::client_async(url, stream).await?;
        for i in 0..200u32 {
            let message = if i % 2 == 0 {
                Message::text(format!("hello {i}"))
            } else {
                Message::binary(vec![i as u8; (i as usize) * 37])
            };
            ws.send(message.clone()).await?;
            let echoed = ws
                .next()
                .await
                .ok_or_else(|| Failure::msg("the server closed early"))??;
            assert_eq!(echoed, message, "message {i}");
        }
        ws.close(None).await?;
        // The server answers the close; then the stream ends.
        while let Some(message) = ws.next().await {
            if message.is_err() {
                break;
            }
        }
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
}

/// A Python that can import `websockets`, or `None` after saying the test is skipped (a
/// panic when `TORSION_REQUIRE_INTEROP=1`).
fn websockets_python() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("TORSION_INTEROP_PYTHON") {
        candidates.push(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = std::path::Path::new(&home).join(".cache/torsion-interop-venv/bin/python");
        candidates.push(venv.to_string_lossy().into_owned());
    }
    candidates.push("/work/venv-twisted/bin/python".into());
    candidates.push("python3".into());
    let found = candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import websockets.sync.client"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        let install = "eval \"$(tests/interop/setup.sh)\", or pip install websockets";
        if std::env::var("TORSION_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
            panic!("TORSION_REQUIRE_INTEROP=1 and no Python has `websockets`: {install}");
        }
        eprintln!("skipped: no Python with the `websockets` module ({install})");
    }
    found
}

#[test]
fn websocket_echo_answers_pythons_websockets_client() {
    let Some(python) = websockets_python() else {
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop/websocket_client.py");
    common::run(30.0, move |reactor| async move {
        let port = websocket_echo::listen(&reactor, 0)?;
        let addr = port.host().port().unwrap_or(0);
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(addr.to_string())
            .arg("100")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > Duration::from_secs(25) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::msg("the Python client did not finish in 25 s"));
            }
            common::sleep(&reactor, 0.02).await?;
        };
        let output = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            status.success() && stdout.trim() == "ok 101",
            "the Python client failed ({status}):\n{stdout}\n{stderr}"
        );
        port.stop_listening().await?;
        Ok(())
    })
    .unwrap();
}
