//! RedirectAgent and ContentDecoderAgent over loopback (Twisted's
//! `test_agent.RedirectAgentTests` and `ContentDecoderAgentTests`): each redirect status,
//! 303 to GET, relative locations, loops, credentials across origins, methods not
//! followed; gzip bodies decoded as they stream, corrupt ones refused, other encodings
//! passed through.

use std::io::Write;
use std::rc::Rc;

use flate2::Compression;
use flate2::write::GzEncoder;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use torsion::Failure;
use torsion_web::agent::{
    Agent, AgentError, Body, ContentDecoderAgent, HttpClient, RedirectAgent, Response,
};
use torsion_web::{Render, Request, Resource};

mod common;
use common::agent::{run, serve};

/// `?code=C&loc=L` answers C with `Location: L`; `/show` answers with the method, the
/// body and the credentials it got; `/loop` redirects to itself.
struct Redirects;

impl Resource for Redirects {
    fn is_leaf(&self) -> bool {
        true
    }
    fn allowed_methods(&self) -> Vec<Method> {
        vec![Method::GET, Method::HEAD, Method::POST, Method::PUT]
    }
    fn render(&self, request: &Rc<Request>) -> Render {
        let path = request.path().to_string();
        if let Some(code) = request.arg("code") {
            let code: u16 = code.parse().unwrap_or(302);
            request.set_response_code(StatusCode::from_u16(code).unwrap());
            if let Some(location) = request.arg("loc") {
                request.set_header("Location", location);
            }
            return Render::text("redirecting");
        }
        if path.starts_with("/loop") {
            request.set_response_code(StatusCode::FOUND);
            request.set_header("Location", "/loop");
            return Render::text("again");
        }
        Render::text(format!(
            "{} {} body={:?} auth={} cookie={} proxy={}",
            request.method(),
            request.uri(),
            String::from_utf8_lossy(request.content()),
            request.header("authorization").unwrap_or("-"),
            request.header("cookie").unwrap_or("-"),
            request.header("proxy-authorization").unwrap_or("-"),
        ))
    }
}

fn redirecting(reactor: &torsion::Reactor) -> (RedirectAgent, Agent, u16) {
    let port = serve(reactor, Rc::new(Redirects));
    let agent = Agent::new(reactor);
    (RedirectAgent::new(agent.clone()), agent, port)
}

async fn fetch_text(
    agent: &impl HttpClient,
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: Body,
) -> Result<(Response, String), Failure> {
    let (response, body) = agent.fetch(method, url, headers, body).await?;
    Ok((response, String::from_utf8_lossy(&body).into_owned()))
}

