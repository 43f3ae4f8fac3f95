//! The tutorial programs in `examples/` (the poetry server and clients, the transform
//! service, the caching proxy), run over real loopback sockets on every backend. The test
//! includes the examples' own module, so it runs their logic, not a copy of it. Poems are
//! bytes: a Latin-1 poem goes through every program byte for byte.

mod common;

#[path = "../examples/poetry/mod.rs"]
mod poetry;

use std::cell::Cell;
use std::future::Future;
use std::net::Ipv4Addr;
use std::rc::Rc;

use torsion::defer::DeferredList;
use torsion::endpoints::{TcpClientEndpoint, connect_protocol};
use torsion::error::ConnectionRefused;
use torsion::net::tcp::ListenOptions;
use torsion::net::{Address, Transport};
use torsion::protocol::{Factory, Protocol};
use torsion::protocols::framing::{NetstringParser, netstring_encode};
use torsion::testing::{AccumulatingProtocol, StringTransport};
use torsion::{Deferred, Failure, Reactor, Resolver, spawn};

use poetry::client::{Fate, GibberishError, get_poetry, try_to_cummingsify};
use poetry::proxy::{PoetryProxyFactory, ProxyService};
use poetry::server::PoetryFactory;
use poetry::transform::{TransformFactory, TransformProxy, TransformService, get_transformed_poem};

const POEM: &[u8] = include_bytes!("../../../poems/science.txt");

/// Goethe's "Wandrers Nachtlied" in Latin-1: not UTF-8.
const LATIN1_POEM: &[u8] = include_bytes!("../../../poems/nachtlied.latin1.txt");

/// What `cummingsify` must make of a poem: ASCII capitals lowered, every other byte kept
/// (Python's `bytes.lower()`).
fn ascii_lowered(poem: &[u8]) -> Vec<u8> {
    poem.iter()
        .map(|&b| {
            if b.is_ascii_uppercase() {
                b + (b'a' - b'A')
            } else {
                b
            }
        })
        .collect()
}

/// The netstrings in `wire`, which must hold nothing else.
fn netstrings(wire: &[u8]) -> Vec<Vec<u8>> {
    let mut parser = NetstringParser::new();
    parser.feed(wire);
    let strings = std::iter::from_fn(|| parser.next_frame())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert!(
        parser.buffered().is_empty(),
        "a partial netstring at the end"
    );
    strings
}

/// Two transform requests, as one stretch of bytes.
fn two_requests() -> Vec<u8> {
    let mut wire = Vec::new();
    netstring_encode(b"cummingsify.Roses ARE Red.", &mut wire);
    let mut second = b"cummingsify.".to_vec();
    second.extend_from_slice(LATIN1_POEM);
    netstring_encode(&second, &mut wire);
    wire
}

/// Runs `main` on `reactor` (stopped after 5 s whatever happens) and returns its outcome.
fn run<T, Fut>(reactor: Reactor, main: impl FnOnce(Reactor) -> Fut + 'static) -> Result<T, Failure>
where
    T: 'static,
    Fut: Future<Output = Result<T, Failure>> + 'static,
{
    common::safety_stop(&reactor, 5.0);
    let out: Rc<Cell<Option<Result<T, Failure>>>> = Rc::new(Cell::new(None));
    let slot = out.clone();
    torsion::task::react_result(reactor, move |reactor| async move {
        slot.set(Some(main(reactor).await));
        Ok(())
    })
    .expect("the reactor stopped before the test finished");
    out.take().expect("main finished")
}

/// Listens on a free loopback port and returns it.
fn listen<F: Factory>(reactor: &Reactor, factory: Rc<F>) -> u16 {
    let options = ListenOptions {
        interface: Ipv4Addr::LOCALHOST.into(),
        ..Default::default()
    };
    let port = reactor.listen_tcp_with(0, factory, options).unwrap();
    port.host().port().unwrap()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Counts the connections a factory serves.
struct Counting<F> {
    inner: Rc<F>,
    connections: Cell<usize>,
}

impl<F: Factory> Factory for Counting<F> {
    fn build_protocol(self: Rc<Self>, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.connections.set(self.connections.get() + 1);
        self.inner.clone().build_protocol(addr)
    }
}

/// A server that never sends anything: it reports when a client connects and when the
/// client goes away.
struct Silent {
    connected: Cell<Option<Resolver<()>>>,
    lost: Cell<Option<Resolver<()>>>,
}

struct SilentProtocol(Rc<Silent>);

impl Protocol for SilentProtocol {
    fn connection_made(&mut self, _transport: Transport) {
        if let Some(r) = self.0.connected.take() {
            r.callback(());
        }
    }

    fn connection_lost(&mut self, _reason: Failure) {
        if let Some(r) = self.0.lost.take() {
            r.callback(());
        }
    }
}

impl Factory for Silent {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(SilentProtocol(self)))
    }
}

