//! The Agent's connection pool over loopback (Twisted's `test_agent.HTTPConnectionPoolTests`
//! and `test_agent.AgentTests`' retries): reuse, the per-host limit, the idle timeout, a
//! kept connection the server closes, the retry of a request sent on a stale connection,
//! `close_cached_connections`, non-persistent pools, and HTTPS through the pool.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, Method};
use torsion::net::Transport;
use torsion::protocol::Protocol;
use torsion::tls::ClientConfig;
use torsion::{Deferred, Failure, Reactor};
use torsion_web::agent::{Agent, AgentError, Body, FileBodyProducer, HttpClient, Pool};
use torsion_web::{Render, Request, Resource, Site, SiteConfig};

mod common;
use common::agent::{local, run, self_signed, serve, serve_tls, site_root, sleep};

/// `GET url`'s body as text.
async fn get(agent: &Agent, url: &str) -> Result<String, Failure> {
    let (_, body) = agent
        .fetch(Method::GET, url, HeaderMap::new(), Body::Empty)
        .await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn two_sequential_requests_use_one_connection() {
    run(|reactor| async move {
        let port = serve(&reactor, site_root());
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/port");
        let first = get(&agent, &url).await?;
        assert_eq!(agent.pool().idle_connections(), 1);
        let second = get(&agent.clone(), &url).await?;
        assert_eq!(
            first, second,
            "the second request came on the first one's connection"
        );
        assert_eq!(agent.pool().idle_connections(), 1);
        // A chunked body, a POST and a HEAD keep it too.
        let parts = get(&agent, &format!("http://127.0.0.1:{port}/parts")).await?;
        assert_eq!(parts, "one two");
        let (_, posted) = agent
            .fetch(Method::POST, &url, HeaderMap::new(), Body::from("x"))
            .await?;
        assert_eq!(String::from_utf8(posted).unwrap(), first);
        let (head, body) = agent
            .fetch(Method::HEAD, &url, HeaderMap::new(), Body::Empty)
            .await?;
        assert_eq!((head.status.as_u16(), body.len()), (200, 0));
        assert_eq!(get(&agent, &url).await?, first);
        assert_eq!(agent.pool().idle_connections(), 1);
        agent.pool().close_cached_connections().await?;
        assert_eq!(agent.pool().idle_connections(), 0);
        assert_ne!(get(&agent, &url).await?, first, "closed: a new connection");
        Ok(())
    });
}

/// Fetches `url` `n` times at once; the bodies, in order.
async fn at_once(agent: &Agent, url: &str, n: usize) -> Result<Vec<String>, Failure> {
    let all: Vec<_> = (0..n)
        .map(|_| agent.fetch(Method::GET, url, HeaderMap::new(), Body::Empty))
        .collect();
    let mut bodies = Vec::new();
    for d in all {
        let (_, body) = d.await?;
        bodies.push(String::from_utf8_lossy(&body).into_owned());
    }
    Ok(bodies)
}

#[test]
fn at_most_two_idle_connections_are_kept_per_host() {
    run(|reactor| async move {
        let port = serve(&reactor, site_root());
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/slow?t=0.2");
        let ports = at_once(&agent, &url, 5).await?;
        sleep(&reactor, Duration::from_millis(20)).await;
        let mut distinct = ports.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 5, "five connections at once");
        assert_eq!(agent.pool().idle_connections(), 2, "two kept, three closed");
        // The next two requests use the kept ones, the third a new one.
        let url = format!("http://127.0.0.1:{port}/slow?t=0.05");
        let again = at_once(&agent, &url, 3).await?;
        let reused = again.iter().filter(|p| distinct.contains(p)).count();
        assert_eq!(reused, 2, "{again:?} after {distinct:?}");
        // The limit is configurable.
        let one = Agent::new(&reactor).with_pool(Pool::new(&reactor).max_persistent_per_host(1));
        at_once(&one, &url, 3).await?;
        sleep(&reactor, Duration::from_millis(20)).await;
        assert_eq!(one.pool().idle_connections(), 1);
        Ok(())
    });
}

#[test]
fn idle_connections_are_closed_after_the_cached_connection_timeout() {
    run(|reactor| async move {
        let port = serve(&reactor, site_root());
        let pool = Pool::new(&reactor).cached_connection_timeout(Some(Duration::from_millis(200)));
        let agent = Agent::new(&reactor).with_pool(pool.clone());
        let url = format!("http://127.0.0.1:{port}/port");
        let first = get(&agent, &url).await?;
        assert_eq!(pool.idle_connections(), 1);
        sleep(&reactor, Duration::from_millis(100)).await;
        assert_eq!(pool.idle_connections(), 1, "not yet");
        assert_eq!(get(&agent, &url).await?, first, "and reused");
        sleep(&reactor, Duration::from_millis(350)).await;
        assert_eq!(pool.idle_connections(), 0, "closed once idle 200 ms");
        assert_ne!(get(&agent, &url).await?, first);
        Ok(())
    });
}