#[test]
fn redirects_are_followed_for_get_and_head_keeping_the_method() {
    run(|reactor| async move {
        let (redirect, agent, port) = redirecting(&reactor);
        let base = format!("http://127.0.0.1:{port}");
        for code in [301, 302, 307, 308] {
            let url = format!("{base}/to?code={code}&loc=/show?x={code}");
            let (response, text) =
                fetch_text(&redirect, Method::GET, &url, HeaderMap::new(), Body::Empty).await?;
            assert_eq!(response.status, 200, "{code}");
            assert_eq!(
                text,
                format!("GET /show?x={code} body=\"\" auth=- cookie=- proxy=-")
            );
            assert_eq!(response.url, format!("{base}/show?x={code}"));
            let previous = response.previous.as_ref().unwrap();
            assert_eq!(
                (previous.status.as_u16(), previous.url.as_str()),
                (code, url.as_str())
            );
            assert_eq!(
                response.redirect_chain(),
                vec![url.as_str(), response.url.as_str()]
            );
            let (head, body) = redirect
                .fetch(Method::HEAD, &url, HeaderMap::new(), Body::Empty)
                .await?;
            assert_eq!((head.status.as_u16(), body.len()), (200, 0), "HEAD {code}");
        }
        // Each redirect's body was read away, so one connection did all of it.
        assert_eq!(agent.pool().idle_connections(), 1);
        // Without the RedirectAgent, the redirect itself.
        let url = format!("{base}/to?code=301&loc=/show");
        let (response, text) =
            fetch_text(&agent, Method::GET, &url, HeaderMap::new(), Body::Empty).await?;
        assert_eq!(
            (response.status.as_u16(), text.as_str()),
            (301, "redirecting")
        );
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

#[test]
fn see_other_is_followed_as_a_get_without_the_body() {
    run(|reactor| async move {
        let (redirect, agent, port) = redirecting(&reactor);
        let base = format!("http://127.0.0.1:{port}");
        for method in [Method::POST, Method::PUT, Method::GET] {
            let url = format!("{base}/to?code=303&loc=/show");
            let (response, text) = fetch_text(
                &redirect,
                method.clone(),
                &url,
                HeaderMap::new(),
                Body::from("the form"),
            )
            .await?;
            assert_eq!(response.status, 200);
            assert_eq!(
                text, "GET /show body=\"\" auth=- cookie=- proxy=-",
                "{method}"
            );
        }
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

#[test]
fn redirects_for_other_methods_are_not_followed_but_reported() {
    run(|reactor| async move {
        let (redirect, agent, port) = redirecting(&reactor);
        let base = format!("http://127.0.0.1:{port}");
        for code in [301u16, 302, 307, 308] {
            let url = format!("{base}/to?code={code}&loc=/show");
            let failure = redirect
                .request(Method::POST, &url, HeaderMap::new(), Body::from("x"))
                .await
                .unwrap_err();
            assert_eq!(
                failure.downcast_ref::<AgentError>(),
                Some(&AgentError::PageRedirect {
                    status: StatusCode::from_u16(code).unwrap(),
                    location: format!("{base}/show"),
                }),
                "{failure}"
            );
        }
        // No Location: an error too.
        let failure = redirect
            .request(
                Method::GET,
                &format!("{base}/to?code=302"),
                HeaderMap::new(),
                Body::Empty,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                failure.downcast_ref::<AgentError>(),
                Some(AgentError::RedirectWithNoLocation { .. })
            ),
            "{failure}"
        );
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

#[test]
fn relative_locations_are_resolved_against_the_request_url() {
    run(|reactor| async move {
        let (redirect, agent, port) = redirecting(&reactor);
        let base = format!("http://127.0.0.1:{port}");
        for (location, want) in [
            ("show", "/a/show"),
            ("../show?y=1", "/show?y=1"),
            ("./show", "/a/show"),
            ("//127.0.0.1:PORT/show?net", "/show?net"),
            ("http://127.0.0.1:PORT/show?abs", "/show?abs"),
        ] {
            let location = location.replace("PORT", &port.to_string());
            let url = format!(
                "{base}/a/b?code=302&loc={}",
                location.replace('?', "%3F").replace('&', "%26")
            );
            let (response, text) =
                fetch_text(&redirect, Method::GET, &url, HeaderMap::new(), Body::Empty).await?;
            assert_eq!(response.status, 200, "{location}");
            assert!(
                text.starts_with(&format!("GET {want} ")),
                "{location}: {text}"
            );
        }
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

#[test]
fn a_redirect_loop_ends_after_the_limit() {
    run(|reactor| async move {
        let (redirect, agent, port) = redirecting(&reactor);
        let url = format!("http://127.0.0.1:{port}/loop");
        let failure = redirect
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await
            .unwrap_err();
        assert_eq!(
            failure.downcast_ref::<AgentError>(),
            Some(&AgentError::InfiniteRedirection {
                limit: 20,
                location: url.clone(),
            }),
            "{failure}"
        );
        // A lower limit: a chain of two is followed with 2, not with 1.
        let two = format!("http://127.0.0.1:{port}/to?code=302&loc=/to%3Fcode=302%26loc=/show");
        let (_, text) = fetch_text(
            &redirect.clone().max_redirects(2),
            Method::GET,
            &two,
            HeaderMap::new(),
            Body::Empty,
        )
        .await?;
        assert!(text.starts_with("GET /show"), "{text}");
        let failure = redirect
            .clone()
            .max_redirects(1)
            .request(Method::GET, &two, HeaderMap::new(), Body::Empty)
            .await
            .unwrap_err();
        assert!(
            matches!(
                failure.downcast_ref::<AgentError>(),
                Some(AgentError::InfiniteRedirection { limit: 1, .. })
            ),
            "{failure}"
        );
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

#[test]
fn credentials_are_dropped_when_the_origin_changes_and_kept_on_the_same_origin() {
    run(|reactor| async move {
        let (redirect, agent, port) = redirecting(&reactor);
        let other = serve(&reactor, Rc::new(Redirects));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Basic c2VjcmV0"));
        headers.insert("cookie", HeaderValue::from_static("session=1"));
        headers.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic cHJveHk="),
        );
        let same = format!("http://127.0.0.1:{port}/to?code=302&loc=/show");
        let (_, text) =
            fetch_text(&redirect, Method::GET, &same, headers.clone(), Body::Empty).await?;
        assert_eq!(
            text,
            "GET /show body=\"\" auth=Basic c2VjcmV0 cookie=session=1 proxy=Basic cHJveHk="
        );
        // Another port is another origin; so is another host for the same address.
        for location in [
            format!("http://127.0.0.1:{other}/show"),
            format!("http://localhost:{port}/show"),
        ] {
            let url = format!("http://127.0.0.1:{port}/to?code=307&loc={location}");
            let (_, text) =
                fetch_text(&redirect, Method::GET, &url, headers.clone(), Body::Empty).await?;
            assert_eq!(
                text, "GET /show body=\"\" auth=- cookie=- proxy=-",
                "{location}"
            );
        }
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

/// Serves `/gzip` gzip-encoded (as the response streams), `/corrupt` as broken gzip,
/// `/truncated` as gzip cut short, `/br` with another coding, `/plain` without one.
struct Encoded;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn text_body() -> Vec<u8> {
    (0..50_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect()
}

impl Resource for Encoded {
    fn is_leaf(&self) -> bool {
        true
    }
    fn render_get(&self, request: &Rc<Request>) -> Render {
        let accepts = request.header("accept-encoding").unwrap_or("-").to_string();
        request.set_header("X-Accept-Encoding", &accepts);
        match request.path() {
            "/gzip" => {
                request.set_header("Content-Encoding", "gzip");
                // Written in pieces, chunked, as a streaming server does.
                let encoded = gzip(&text_body());
                for piece in encoded.chunks(10_000) {
                    let _ = request.write(piece);
                }
                let _ = request.finish();
                Render::Later
            }
            "/corrupt" => {
                request.set_header("Content-Encoding", "gzip");
                let mut broken = gzip(b"some text that will not survive");
                let middle = broken.len() / 2;
                broken[middle..].iter_mut().for_each(|b| *b ^= 0x5a);
                Render::Body(broken)
            }
            "/truncated" => {
                request.set_header("Content-Encoding", "gzip");
                let encoded = gzip(&text_body());
                Render::Body(encoded[..encoded.len() / 2].to_vec())
            }
            "/br" => {
                request.set_header("Content-Encoding", "br");
                Render::text("not really brotli")
            }
            "/double" => {
                request.set_header("Content-Encoding", "identity, gzip");
                Render::Body(gzip(b"inner"))
            }
            _ => Render::text("plain"),
        }
    }
}

#[test]
fn gzip_bodies_are_decoded_as_they_stream() {
    run(|reactor| async move {
        let port = serve(&reactor, Rc::new(Encoded));
        let agent = Agent::new(&reactor);
        let decoding = ContentDecoderAgent::new(agent.clone());
        let url = format!("http://127.0.0.1:{port}/gzip");
        let (response, body) = decoding
            .fetch(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        assert!(body == text_body(), "{} bytes decoded", body.len());
        assert_eq!(response.header("x-accept-encoding"), Some("gzip"));
        assert_eq!(response.header("content-encoding"), None);
        assert_eq!(response.header("content-length"), None);
        // One coding taken off, the other left.
        let (response, body) = decoding
            .fetch(
                Method::GET,
                &format!("http://127.0.0.1:{port}/double"),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        assert_eq!(
            (response.header("content-encoding"), &body[..]),
            (Some("identity"), &b"inner"[..])
        );
        // HEAD: no body to decode.
        let (_, body) = decoding
            .fetch(Method::HEAD, &url, HeaderMap::new(), Body::Empty)
            .await?;
        assert!(body.is_empty());
        // Without the decoder: the encoded bytes, and no Accept-Encoding asked.
        let (response, raw) = agent
            .fetch(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        assert_eq!(response.header("content-encoding"), Some("gzip"));
        assert_eq!(response.header("x-accept-encoding"), Some("-"));
        assert!(raw.len() < body_len_bound(), "{} encoded bytes", raw.len());
        // Redirects and decoding stack.
        let both = RedirectAgent::new(ContentDecoderAgent::new(agent.clone()));
        let (_, body) = both
            .fetch(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await?;
        assert!(body == text_body());
        agent.pool().close_cached_connections().await?;
        Ok(())
    });
}

fn body_len_bound() -> usize {
    text_body().len() / 3
}

#[test]
fn corrupt_or_truncated_gzip_ends_the_body_with_a_decoding_error() {
    run(|reactor| async move {
        let port = serve(&reactor, Rc::new(Encoded));
        let decoding = ContentDecoderAgent::new(Agent::new(&reactor));
        for path in ["/corrupt", "/truncated"] {
            let url = format!("http://127.0.0.1:{port}{path}");
            let response = decoding
                .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
                .await?;
            assert_eq!(response.status, 200);
            let failure = response.collect_body().await.unwrap_err();
            assert!(
                matches!(
                    failure.downcast_ref::<AgentError>(),
                    Some(AgentError::Decoding(_))
                ),
                "{path}: {failure}"
            );
        }
        decoding.inner().pool().close_cached_connections().await?;
        Ok(())
    });
}

#[test]
fn other_encodings_and_plain_bodies_pass_through() {
    run(|reactor| async move {
        let port = serve(&reactor, Rc::new(Encoded));
        let decoding = ContentDecoderAgent::new(Agent::new(&reactor));
        let (response, body) = decoding
            .fetch(
                Method::GET,
                &format!("http://127.0.0.1:{port}/br"),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        assert_eq!(response.header("content-encoding"), Some("br"));
        assert_eq!(response.header("content-length"), Some("17"));
        assert_eq!(body, b"not really brotli");
        let (response, body) = decoding
            .fetch(
                Method::GET,
                &format!("http://127.0.0.1:{port}/plain"),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        assert_eq!(
            (response.header("content-length"), &body[..]),
            (Some("5"), &b"plain"[..])
        );
        // A caller's own Accept-Encoding is sent as given.
        let mut headers = HeaderMap::new();
        headers.insert("accept-encoding", HeaderValue::from_static("identity"));
        let (response, _) = decoding
            .fetch(
                Method::GET,
                &format!("http://127.0.0.1:{port}/plain"),
                headers,
                Body::Empty,
            )
            .await?;
        assert_eq!(response.header("x-accept-encoding"), Some("identity"));
        decoding.inner().pool().close_cached_connections().await?;
        Ok(())
    });
}
