//! Bounded memory against a peer that never reads: an echo server that throttles its
//! reading holds at most about a high-water mark and one read of output, on every backend
//! and over the in-memory pump.

mod common;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use torsion::net::Transport;
use torsion::net::tcp::{HIGH_WATER_MARK, ListenOptions};

/// One `recv`: the reactor reads at most 64 KiB at a time.
const READ_BUFFER_SIZE: usize = 64 * 1024;
use torsion::protocol::Protocol;
use torsion::{Failure, Reactor};

/// Echoes, throttled, recording the most output it ever held.
struct ThrottledEcho {
    transport: Option<Transport>,
    most: Rc<Cell<usize>>,
    reactor: Reactor,
}

impl Protocol for ThrottledEcho {
    fn connection_made(&mut self, transport: Transport) {
        transport.throttle_reading(true);
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data);
            self.most.set(self.most.get().max(t.buffered()));
        }
    }
    fn connection_lost(&mut self, _reason: Failure) {
        let _ = self.reactor.stop();
    }
}

reactor_test! {
    fn a_throttled_echo_holds_bounded_output_against_a_peer_that_never_reads(reactor: Reactor) {
        const FLOOD: usize = 64 * 1024 * 1024;
        let most = Rc::new(Cell::new(0));
        let (m, r) = (most.clone(), reactor.clone());
        let options = ListenOptions { interface: [127, 0, 0, 1].into(), ..ListenOptions::default() };
        let port = reactor
            .listen_tcp_with(0, Rc::new(move || ThrottledEcho { transport: None, most: m.clone(), reactor: r.clone() }), options)
            .expect("listen");
        let n = port.host().port().expect("port");
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", n)).expect("connect");
            s.set_write_timeout(Some(Duration::from_millis(500))).expect("timeout");
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < FLOOD {
                match s.write(&chunk) {
                    Ok(k) => sent += k,
                    Err(_) => break, // the server stopped reading: the kernel's buffers are full
                }
            }
            drop(s.shutdown(std::net::Shutdown::Both));
            sent
        });
        common::safety_stop(&reactor, 60.0);
        reactor.run().expect("run");
        let sent = client.join().expect("client");
        drop(port);
        assert!(sent < FLOOD, "the server kept reading everything ({sent} bytes)");
        let bound = HIGH_WATER_MARK + READ_BUFFER_SIZE;
        assert!(most.get() <= bound, "held {} bytes, more than {bound}", most.get());
    }
}

#[test]
fn a_throttled_side_of_the_pump_stops_receiving_while_its_output_waits() {
    use torsion::testing::Pump;
    let most = Rc::new(Cell::new(0));
    let reactor = Reactor::new().expect("reactor");
    let server = ThrottledEcho {
        transport: None,
        most: most.clone(),
        reactor,
    };
    /// A client that floods and never lets anything in.
    struct Flooder(Rc<RefCell<Option<Transport>>>);
    impl Protocol for Flooder {
        fn connection_made(&mut self, t: Transport) {
            t.pause_producing();
            *self.0.borrow_mut() = Some(t);
        }
    }
    let client_transport = Rc::new(RefCell::new(None));
    let pump = Pump::new(
        Box::new(server),
        Box::new(Flooder(client_transport.clone())),
    );
    let chunk = vec![b'x'; 16 * 1024];
    let t = client_transport.borrow().clone().expect("connected");
    for _ in 0..1024 {
        t.write(&chunk);
        pump.pump();
    }
    let bound = HIGH_WATER_MARK + 16 * 1024;
    assert!(
        most.get() <= bound,
        "held {} bytes, more than {bound}",
        most.get()
    );
    assert!(
        t.buffered() > 8 * 1024 * 1024,
        "the flood waits on the client's side"
    );
}