#[test]
fn an_idle_connection_the_server_closes_is_removed_at_once() {
    run(|reactor| async move {
        let config = SiteConfig {
            idle_timeout: Some(Duration::from_millis(100)),
            ..SiteConfig::default()
        };
        let port = reactor
            .listen_tcp_with(0, Site::with_config(site_root(), config), local())
            .unwrap()
            .host()
            .port()
            .unwrap();
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/port");
        let first = get(&agent, &url).await?;
        assert_eq!(agent.pool().idle_connections(), 1);
        sleep(&reactor, Duration::from_millis(300)).await;
        assert_eq!(
            agent.pool().idle_connections(),
            0,
            "the server's idle close is seen"
        );
        let second = get(&agent, &url).await?;
        assert_ne!(second, first, "a new connection");
        Ok(())
    });
}

/// A server that answers the first request on its first connection, keeps it alive, and
/// closes it without answering when the next request arrives; later connections are
/// answered with their number.
#[derive(Default)]
struct FlakyServer {
    connections: Cell<usize>,
    requests: Cell<usize>,
}

struct Flaky {
    server: Rc<FlakyServer>,
    index: usize,
    requests: usize,
    input: Vec<u8>,
    transport: Option<Transport>,
}

impl Protocol for Flaky {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
        while let Some(end) = self.input.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&self.input[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().unwrap());
            if self.input.len() < end + 4 + length {
                return;
            }
            self.input.drain(..end + 4 + length);
            self.requests += 1;
            self.server.requests.set(self.server.requests.get() + 1);
            let Some(t) = &self.transport else { return };
            if self.index == 0 && self.requests == 2 {
                t.lose_connection();
                return;
            }
            let body = format!("connection {}", self.index);
            t.write(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    }
}

fn flaky(reactor: &Reactor) -> (Rc<FlakyServer>, u16) {
    let server = Rc::new(FlakyServer::default());
    let s = server.clone();
    let factory = Rc::new(move || {
        let index = s.connections.get();
        s.connections.set(index + 1);
        Flaky {
            server: s.clone(),
            index,
            requests: 0,
            input: Vec::new(),
            transport: None,
        }
    });
    let port = reactor
        .listen_tcp_with(0, factory, local())
        .unwrap()
        .host()
        .port()
        .unwrap();
    (server, port)
}

#[test]
fn a_get_on_a_stale_kept_connection_is_retried_on_a_new_one() {
    run(|reactor| async move {
        let (server, port) = flaky(&reactor);
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/");
        assert_eq!(get(&agent, &url).await?, "connection 0");
        // The kept connection is closed by the server when this arrives: sent again.
        assert_eq!(get(&agent, &url).await?, "connection 1");
        assert_eq!((server.connections.get(), server.requests.get()), (2, 3));
        // A PUT with bytes is idempotent and its body can be sent again: retried too.
        let (_, port) = flaky(&reactor);
        let url = format!("http://127.0.0.1:{port}/");
        assert_eq!(get(&agent, &url).await?, "connection 0");
        let (_, body) = agent
            .fetch(
                Method::PUT,
                &url,
                HeaderMap::new(),
                Body::from("replayable"),
            )
            .await?;
        assert_eq!(body, b"connection 1");
        Ok(())
    });
}

#[test]
fn a_post_on_a_stale_kept_connection_fails_saying_it_may_have_been_processed() {
    run(|reactor| async move {
        let (server, port) = flaky(&reactor);
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/");
        assert_eq!(get(&agent, &url).await?, "connection 0");
        let failure = agent
            .request(Method::POST, &url, HeaderMap::new(), Body::from("once"))
            .await
            .unwrap_err();
        match failure.downcast_ref::<AgentError>() {
            Some(AgentError::ResponseNeverReceived { method, reused, .. }) => {
                assert_eq!((method, *reused), (&Method::POST, true));
            }
            _ => panic!("{failure}"),
        }
        assert!(
            failure
                .to_string()
                .contains("may or may not have been processed"),
            "{failure}"
        );
        assert_eq!(server.connections.get(), 1, "not retried");
        // A PUT whose body is a producer cannot be sent again: not retried either.
        let (server, port) = flaky(&reactor);
        let url = format!("http://127.0.0.1:{port}/");
        assert_eq!(get(&agent, &url).await?, "connection 0");
        let producer = FileBodyProducer::new(
            &reactor,
            std::io::Cursor::new(b"streamed".to_vec()),
            Some(8),
        );
        let failure = agent
            .request(
                Method::PUT,
                &url,
                HeaderMap::new(),
                Body::producer(producer),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                failure.downcast_ref::<AgentError>(),
                Some(AgentError::ResponseNeverReceived { reused: true, .. })
            ),
            "{failure}"
        );
        assert_eq!(server.connections.get(), 1, "not retried");
        // Without retries, even a GET fails.
        let (server, port) = flaky(&reactor);
        let agent = Agent::new(&reactor).with_pool(Pool::new(&reactor).retry_automatically(false));
        let url = format!("http://127.0.0.1:{port}/");
        assert_eq!(get(&agent, &url).await?, "connection 0");
        let failure = agent
            .request(Method::GET, &url, HeaderMap::new(), Body::Empty)
            .await
            .unwrap_err();
        assert!(failure.check::<AgentError>(), "{failure}");
        assert_eq!(server.connections.get(), 1, "not retried");
        Ok(())
    });
}