/// A client that connects and does nothing.
struct Idle;

impl Protocol for Idle {}

reactor_test! {
    fn the_poetry_server_sends_the_whole_poem_to_the_client(reactor: Reactor) {
        let port = listen(&reactor, PoetryFactory::new(POEM));
        let poem = run(reactor, move |r| get_poetry(&r, "127.0.0.1", port)).unwrap();
        assert_eq!(poem, POEM);
    }

    fn get_poetry_fails_when_no_server_listens(reactor: Reactor) {
        let port = closed_port();
        let failure = run(reactor, move |r| get_poetry(&r, "127.0.0.1", port)).unwrap_err();
        assert!(failure.check::<ConnectionRefused>(), "{failure}");
    }

    fn the_client_cummingsifies_and_sends_gibberish_down_the_errback_chain(reactor: Reactor) {
        let port = listen(&reactor, PoetryFactory::new(POEM));
        let results = run(reactor, move |r| {
            // The example's pipeline, one download per fate.
            let downloads = [Fate::Success, Fate::Gibberish, Fate::Bug]
                .into_iter()
                .map(|fate| {
                    get_poetry(&r, "127.0.0.1", port)
                        .add_callback(move |poem| try_to_cummingsify(poem, fate))
                })
                .collect();
            DeferredList::new(downloads).consume_errors(true).into_deferred()
        })
        .unwrap();
        assert_eq!(results[0].as_ref().unwrap(), &POEM.to_ascii_lowercase());
        assert!(results[1].as_ref().unwrap_err().check::<GibberishError>());
        assert_eq!(results[2].as_ref().unwrap(), POEM, "a bug keeps the original poem");
    }

    fn the_transform_server_cummingsifies(reactor: Reactor) {
        let port = listen(&reactor, TransformFactory::new(TransformService));
        let poem = run(reactor, move |r| {
            TransformProxy::new(&r, "127.0.0.1", port).xform("cummingsify", b"Roses ARE Red.\n")
        })
        .unwrap();
        assert_eq!(poem, b"roses are red.\n");
    }

    fn the_transform_server_answers_two_requests_arriving_in_one_segment(reactor: Reactor) {
        let port = listen(&reactor, TransformFactory::new(TransformService));
        let answer = run(reactor, move |r| async move {
            let client = AccumulatingProtocol::new();
            let state = client.state();
            let transport = connect_protocol(&TcpClientEndpoint::new(&r, "127.0.0.1", port), client).await?;
            // One write of a few hundred bytes: one segment over the loopback.
            transport.write(&two_requests());
            state.closed_deferred().await?;
            Ok(state.data())
        })
        .unwrap();
        assert_eq!(
            netstrings(&answer),
            [b"roses are red.".to_vec(), ascii_lowered(LATIN1_POEM)]
        );
    }

    fn the_poetry_server_serves_a_latin1_poem_byte_identical(reactor: Reactor) {
        // Ü in Latin-1, which UTF-8 cannot start a character with before "ber".
        assert!(LATIN1_POEM.windows(4).any(|w| w == b"\xdcber"));
        let port = listen(&reactor, PoetryFactory::new(LATIN1_POEM));
        let poem = run(reactor, move |r| get_poetry(&r, "127.0.0.1", port)).unwrap();
        assert_eq!(poem, LATIN1_POEM);
    }

    fn the_transform_changes_ascii_letters_only_and_keeps_non_ascii_bytes(reactor: Reactor) {
        let poetry = listen(&reactor, PoetryFactory::new(LATIN1_POEM));
        let xform = listen(&reactor, TransformFactory::new(TransformService));
        let poem = run(reactor, move |r| {
            let proxy = Rc::new(TransformProxy::new(&r, "127.0.0.1", xform));
            spawn(get_transformed_poem(r, proxy, "127.0.0.1".into(), poetry))
        })
        .unwrap();
        assert_eq!(poem, ascii_lowered(LATIN1_POEM));
        // "Über" keeps its Latin-1 capital Ü (0xDC): only ASCII letters change.
        assert!(poem.starts_with(b"wandrers nachtlied"));
        assert!(poem.windows(4).any(|w| w == b"\xdcber"));
        for (before, after) in LATIN1_POEM.iter().zip(&poem) {
            if !before.is_ascii() {
                assert_eq!(before, after);
            }
        }
    }

    fn the_proxy_passes_a_latin1_poem_through_unchanged(reactor: Reactor) {
        let server_port = listen(&reactor, PoetryFactory::new(LATIN1_POEM));
        let proxy = PoetryProxyFactory::new(ProxyService::new(&reactor, "127.0.0.1", server_port));
        let proxy_port = listen(&reactor, proxy);
        let poems = run(reactor, move |r| async move {
            let fetched = get_poetry(&r, "127.0.0.1", proxy_port).await?;
            let cached = get_poetry(&r, "127.0.0.1", proxy_port).await?;
            Ok((fetched, cached))
        })
        .unwrap();
        assert_eq!(poems, (LATIN1_POEM.to_vec(), LATIN1_POEM.to_vec()));
    }

    fn an_unknown_transform_closes_the_connection_without_a_reply(reactor: Reactor) {
        let port = listen(&reactor, TransformFactory::new(TransformService));
        let outcome = run(reactor, move |r| {
            TransformProxy::new(&r, "127.0.0.1", port).xform("byronificate", b"Roses are red.")
        });
        assert!(outcome.is_err(), "{outcome:?}");
    }

    fn the_inline_client_gets_the_transformed_poem(reactor: Reactor) {
        let poetry = listen(&reactor, PoetryFactory::new(POEM));
        let xform = listen(&reactor, TransformFactory::new(TransformService));
        let poem = run(reactor, move |r| {
            let proxy = Rc::new(TransformProxy::new(&r, "127.0.0.1", xform));
            spawn(get_transformed_poem(r, proxy, "127.0.0.1".into(), poetry))
        })
        .unwrap();
        assert_eq!(poem, POEM.to_ascii_lowercase());
    }

    fn the_inline_client_falls_back_to_the_original_poem_when_the_transform_service_is_down(
        reactor: Reactor
    ) {
        let poetry = listen(&reactor, PoetryFactory::new(POEM));
        let xform = closed_port();
        let poem = run(reactor, move |r| {
            let proxy = Rc::new(TransformProxy::new(&r, "127.0.0.1", xform));
            get_transformed_poem(r, proxy, "127.0.0.1".into(), poetry)
        })
        .unwrap();
        assert_eq!(poem, POEM);
    }

    fn the_inline_client_fails_when_the_poetry_server_is_down(reactor: Reactor) {
        let xform = listen(&reactor, TransformFactory::new(TransformService));
        let poetry = closed_port();
        let failure = run(reactor, move |r| {
            let proxy = Rc::new(TransformProxy::new(&r, "127.0.0.1", xform));
            get_transformed_poem(r, proxy, "127.0.0.1".into(), poetry)
        })
        .unwrap_err();
        assert!(failure.check::<ConnectionRefused>(), "{failure}");
    }

    fn the_proxy_serves_the_cached_poem_the_second_time_without_contacting_the_server(
        reactor: Reactor
    ) {
        let server = Rc::new(Counting {
            inner: PoetryFactory::new(POEM),
            connections: Cell::new(0),
        });
        let server_port = listen(&reactor, server.clone());
        let proxy = PoetryProxyFactory::new(ProxyService::new(&reactor, "127.0.0.1", server_port));
        let proxy_port = listen(&reactor, proxy.clone());
        let served = server.clone();
        let poems = run(reactor, move |r| async move {
            let first = get_poetry(&r, "127.0.0.1", proxy_port).await?;
            assert_eq!(served.connections.get(), 1, "the first poem comes from the server");
            let second = get_poetry(&r, "127.0.0.1", proxy_port).await?;
            Ok((first, second))
        })
        .unwrap();
        assert_eq!(poems, (POEM.to_vec(), POEM.to_vec()));
        assert_eq!(server.connections.get(), 1, "the second poem came from the cache");
        assert!(proxy.service.is_cached());
    }

    fn a_client_leaving_the_proxy_early_cancels_the_download(reactor: Reactor) {
        let (connected, server_connected) = Deferred::new();
        let (lost, server_lost) = Deferred::new();
        let server = Rc::new(Silent {
            connected: Cell::new(Some(connected)),
            lost: Cell::new(Some(lost)),
        });
        let server_port = listen(&reactor, server);
        let proxy = PoetryProxyFactory::new(ProxyService::new(&reactor, "127.0.0.1", server_port));
        let proxy_port = listen(&reactor, proxy.clone());
        run(reactor, move |r| async move {
            let client = connect_protocol(&TcpClientEndpoint::new(&r, "127.0.0.1", proxy_port), Idle).await?;
            server_connected.await?; // the proxy is fetching the poem
            client.lose_connection();
            server_lost.await // the proxy gave up on it
        })
        .unwrap();
        assert!(!proxy.service.is_cached());
    }
}

