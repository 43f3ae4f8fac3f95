//! The `poetry` plugin: the tutorial's poetry servers, fast and slow (Dave Peticolas'
//! `twisted-server-1/fastpoetry.py` and `blocking-server/slowpoetry.py`, whose
//! `--num-bytes` and `--delay` options it keeps).
//!
//! Every client gets the poem file's bytes, as they are (any encoding, not only UTF-8),
//! then the connection closes. Fast, the default, sends it all at once, through a
//! [`FileSender`] so that a large file is queued one chunk at a time whatever the number of
//! clients; slow sends `num_bytes` bytes every `delay` on the reactor's timers. The file is
//! read once, when the service is built.
//!
//! [`PoetryFactory`] and [`PoetryProtocol`] are the tutorial's classes, [`poetry_service`]
//! the service a library user embeds, [`PoetryPlugin`] the runner's
//! `torsion poetry --listen ENDPOINT [--num-bytes N] [--delay SECS] FILE`.
//!
//! Invariant: a slow connection has at most one timer pending, and none once it is closed:
//! `connection_lost` cancels it, and the timer holds only a weak reference to the
//! connection's state, so a late one does nothing.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::Cursor;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Duration;

use clap::{Arg, ArgMatches, Command, value_parser};
use torsion::application::{Service, StreamServerEndpointService};
use torsion::endpoints::{ServerEndpoint, server_from_string};
use torsion::net::{Address, Transport};
use torsion::protocol::{Factory, Protocol};
use torsion::protocols::basic::FileSender;
use torsion::time::{DelayedCall, ReactorTime};
use torsion::{Failure, Reactor};

use super::required_string;
use crate::Plugin;

/// The slow server's chunk size when only `--delay` is given (`slowpoetry.py`'s default).
pub const DEFAULT_NUM_BYTES: usize = 10;

/// How a poem is sent (the difference between `fastpoetry.py` and `slowpoetry.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// The whole poem at once, then close (`fastpoetry.py`).
    AllAtOnce,
    /// `num_bytes` bytes at once, then as many again every `delay` until the poem is sent,
    /// then close (`slowpoetry.py`'s `--num-bytes` and `--delay`). A zero delay sends the
    /// chunks one turn of the reactor apart.
    Chunks {
        /// Bytes per chunk.
        num_bytes: NonZeroUsize,
        /// Time between chunks.
        delay: Duration,
    },
}

/// Reads a poem file, once (the tutorials' `open(poetry_file).read()`, in binary).
///
/// # Errors
///
/// The file cannot be read: the failure names the path and the reason.
pub fn read_poem(path: &Path) -> Result<Rc<[u8]>, Failure> {
    std::fs::read(path)
        .map(Rc::from)
        .map_err(|e| Failure::msg(format!("cannot read poem file {}: {e}", path.display())))
}

/// Holds the poem and how to send it, for every connection (Twisted's
/// `PoetryFactory(ServerFactory)`).
pub struct PoetryFactory {
    poem: Rc<[u8]>,
    pacing: Pacing,
    clock: Rc<dyn ReactorTime>,
}

impl PoetryFactory {
    /// A factory serving `poem` with `pacing`, timing slow chunks on `clock` (the reactor,
    /// or a [`Clock`](torsion::time::Clock) in tests).
    pub fn new<C>(clock: &C, poem: impl Into<Rc<[u8]>>, pacing: Pacing) -> Rc<PoetryFactory>
    where
        C: ReactorTime + Clone + 'static,
    {
        Rc::new(PoetryFactory {
            poem: poem.into(),
            pacing,
            clock: Rc::new(clock.clone()),
        })
    }

    /// The poem every client gets.
    pub fn poem(&self) -> &[u8] {
        &self.poem
    }

    /// How it is sent.
    pub fn pacing(&self) -> Pacing {
        self.pacing
    }
}

impl Factory for PoetryFactory {
    fn build_protocol(self: Rc<Self>, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(PoetryProtocol {
            factory: self,
            slow: None,
        }))
    }
}

