//! The tutorials' countdown: `call_later` rescheduling itself, then `stop`.
//!
//! Run with `cargo run -p torsion --example countdown`.

use std::cell::Cell;
use std::rc::Rc;

use torsion::Reactor;
use torsion::time::ReactorTime;

struct Countdown {
    counter: Cell<u32>,
    reactor: Reactor,
}

impl Countdown {
    fn count(self: Rc<Self>) {
        if self.counter.get() == 0 {
            self.reactor.stop().expect("the reactor is running");
        } else {
            println!("{} ...", self.counter.get());
            self.counter.set(self.counter.get() - 1);
            let again = self.clone();
            self.reactor.call_later(1.0, move || again.count());
        }
    }
}

fn main() -> Result<(), torsion::Failure> {
    let reactor = Reactor::new()?;
    let countdown = Rc::new(Countdown {
        counter: Cell::new(5),
        reactor: reactor.clone(),
    });
    reactor.call_when_running(move || countdown.count());
    println!("Start!");
    reactor.run()?;
    println!("Stop!");
    Ok(())
}