#[test]
fn a_connection_whose_request_said_close_is_not_kept() {
    run(|reactor| async move {
        // The server answers without a Connection header and keeps the connection; the
        // request asked for a close, so the client must not send another on it (RFC 9112
        // §9.6), and a POST after it goes on a new connection.
        let (server, port) = flaky(&reactor);
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/");
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONNECTION, "close".parse().unwrap());
        let (_, body) = agent.fetch(Method::GET, &url, headers, Body::Empty).await?;
        assert_eq!(body, b"connection 0");
        assert_eq!(agent.pool().idle_connections(), 0);
        let (_, body) = agent
            .fetch(Method::POST, &url, HeaderMap::new(), Body::from("once"))
            .await?;
        assert_eq!(body, b"connection 1");
        assert_eq!(server.connections.get(), 2);
        Ok(())
    });
}

#[test]
fn a_non_persistent_pool_sends_connection_close_and_keeps_nothing() {
    struct ConnectionHeader;
    impl Resource for ConnectionHeader {
        fn is_leaf(&self) -> bool {
            true
        }
        fn render_get(&self, request: &Rc<Request>) -> Render {
            let port = request.client().port().unwrap_or(0);
            Render::text(format!(
                "{port} {}",
                request.header("connection").unwrap_or("-")
            ))
        }
    }
    run(|reactor| async move {
        let port = serve(&reactor, Rc::new(ConnectionHeader));
        let agent = Agent::new(&reactor).with_pool(Pool::non_persistent(&reactor));
        let url = format!("http://127.0.0.1:{port}/");
        let first = get(&agent, &url).await?;
        let second = get(&agent, &url).await?;
        assert!(first.ends_with(" close"), "{first}");
        assert_ne!(first, second);
        assert_eq!(agent.pool().idle_connections(), 0);
        let persistent = Agent::new(&reactor);
        assert!(get(&persistent, &url).await?.ends_with(" -"));
        Ok(())
    });
}

#[test]
fn https_connections_are_pooled_by_tls_configuration() {
    run(|reactor| async move {
        let (identity, roots) = self_signed();
        let port = serve_tls(&reactor, site_root(), identity);
        let config = ClientConfig::builder()
            .roots(roots.clone())
            .build()
            .unwrap();
        let agent = Agent::new(&reactor).tls(config);
        let url = format!("https://localhost:{port}/port");
        let first = get(&agent, &url).await?;
        assert_eq!(get(&agent, &url).await?, first, "reused under TLS");
        assert_eq!(agent.pool().idle_connections(), 1);
        // Another configuration, even with the same roots, is another key.
        let other = Agent::new(&reactor)
            .with_pool(agent.pool().clone())
            .tls(ClientConfig::builder().roots(roots).build().unwrap());
        let third = get(&other, &url).await?;
        assert_ne!(third, first);
        assert_eq!(agent.pool().idle_connections(), 2);
        // Plain HTTP to the same port is another key too (and fails: the server speaks TLS).
        let plain = Agent::new(&reactor)
            .with_pool(agent.pool().clone())
            .timeout(Some(Duration::from_secs(2)));
        let failed = plain
            .request(
                Method::GET,
                &format!("http://localhost:{port}/port"),
                HeaderMap::new(),
                Body::Empty,
            )
            .await;
        assert!(failed.is_err());
        assert_eq!(agent.pool().idle_connections(), 2);
        agent.pool().close_cached_connections().await?;
        assert_eq!(agent.pool().idle_connections(), 0);
        Ok(())
    });
}

#[test]
fn close_cached_connections_fires_once_they_are_closed() {
    run(|reactor| async move {
        let port = serve(&reactor, site_root());
        let agent = Agent::new(&reactor);
        let url = format!("http://127.0.0.1:{port}/slow?t=0.05");
        at_once(&agent, &url, 2).await?;
        sleep(&reactor, Duration::from_millis(20)).await;
        assert_eq!(agent.pool().idle_connections(), 2);
        let closed = Rc::new(Cell::new(false));
        let c = closed.clone();
        let d = agent
            .pool()
            .close_cached_connections()
            .map(move |()| c.set(true));
        assert_eq!(
            agent.pool().idle_connections(),
            0,
            "out of the pool at once"
        );
        assert!(!closed.get());
        d.await?;
        assert!(closed.get());
        // Nothing idle: fires at once.
        let mut none: Deferred<()> = agent.pool().close_cached_connections();
        assert!(none.take_result().unwrap().is_ok());
        Ok(())
    });
}
