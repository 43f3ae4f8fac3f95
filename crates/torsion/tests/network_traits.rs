//! Code written against the reactor's network traits (Twisted's `IReactorTCP`,
//! `IReactorUNIX`, `IReactorUDP`) runs on a real reactor and, in tests, on a MemoryReactor.

mod common;

use std::path::Path;
use std::rc::Rc;

use torsion::net::tcp::ListenOptions;
use torsion::net::udp::UdpOptions;
use torsion::net::unix::UnixListenOptions;
use torsion::net::{ConnectorOps, ListeningPort, ReactorTcp, ReactorUdp, ReactorUnix};
use torsion::prelude::*;
use torsion::testing::{AccumulatingProtocol, MemoryReactor};

/// A program's set-up, written once against the traits.
fn serve_on_loopback<R: ReactorTcp>(reactor: &R) -> Result<R::Port, Failure> {
    let options = ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..ListenOptions::default()
    };
    reactor.listen_tcp_with(0, Rc::new(common::Echo::default), options)
}

#[derive(Default)]
struct Quiet;
impl DatagramProtocol for Quiet {}

#[test]
fn a_memory_reactor_records_what_code_written_against_the_traits_asks_for() {
    let memory = MemoryReactor::new();
    let port = serve_on_loopback(&memory).expect("recorded");
    assert_eq!(memory.tcp_servers().len(), 1);
    assert_eq!(
        memory.tcp_servers()[0].interface,
        std::net::IpAddr::from([127, 0, 0, 1])
    );
    drop(port.stop_listening());
    let connector = memory.connect_tcp(
        "poetry.example",
        10000,
        Rc::new(AccumulatingProtocol::default),
    );
    assert_eq!(
        ConnectorOps::destination(&connector),
        "poetry.example:10000"
    );
    ReactorUnix::listen_unix_with(
        &memory,
        Path::new("/tmp/poems.sock"),
        Rc::new(AccumulatingProtocol::default),
        UnixListenOptions::default(),
    )
    .expect("recorded");
    assert_eq!(memory.unix_servers().len(), 1);
    ReactorUdp::listen_udp_with(&memory, 5353, Box::new(Quiet), UdpOptions::default())
        .expect("recorded");
    assert_eq!(memory.udp_servers()[0].port, 5353);
}

reactor_test! {
    fn the_same_code_listens_for_real_on_a_reactor(reactor: Reactor) {
        let port = serve_on_loopback(&reactor).expect("listen");
        let n = ListeningPort::host(&port).port().expect("a TCP port");
        let client = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", n)).expect("connect");
            s.write_all(b"ping").expect("write");
            let mut back = [0u8; 4];
            s.read_exact(&mut back).expect("read");
            back
        });
        let r = reactor.clone();
        reactor.call_later(0.01, move || {
            let r2 = r.clone();
            // Poll until the client thread is done, then stop.
            fn wait(r: Reactor, client: std::thread::JoinHandle<[u8; 4]>, out: Rc<std::cell::RefCell<Option<[u8; 4]>>>) {
                if client.is_finished() {
                    *out.borrow_mut() = client.join().ok();
                    let _ = r.stop();
                } else {
                    let r2 = r.clone();
                    r.call_later(0.01, move || wait(r2, client, out));
                }
            }
            wait(r2, client, OUT.with(|o| o.clone()));
        });
        common::safety_stop(&reactor, 20.0);
        reactor.run().expect("run");
        drop(port);
        assert_eq!(OUT.with(|o| o.borrow_mut().take()), Some(*b"ping"));
    }
}

thread_local! {
    static OUT: Rc<std::cell::RefCell<Option<[u8; 4]>>> = Rc::new(std::cell::RefCell::new(None));
}
