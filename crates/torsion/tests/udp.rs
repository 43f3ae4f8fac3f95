//! UDP over real loopback sockets, on every backend: datagram ports, connected UDP,
//! truncation at `max_packet_size`, multicast, and adopting a bound socket.

mod common;

use std::cell::{Cell, RefCell};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::rc::Rc;

use torsion::Reactor;
use torsion::error::{InvalidArgument, MessageLengthError};
use torsion::net::Address;
use torsion::net::udp::{DEFAULT_MAX_PACKET_SIZE, DatagramTransport, UdpOptions, UdpPort};
use torsion::protocol::DatagramProtocol;

type Datagrams = Rc<RefCell<Vec<(Vec<u8>, SocketAddr)>>>;

fn local() -> UdpOptions {
    UdpOptions {
        interface: [127, 0, 0, 1].into(),
        ..UdpOptions::default()
    }
}

/// Sends every datagram back where it came from.
#[derive(Default)]
struct Echo(Option<DatagramTransport>);

impl DatagramProtocol for Echo {
    fn start_protocol(&mut self, transport: DatagramTransport) {
        self.0 = Some(transport);
    }
    fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
        if let Some(t) = &self.0 {
            t.write(data, addr).unwrap();
        }
    }
}

/// Sends `send` (each to `to`) when started, records what arrives and what happens, and
/// stops the reactor after `stop_after` datagrams or a refusal.
struct Recorder {
    reactor: Reactor,
    to: Option<SocketAddr>,
    send: Vec<Vec<u8>>,
    stop_after: usize,
    got: Datagrams,
    events: Rc<RefCell<Vec<String>>>,
}

impl Recorder {
    fn new(reactor: &Reactor, to: Option<SocketAddr>, send: &[&[u8]], stop_after: usize) -> Self {
        Recorder {
            reactor: reactor.clone(),
            to,
            send: send.iter().map(|d| d.to_vec()).collect(),
            stop_after,
            got: Rc::new(RefCell::new(Vec::new())),
            events: Rc::new(RefCell::new(Vec::new())),
        }
    }
}

impl DatagramProtocol for Recorder {
    fn start_protocol(&mut self, transport: DatagramTransport) {
        self.events.borrow_mut().push("start_protocol".into());
        if let Some(to) = self.to {
            for datagram in &self.send {
                transport.write(datagram, to).unwrap();
            }
        }
    }
    fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
        self.got.borrow_mut().push((data.to_vec(), addr));
        if self.got.borrow().len() >= self.stop_after {
            let _ = self.reactor.stop();
        }
    }
    fn connection_refused(&mut self) {
        self.events.borrow_mut().push("connection_refused".into());
        let _ = self.reactor.stop();
    }
    fn stop_protocol(&mut self) {
        self.events.borrow_mut().push("stop_protocol".into());
    }
}

fn a_closed_udp_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    drop(socket);
    address
}

fn address_of(port: &UdpPort) -> SocketAddr {
    port.host().socket_addr().unwrap()
}