impl fmt::Debug for PoetryFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoetryFactory")
            .field("poem_len", &self.poem.len())
            .field("pacing", &self.pacing)
            .finish_non_exhaustive()
    }
}

/// Sends its factory's poem to one client, then closes (Twisted's `PoetryProtocol`).
pub struct PoetryProtocol {
    factory: Rc<PoetryFactory>,
    /// The slow sender's state, while chunks remain.
    slow: Option<Rc<SlowSend>>,
}

impl Protocol for PoetryProtocol {
    fn connection_made(&mut self, transport: Transport) {
        match self.factory.pacing {
            Pacing::AllAtOnce => {
                let reader = Cursor::new(self.factory.poem.clone());
                let sent = FileSender::begin_file_transfer(reader, &transport, None);
                // Sent, or the client went away (the sender was stopped): close either way.
                drop(sent.add_both(move |_| {
                    transport.lose_connection();
                    Ok::<(), Failure>(())
                }));
            }
            Pacing::Chunks { num_bytes, delay } => {
                let slow = Rc::new(SlowSend {
                    transport,
                    poem: self.factory.poem.clone(),
                    sent: Cell::new(0),
                    num_bytes: num_bytes.get(),
                    delay,
                    clock: self.factory.clock.clone(),
                    timer: RefCell::new(None),
                });
                SlowSend::send_next(&slow);
                self.slow = Some(slow);
            }
        }
    }

    fn connection_lost(&mut self, _reason: Failure) {
        if let Some(slow) = self.slow.take() {
            slow.stop();
        }
    }
}

impl fmt::Debug for PoetryProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoetryProtocol")
            .field("pacing", &self.factory.pacing)
            .field("sent", &self.slow.as_ref().map(|s| s.sent.get()))
            .finish()
    }
}

/// One slow connection: what is left to send and the timer that sends the next chunk.
struct SlowSend {
    transport: Transport,
    poem: Rc<[u8]>,
    sent: Cell<usize>,
    num_bytes: usize,
    delay: Duration,
    clock: Rc<dyn ReactorTime>,
    timer: RefCell<Option<DelayedCall>>,
}

impl SlowSend {
    /// Sends the next chunk, then schedules the one after it or closes.
    fn send_next(this: &Rc<SlowSend>) {
        if !this.transport.is_connected() {
            return;
        }
        let start = this.sent.get();
        let end = start.saturating_add(this.num_bytes).min(this.poem.len());
        if end > start {
            this.transport.write(&this.poem[start..end]);
        }
        this.sent.set(end);
        if end >= this.poem.len() {
            this.transport.lose_connection();
            return;
        }
        let weak: Weak<SlowSend> = Rc::downgrade(this);
        let timer = this.clock.call_later_boxed(
            this.delay,
            Box::new(move || {
                if let Some(this) = weak.upgrade() {
                    SlowSend::send_next(&this);
                }
            }),
        );
        let previous = this.timer.borrow_mut().replace(timer);
        drop(previous);
    }

    /// The client went away: cancel the pending chunk.
    fn stop(&self) {
        let timer = self.timer.borrow_mut().take();
        if let Some(timer) = timer
            && timer.active()
        {
            let _ = timer.cancel();
        }
    }
}

