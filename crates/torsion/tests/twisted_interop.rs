//! torsion's basic protocols against real Twisted peers (from PyPI) over loopback, on every
//! backend: 10,000 lines each way between a Twisted `LineReceiver` and a torsion one, split
//! at random byte boundaries; an over-long line that drops only its own connection; and
//! datagrams between Twisted's `DatagramProtocol` and a torsion UDP echo.
//!
//! The peers are `tests/interop/line_peers.py` and `udp_peer.py` under the Python of
//! `$TORSION_INTEROP_PYTHON` (`.ci/run` sets it; `tests/interop/setup.sh` makes one). A
//! missing Python skips the tests, or fails them when `TORSION_REQUIRE_INTEROP=1`.

mod common;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use common::interop::{Finished, Peer, peer_script, run_until, twisted_python};
use torsion::Reactor;
use torsion::net::Transport;
use torsion::net::tcp::ListenOptions;
use torsion::net::udp::{DatagramTransport, UdpOptions};
use torsion::protocol::DatagramProtocol;
use torsion::protocols::basic::{LineContext, LineHandler, LineReceiver};

/// Line `i` of an exchange (as `line_peers.py` makes it).
fn line(i: usize) -> Vec<u8> {
    let mut line = format!("line {i} ").into_bytes();
    line.extend(std::iter::repeat_n(b'x', i % 97));
    line
}

const LINES: usize = 10_000;

fn local() -> ListenOptions {
    ListenOptions {
        interface: [127, 0, 0, 1].into(),
        ..Default::default()
    }
}

fn python(script: &str, args: &[&str]) -> Option<Peer> {
    let python = twisted_python("twisted")?;
    Some(Peer::spawn(
        Command::new(python).arg(peer_script(script)).args(args),
        b"",
    ))
}

/// Echoes every line (torsion's side of the exchange the Twisted peer starts).
struct Echo;

impl LineHandler for Echo {
    fn line_received(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        ctx.send_line(line);
    }
}

/// Sends [`LINES`] lines split at random byte boundaries, a piece per reactor turn, and
/// checks their echoes.
struct Sender {
    next_echo: Rc<Cell<usize>>,
    wrong: Rc<RefCell<Option<String>>>,
}

impl LineHandler for Sender {
    fn connection_made(&mut self, ctx: &mut LineContext<'_>) {
        let wire: Vec<u8> = (0..LINES)
            .flat_map(|i| {
                let mut l = line(i);
                l.extend_from_slice(b"\r\n");
                l
            })
            .collect();
        send_pieces(
            ctx.sender().transport().clone(),
            Rc::new(wire),
            0,
            0x2545_f491,
        );
    }

    fn line_received(&mut self, ctx: &mut LineContext<'_>, got: &[u8]) {
        let i = self.next_echo.get();
        if got != line(i).as_slice() {
            *self.wrong.borrow_mut() = Some(format!(
                "echo {i}: {:?}",
                String::from_utf8_lossy(&got[..got.len().min(40)])
            ));
            ctx.lose_connection();
            return;
        }
        self.next_echo.set(i + 1);
        if i + 1 == LINES {
            ctx.lose_connection();
        }
    }
}

/// Writes `wire[at..]` a piece of 1 to 64 bytes at a time, one piece per reactor turn (a
/// small xorshift picks the sizes).
fn send_pieces(transport: Transport, wire: Rc<Vec<u8>>, at: usize, mut seed: u32) {
    if at >= wire.len() || !transport.is_connected() {
        return;
    }
    seed ^= seed << 13;
    seed ^= seed >> 17;
    seed ^= seed << 5;
    let end = (at + 1 + (seed % 64) as usize).min(wire.len());
    transport.write(&wire[at..end]);
    let Some(reactor) = Reactor::current() else {
        return;
    };
    reactor.call_soon(move || send_pieces(transport, wire, end, seed));
}

/// Echoes datagrams.
struct UdpEcho(Option<DatagramTransport>);

impl DatagramProtocol for UdpEcho {
    fn start_protocol(&mut self, transport: DatagramTransport) {
        self.0 = Some(transport);
    }
    fn datagram_received(&mut self, data: &[u8], addr: SocketAddr) {
        if let Some(t) = &self.0 {
            let _ = t.write(data, addr);
        }
    }
}

/// A torsion [`Echo`] line server on 127.0.0.1; its port.
fn listen_line_echo(reactor: &Reactor) -> u16 {
    reactor
        .listen_tcp_with(0, Rc::new(|| LineReceiver::new(Echo)), local())
        .unwrap()
        .host()
        .port()
        .unwrap()
}

/// Runs the reactor until `peer` exits; what it printed.
fn run_until_it_exits(reactor: &Reactor, peer: Peer) -> Finished {
    let exited = peer.exited();
    run_until(reactor, move || exited.load(Ordering::SeqCst));
    peer.finish()
}

reactor_test! {
    fn a_twisted_line_receiver_sends_ten_thousand_lines_split_at_random(reactor: Reactor) {
        let port = listen_line_echo(&reactor);
        let Some(peer) = python(
            "line_peers.py",
            &["send", &port.to_string(), &LINES.to_string(), "17"],
        ) else {
            return;
        };
        let out = run_until_it_exits(&reactor, peer);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, format!("OK {LINES}\n"), "{out:?}");
    }

    fn torsion_sends_ten_thousand_lines_split_at_random_to_a_twisted_line_receiver(reactor: Reactor) {
        let Some(peer) = python("line_peers.py", &["echo-server"]) else {
            return;
        };
        let port: u16 = peer.line_starting("PORT ").parse().unwrap();
        let next_echo = Rc::new(Cell::new(0));
        let wrong = Rc::new(RefCell::new(None));
        let (n, w) = (next_echo.clone(), wrong.clone());
        let factory = Rc::new(move || {
            LineReceiver::new(Sender {
                next_echo: n.clone(),
                wrong: w.clone(),
            })
        });
        reactor.connect_tcp("127.0.0.1", port, factory);
        let (n, w) = (next_echo.clone(), wrong.clone());
        run_until(&reactor, move || n.get() == LINES || w.borrow().is_some());
        drop(peer);
        assert_eq!(*wrong.borrow(), None);
        assert_eq!(next_echo.get(), LINES);
    }

    fn an_over_long_line_from_twisted_drops_only_its_connection(reactor: Reactor) {
        let port = listen_line_echo(&reactor);
        let Some(peer) = python("line_peers.py", &["long", &port.to_string()]) else {
            return;
        };
        let out = run_until_it_exits(&reactor, peer);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, "CLOSED-LONG\nECHO still here\n", "{out:?}");
    }

    fn twisted_datagrams_come_back_from_a_torsion_udp_echo(reactor: Reactor) {
        let options = UdpOptions {
            interface: [127, 0, 0, 1].into(),
            ..UdpOptions::default()
        };
        let port = reactor
            .listen_udp_with(0, Box::new(UdpEcho(None)), options)
            .unwrap()
            .host()
            .port()
            .unwrap();
        let Some(peer) = python("udp_peer.py", &["send", &port.to_string(), "500"]) else {
            return;
        };
        let out = run_until_it_exits(&reactor, peer);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, "OK 500\n", "{out:?}");
    }
}