reactor_test! {
    fn udp_echo_between_two_ports(reactor: Reactor) {
        let server = reactor.listen_udp_with(0, Box::new(Echo::default()), local()).unwrap();
        let to = address_of(&server);
        let client = Recorder::new(&reactor, Some(to), &[b"ping", b"pong"], 2);
        let got = client.got.clone();
        let events = client.events.clone();
        let client_port = reactor.listen_udp_with(0, Box::new(client), local()).unwrap();
        assert_eq!(*events.borrow(), vec!["start_protocol"], "start_protocol runs inside listen_udp");
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let got = got.borrow();
        let data: Vec<&[u8]> = got.iter().map(|(d, _)| d.as_slice()).collect();
        assert_eq!(data, vec![&b"ping"[..], &b"pong"[..]]);
        assert!(got.iter().all(|(_, from)| *from == to));
        assert!(matches!(client_port.host(), Address::Udp(a) if a.ip() == Ipv4Addr::LOCALHOST));
        assert_eq!(*events.borrow(), vec!["start_protocol", "stop_protocol"], "shutdown stops the protocol");
    }

    fn connected_udp_gets_connection_refused_when_nothing_listens(reactor: Reactor) {
        let closed = a_closed_udp_port();
        let client = Recorder::new(&reactor, None, &[], 1);
        let events = client.events.clone();
        let port = reactor.listen_udp_with(0, Box::new(client), local()).unwrap();
        port.connect(closed).unwrap();
        assert_eq!(port.connected_to(), Some(closed));
        port.write_connected(b"anyone there?").unwrap();
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(
            *events.borrow(),
            vec!["start_protocol", "connection_refused", "stop_protocol"]
        );
    }

    fn a_refused_port_keeps_working(reactor: Reactor) {
        // A refusal arrives as an error event on the socket; the port goes on reading. Here
        // the peer comes up after the refusal, and its answer arrives.
        struct Retry {
            reactor: Reactor,
            peer: SocketAddr,
            transport: Option<DatagramTransport>,
            server: Rc<RefCell<Option<UdpPort>>>,
            events: Rc<RefCell<Vec<String>>>,
        }
        impl DatagramProtocol for Retry {
            fn start_protocol(&mut self, transport: DatagramTransport) {
                transport.connect(self.peer).unwrap();
                transport.write_connected(b"first").unwrap();
                self.transport = Some(transport);
            }
            fn connection_refused(&mut self) {
                self.events.borrow_mut().push("connection_refused".into());
                let socket = UdpSocket::bind(self.peer).unwrap();
                let server = self
                    .reactor
                    .adopt_datagram_port(OwnedFd::from(socket), Box::new(Echo::default()))
                    .unwrap();
                *self.server.borrow_mut() = Some(server);
                self.transport.as_ref().unwrap().write_connected(b"second").unwrap();
            }
            fn datagram_received(&mut self, data: &[u8], _addr: SocketAddr) {
                self.events.borrow_mut().push(String::from_utf8_lossy(data).into_owned());
                let _ = self.reactor.stop();
            }
        }
        let events = Rc::new(RefCell::new(Vec::new()));
        let server = Rc::new(RefCell::new(None));
        let retry = Retry {
            reactor: reactor.clone(),
            peer: a_closed_udp_port(),
            transport: None,
            server: server.clone(),
            events: events.clone(),
        };
        let _port = reactor.listen_udp_with(0, Box::new(retry), local()).unwrap();
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(*events.borrow(), vec!["connection_refused", "second"]);
        assert!(server.borrow().is_some());
    }

    fn datagrams_longer_than_max_packet_size_are_truncated(reactor: Reactor) {
        // As in Twisted, a datagram longer than max_packet_size is delivered cut to that
        // many bytes; the rest is dropped by the kernel. Shorter ones arrive whole.
        let receiver = Recorder::new(&reactor, None, &[], 3);
        let got = receiver.got.clone();
        let options = UdpOptions { max_packet_size: 16, ..local() };
        let port = reactor.listen_udp_with(0, Box::new(receiver), options).unwrap();
        assert_eq!(port.max_packet_size(), 16);
        let long: Vec<u8> = (0..100u8).collect();
        let sender = Recorder::new(&reactor, Some(address_of(&port)), &[&long, &long[..16], b"short"], 0);
        let _sender = reactor.listen_udp_with(0, Box::new(sender), local()).unwrap();
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let got = got.borrow();
        let data: Vec<&[u8]> = got.iter().map(|(d, _)| d.as_slice()).collect();
        assert_eq!(data, vec![&long[..16], &long[..16], &b"short"[..]]);
    }

    fn max_packet_size_defaults_to_8192(reactor: Reactor) {
        let receiver = Recorder::new(&reactor, None, &[], 1);
        let got = receiver.got.clone();
        let port = reactor.listen_udp_with(0, Box::new(receiver), local()).unwrap();
        assert_eq!(port.max_packet_size(), DEFAULT_MAX_PACKET_SIZE);
        assert_eq!(DEFAULT_MAX_PACKET_SIZE, 8192);
        let big = vec![7u8; 10_000];
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&big, address_of(&port)).unwrap();
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(got.borrow()[0].0.len(), 8192);
    }

    fn max_packet_size_above_the_shared_buffer_reads_whole_datagrams(reactor: Reactor) {
        let receiver = Recorder::new(&reactor, None, &[], 1);
        let got = receiver.got.clone();
        let options = UdpOptions { max_packet_size: 100_000, ..local() };
        let port = reactor.listen_udp_with(0, Box::new(receiver), options).unwrap();
        let big = vec![9u8; 65_507];
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&big, address_of(&port)).unwrap();
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(got.borrow()[0].0.len(), 65_507);
    }

    fn a_datagram_too_long_to_send_is_message_length_error(reactor: Reactor) {
        struct Quiet;
        impl DatagramProtocol for Quiet {}
        let port = reactor.listen_udp_with(0, Box::new(Quiet), local()).unwrap();
        let to = a_closed_udp_port();
        let err = port.write(&vec![0u8; 70_000], to).unwrap_err();
        assert_eq!(err.downcast_ref::<MessageLengthError>(), Some(&MessageLengthError { length: 70_000 }));
        drop(port.stop_listening());
    }

    fn connected_ports_check_their_address(reactor: Reactor) {
        struct Quiet;
        impl DatagramProtocol for Quiet {}
        let port = reactor.listen_udp_with(0, Box::new(Quiet), local()).unwrap();
        let to = a_closed_udp_port();
        assert!(port.write_connected(b"x").unwrap_err().check::<InvalidArgument>(), "not connected yet");
        port.connect(to).unwrap();
        assert!(port.connect(to).unwrap_err().check::<InvalidArgument>(), "no reconnecting");
        let elsewhere = SocketAddr::from(([127, 0, 0, 1], to.port().wrapping_add(1).max(1)));
        assert!(port.write(b"x", elsewhere).unwrap_err().check::<InvalidArgument>());
        drop(port.stop_listening());
    }

    fn stop_listening_runs_stop_protocol_then_fires(reactor: Reactor) {
        let receiver = Recorder::new(&reactor, None, &[], 1);
        let events = receiver.events.clone();
        let port = reactor.listen_udp_with(0, Box::new(receiver), local()).unwrap();
        let fired = Rc::new(Cell::new(false));
        let (p, f, e, r) = (port.clone(), fired.clone(), events.clone(), reactor.clone());
        reactor.call_when_running(move || {
            let d = p.stop_listening();
            assert!(!p.is_listening());
            assert_eq!(e.borrow().len(), 1, "stop_protocol waits for the loop");
            let p2 = p.clone();
            drop(d.map(move |()| {
                f.set(true);
                assert!(p2.write(b"late", SocketAddr::from(([127, 0, 0, 1], 9))).is_err());
                r.stop().unwrap();
            }));
        });
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert!(fired.get());
        assert_eq!(*events.borrow(), vec!["start_protocol", "stop_protocol"]);
        let mut again = port.stop_listening();
        assert!(again.take_result().is_some(), "stopping a stopped port fires at once");
    }

    fn a_panicking_datagram_received_does_not_close_the_port(reactor: Reactor) {
        struct PanicFirst(Reactor, Rc<Cell<u32>>);
        impl DatagramProtocol for PanicFirst {
            fn datagram_received(&mut self, _data: &[u8], _addr: SocketAddr) {
                self.1.set(self.1.get() + 1);
                if self.1.get() == 1 {
                    panic!("first datagram");
                }
                let _ = self.0.stop();
            }
        }
        let seen = Rc::new(Cell::new(0));
        let port = reactor
            .listen_udp_with(0, Box::new(PanicFirst(reactor.clone(), seen.clone())), local())
            .unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"one", address_of(&port)).unwrap();
        sender.send_to(b"two", address_of(&port)).unwrap();
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(seen.get(), 2);
    }

    fn multicast_join_on_loopback(reactor: Reactor) {
        const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 42, 99);
        let receiver = Recorder::new(&reactor, None, &[], 1);
        let got = receiver.got.clone();
        let options = UdpOptions { reuse_port: true, ..UdpOptions::default() };
        let port = reactor.listen_udp_with(0, Box::new(receiver), options).unwrap();
        if let Err(err) = port.join_group(GROUP, Ipv4Addr::LOCALHOST) {
            assert!(err.check::<torsion::error::MulticastJoinError>());
            eprintln!("note: skipping multicast_join_on_loopback: cannot join {GROUP} on 127.0.0.1: {err}");
            drop(port.stop_listening());
            return;
        }
        struct Quiet;
        impl DatagramProtocol for Quiet {}
        let sender = reactor.listen_udp_with(0, Box::new(Quiet), local()).unwrap();
        sender.set_outgoing_interface(Ipv4Addr::LOCALHOST).unwrap();
        sender.set_loopback_mode(true).unwrap();
        sender.set_ttl(1).unwrap();
        assert_eq!(sender.outgoing_interface().unwrap(), Ipv4Addr::LOCALHOST);
        assert!(sender.loopback_mode().unwrap());
        assert_eq!(sender.ttl().unwrap(), 1);
        let to = SocketAddr::from((GROUP, port.host().port().unwrap()));
        if let Err(err) = sender.write(b"to the group", to) {
            eprintln!("note: skipping multicast_join_on_loopback: no multicast route via 127.0.0.1: {err}");
            return;
        }
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        let got = got.borrow();
        assert_eq!(got[0].0, b"to the group");
        assert_eq!(got[0].1, sender.host().socket_addr().unwrap());
        port.leave_group(GROUP, Ipv4Addr::LOCALHOST).unwrap_err(); // port closed at shutdown
    }

    fn adopt_datagram_port_reads_a_bound_socket(reactor: Reactor) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap();
        let server = reactor.adopt_datagram_port(OwnedFd::from(socket), Box::new(Echo::default())).unwrap();
        assert_eq!(server.host(), Address::Udp(address));
        let client = Recorder::new(&reactor, Some(address), &[b"adopted"], 1);
        let got = client.got.clone();
        let _client = reactor.listen_udp_with(0, Box::new(client), local()).unwrap();
        common::safety_stop(&reactor, 20.0);
        reactor.run().unwrap();
        assert_eq!(got.borrow()[0].0, b"adopted");
    }

    fn adopt_datagram_port_refuses_a_stream_socket(reactor: Reactor) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        struct Quiet;
        impl DatagramProtocol for Quiet {}
        let err = reactor.adopt_datagram_port(OwnedFd::from(listener), Box::new(Quiet)).unwrap_err();
        assert!(err.check::<InvalidArgument>(), "{err}");
    }
}