#[test]
fn the_transform_service_answers_two_requests_arriving_in_one_data_received() {
    // As Twisted's TransformProtocol over NetstringReceiver: it closes after answering, and
    // the request already received is answered too.
    let factory = TransformFactory::new(TransformService);
    let addr = Address::Tcp(([127, 0, 0, 1], 1).into());
    let mut protocol = factory.build_protocol(&addr).expect("a protocol");
    let transport = StringTransport::new();
    protocol.connection_made(transport.clone());
    protocol.data_received(&two_requests());
    assert_eq!(
        netstrings(&transport.value()),
        [b"roses are red.".to_vec(), ascii_lowered(LATIN1_POEM)]
    );
    assert!(transport.disconnecting());
}

#[test]
fn cummingsify_lower_cases_ascii_letters_unless_the_poem_is_gibberish_or_it_has_a_bug() {
    let poem = || b"Roses ARE Red, \xc9T\xc9".to_vec();
    assert_eq!(
        try_to_cummingsify(poem(), Fate::Success).unwrap(),
        b"roses are red, \xc9t\xc9"
    );
    let failure = try_to_cummingsify(poem(), Fate::Gibberish).unwrap_err();
    assert!(failure.check::<GibberishError>());
    assert_eq!(try_to_cummingsify(poem(), Fate::Bug).unwrap(), poem());
}

#[test]
fn the_command_lines_parse_as_the_tutorials_do() {
    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let parsed = poetry::ServerArgs::parse(args("--port 10002 --iface 0.0.0.0 poem.txt")).unwrap();
    assert_eq!(parsed.port, 10002);
    assert_eq!(parsed.iface, std::net::IpAddr::from([0, 0, 0, 0]));
    assert_eq!(parsed.rest, ["poem.txt"]);
    assert!(poetry::ServerArgs::parse(args("--port")).is_err());
    assert_eq!(
        poetry::parse_address("10001").unwrap(),
        ("127.0.0.1".to_string(), 10001)
    );
    assert_eq!(
        poetry::parse_address("example.org:10001").unwrap(),
        ("example.org".to_string(), 10001)
    );
    assert!(poetry::parse_address("host:port").is_err());
}
