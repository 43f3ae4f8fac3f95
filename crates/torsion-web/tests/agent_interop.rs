//! The Agent and `get_page` against twisted.web (real Twisted from PyPI, the repository's
//! `tests/interop/twisted_web_server.py`):
//! fixed and chunked bodies, keep-alive, request bodies, gzip through
//! `EncodingResourceWrapper`, redirects, and a `Connection: close` response.
//!
//! Needs a Python with Twisted in `TORSION_INTEROP_PYTHON`; skipped with a note without
//! it, and failing instead when `TORSION_REQUIRE_INTEROP` is set (as CI does).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use http::{HeaderMap, Method};
use torsion::Failure;
use torsion_web::agent::{
    Agent, AgentError, Body, ContentDecoderAgent, FileBodyProducer, HttpClient, RedirectAgent,
};

mod common;
use common::agent::run;

/// The Twisted server, killed when dropped.
struct TwistedServer {
    child: Child,
    port: u16,
}

impl Drop for TwistedServer {
    fn drop(&mut self) {
        // Closing its stdin stops it; kill it in case it does not.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the Twisted server, or `None` (with a note) when no Python with Twisted is given.
fn twisted_server() -> Option<TwistedServer> {
    let Some(python) = std::env::var_os("TORSION_INTEROP_PYTHON") else {
        assert!(
            std::env::var_os("TORSION_REQUIRE_INTEROP").is_none(),
            "a Python with Twisted is required (TORSION_REQUIRE_INTEROP is set): set TORSION_INTEROP_PYTHON"
        );
        eprintln!("skipped: no Python with Twisted (set TORSION_INTEROP_PYTHON)");
        return None;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/twisted_web_server.py"
    );
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python:?}: {e}"));
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the Twisted server did not start (it printed {line:?})"));
    Some(TwistedServer { child, port })
}

async fn text(
    agent: &impl HttpClient,
    method: Method,
    url: &str,
    body: Body,
) -> Result<(torsion_web::Response, String), Failure> {
    let (response, body) = agent.fetch(method, url, HeaderMap::new(), body).await?;
    Ok((response, String::from_utf8_lossy(&body).into_owned()))
}

#[test]
fn fixed_and_chunked_bodies_over_one_kept_connection_from_twisted_web() {
    let Some(server) = twisted_server() else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", server.port);
    run(move |reactor| async move {
        let agent = Agent::new(&reactor);
        let (response, body) =
            text(&agent, Method::GET, &format!("{base}/fixed"), Body::Empty).await?;
        assert_eq!(
            (response.status.as_u16(), body.as_str()),
            (200, "fixed body")
        );
        assert_eq!(response.header("content-length"), Some("10"));
        assert!(response.header("server").unwrap_or("").contains("Twisted"));
        let (response, body) =
            text(&agent, Method::GET, &format!("{base}/chunked"), Body::Empty).await?;
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        assert_eq!(body, "first, second, third");
        let (_, first) = text(&agent, Method::GET, &format!("{base}/port"), Body::Empty).await?;
        let (_, second) = text(&agent, Method::GET, &format!("{base}/port"), Body::Empty).await?;
        assert_eq!(first, second, "kept alive by twisted.web");
        assert_eq!(agent.pool().idle_connections(), 1);
        // Request bodies: bytes, and a producer without a length (chunked to Twisted).
        let (response, body) = text(
            &agent,
            Method::POST,
            &format!("{base}/echo"),
            Body::from("posted"),
        )
        .await?;
        assert_eq!(
            (response.header("x-framing"), body.as_str()),
            (Some("length"), "posted")
        );
        let data = "streamed to twisted ".repeat(10_000);
        let producer = FileBodyProducer::new(
            &reactor,
            std::io::Cursor::new(data.clone().into_bytes()),
            None,
        );
        let (response, body) = text(
            &agent,
            Method::POST,
            &format!("{base}/echo"),
            Body::producer(producer),
        )
        .await?;
        assert_eq!(response.header("x-framing"), Some("chunked"));
        assert!(body == data, "{} bytes echoed", body.len());
        let (_, third) = text(&agent, Method::GET, &format!("{base}/port"), Body::Empty).await?;
        assert_eq!(third, first, "still the one connection");
        // Connection: close from the server: not kept.
        let (_, body) = text(&agent, Method::GET, &format!("{base}/close"), Body::Empty).await?;
        assert_eq!(body, "closing");
        assert_eq!(agent.pool().idle_connections(), 0);
        let (_, fourth) = text(&agent, Method::GET, &format!("{base}/port"), Body::Empty).await?;
        assert_ne!(fourth, first);
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
    drop(server);
}

#[test]
fn gzip_from_twisted_webs_encoding_resource_wrapper_is_decoded() {
    let Some(server) = twisted_server() else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", server.port);
    run(move |reactor| async move {
        let agent = Agent::new(&reactor);
        let want: String = (0..20000)
            .map(|i| format!("line {i} of a text worth compressing\n"))
            .collect();
        let decoding = ContentDecoderAgent::new(agent.clone());
        let (response, body) =
            text(&decoding, Method::GET, &format!("{base}/gzip"), Body::Empty).await?;
        assert_eq!(response.header("content-encoding"), None);
        assert!(body == want, "{} bytes decoded", body.len());
        // Without the decoder, nothing is asked for and the text comes as it is.
        let (response, body) =
            text(&agent, Method::GET, &format!("{base}/gzip"), Body::Empty).await?;
        assert_eq!(response.header("content-encoding"), None);
        assert!(body == want);
        // Asked for gzip without a decoder: the encoded bytes.
        let mut headers = HeaderMap::new();
        headers.insert("accept-encoding", http::HeaderValue::from_static("gzip"));
        let (response, raw) = agent
            .fetch(Method::GET, &format!("{base}/gzip"), headers, Body::Empty)
            .await?;
        assert_eq!(response.header("content-encoding"), Some("gzip"));
        assert!(raw.len() < want.len() / 4, "{} encoded bytes", raw.len());
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
    drop(server);
}

#[test]
fn redirects_from_twisted_web_are_followed() {
    let Some(server) = twisted_server() else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", server.port);
    run(move |reactor| async move {
        let agent = Agent::new(&reactor);
        let redirect = RedirectAgent::new(ContentDecoderAgent::new(agent.clone()));
        let (response, body) = text(
            &redirect,
            Method::GET,
            &format!("{base}/redirect"),
            Body::Empty,
        )
        .await?;
        assert_eq!(
            (response.status.as_u16(), body.as_str()),
            (200, "fixed body")
        );
        assert_eq!(response.url, format!("{base}/fixed"));
        assert_eq!(
            response.previous.as_ref().map(|p| p.status.as_u16()),
            Some(302)
        );
        let (response, body) = text(
            &redirect,
            Method::POST,
            &format!("{base}/see-other"),
            Body::from("form"),
        )
        .await?;
        assert_eq!(
            (response.status.as_u16(), body.as_str()),
            (200, "fixed body")
        );
        assert_eq!(
            agent.pool().idle_connections(),
            1,
            "one connection throughout"
        );
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
    drop(server);
}

#[test]
fn get_page_downloads_from_twisted_web_through_its_redirect() {
    let Some(server) = twisted_server() else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", server.port);
    run(move |reactor| async move {
        let page = torsion_web::get_page(&reactor, &format!("{base}/redirect")).await?;
        assert_eq!(page, b"fixed body");
        let page = torsion_web::get_page(&reactor, &format!("{base}/chunked")).await?;
        assert_eq!(page, b"first, second, third");
        let missing = torsion_web::get_page(&reactor, &format!("{base}/nowhere")).await;
        let failure = missing.expect_err("a 404 is an error for get_page");
        assert_eq!(
            failure.downcast_ref::<AgentError>(),
            Some(&AgentError::Status(http::StatusCode::NOT_FOUND))
        );
        Ok(())
    });
    drop(server);
}