/// A stopped service that serves `poem` on `endpoint` with `pacing` once started, timing
/// slow chunks on `reactor` (Twisted's `StreamServerEndpointService(endpoint,
/// PoetryFactory(poem))`).
///
/// # Examples
///
/// A slow poetry server on any free local port:
///
/// ```
/// use std::num::NonZeroUsize;
/// use std::time::Duration;
/// use torsion::Reactor;
/// use torsion::application::Service;
/// use torsion::endpoints::server_from_string;
/// use torsion_cli::plugins::poetry::{Pacing, poetry_service};
///
/// let reactor = Reactor::new().unwrap();
/// let endpoint = server_from_string(&reactor, "tcp:0:interface=127.0.0.1").unwrap();
/// let pacing = Pacing::Chunks {
///     num_bytes: NonZeroUsize::new(10).unwrap(),
///     delay: Duration::from_millis(700),
/// };
/// let poem = b"This poem is short.\n".to_vec();
/// let service = poetry_service(&reactor, endpoint, poem, pacing);
/// service.start_service().unwrap();
/// assert!(service.port().is_some());
/// drop(service.stop_service());
/// ```
pub fn poetry_service(
    reactor: &Reactor,
    endpoint: Box<dyn ServerEndpoint>,
    poem: impl Into<Rc<[u8]>>,
    pacing: Pacing,
) -> Rc<StreamServerEndpointService> {
    StreamServerEndpointService::new(endpoint, PoetryFactory::new(reactor, poem, pacing))
}

/// Parses `--delay`: finite, non-negative seconds.
fn parse_delay(arg: &str) -> Result<Duration, String> {
    let secs: f64 = arg
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {arg}"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("not a finite, non-negative number of seconds: {arg}"))
}

/// `torsion poetry --listen ENDPOINT [--num-bytes N] [--delay SECS] FILE`: the fast and
/// slow poetry servers as a runner plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct PoetryPlugin;

impl Plugin for PoetryPlugin {
    fn name(&self) -> &'static str {
        "poetry"
    }

    fn description(&self) -> &'static str {
        "Poetry server: sends a file to each client, all at once or slowly, then closes"
    }

    fn command(&self) -> Command {
        Command::new(self.name())
            .about(self.description())
            .long_about(
                "Poetry server (the Twisted tutorial's fastpoetry.py and slowpoetry.py): \
                 each client gets the bytes of FILE, as they are, then the connection \
                 closes. Without --num-bytes and --delay the whole poem is sent at once; \
                 with either, it is sent in chunks of --num-bytes bytes (10 if only --delay \
                 is given), the first at once and one more every --delay seconds (0 if only \
                 --num-bytes is given). FILE is read once, at start.",
            )
            .arg(super::listen_arg())
            .arg(
                Arg::new("num-bytes")
                    .long("num-bytes")
                    .value_name("N")
                    .value_parser(value_parser!(u64).range(1..))
                    .help(
                        "Send the poem in chunks of N bytes (slow mode; 10 if only --delay is \
                         given; default: all at once)",
                    ),
            )
            .arg(
                Arg::new("delay")
                    .long("delay")
                    .value_name("SECS")
                    .value_parser(parse_delay)
                    .help(
                        "Seconds between chunks, fractions allowed (slow mode; 0 if only \
                         --num-bytes is given)",
                    ),
            )
            .arg(
                Arg::new("file")
                    .value_name("FILE")
                    .required(true)
                    .value_parser(value_parser!(PathBuf))
                    .help("The poem to serve, sent byte for byte"),
            )
    }

    fn make_service(
        &self,
        reactor: &Reactor,
        options: &ArgMatches,
    ) -> Result<Rc<dyn Service>, Failure> {
        let listen = required_string(options, "listen")?;
        let file = options
            .get_one::<PathBuf>("file")
            .ok_or_else(|| Failure::msg("the poem FILE is required"))?;
        let num_bytes = options.get_one::<u64>("num-bytes").copied();
        let delay = options.get_one::<Duration>("delay").copied();
        let pacing = match (num_bytes, delay) {
            (None, None) => Pacing::AllAtOnce,
            (num_bytes, delay) => {
                let num_bytes = match num_bytes {
                    Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                    None => DEFAULT_NUM_BYTES,
                };
                Pacing::Chunks {
                    num_bytes: NonZeroUsize::new(num_bytes)
                        .ok_or_else(|| Failure::msg("--num-bytes must be at least 1"))?,
                    delay: delay.unwrap_or(Duration::ZERO),
                }
            }
        };
        let poem = read_poem(file)?;
        let endpoint = server_from_string(reactor, listen)?;
        Ok(poetry_service(reactor, endpoint, poem, pacing))
    }
}
