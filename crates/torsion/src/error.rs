//! Every error torsion reports, in one place (Twisted's `twisted.internet.error` and the
//! error classes of `twisted.internet.defer`).
//!
//! Each type implements [`std::error::Error`] with a message a user can act on, so any of
//! them converts into a [`Failure`](crate::Failure) with `?` and can be recognised again with
//! [`Failure::check`](crate::Failure::check).

use std::fmt;

/// Declares an error type in one line: a unit struct with a fixed message, implementing
/// `Debug`, `Display` and `std::error::Error`, so it converts into a
/// [`Failure`](crate::Failure) and can be told apart with `check::<T>()` (Twisted's
/// `class GibberishError(Exception): pass`).
///
/// # Examples
///
/// ```
/// torsion::error_type!(
///     /// The poem came back as gibberish.
///     pub GibberishError, "the poem is gibberish"
/// );
///
/// let failure = torsion::Failure::new(GibberishError);
/// assert!(failure.check::<GibberishError>());
/// assert_eq!(failure.to_string(), "the poem is gibberish");
/// ```
#[macro_export]
macro_rules! error_type {
    ($(#[$doc:meta])* $vis:vis $name:ident, $msg:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        $vis struct $name;

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($msg)
            }
        }

        impl ::std::error::Error for $name {}
    };
}

/// torsion's own one-line errors are public.
macro_rules! simple_error {
    ($(#[$doc:meta])* $name:ident, $msg:expr) => {
        $crate::error_type!($(#[$doc])* pub $name, $msg);
    };
}

simple_error!(
    /// A `Deferred` or delayed call was fired or cancelled after it had
    /// already run (Twisted's `AlreadyCalledError` / `error.AlreadyCalled`).
    AlreadyCalled,
    "already called: a Deferred fires once, and a DelayedCall that ran cannot be changed"
);

simple_error!(
    /// A delayed call was cancelled, reset or delayed after it had been cancelled
    /// (Twisted's `error.AlreadyCancelled`).
    AlreadyCancelled,
    "already cancelled: this DelayedCall was cancelled before"
);

simple_error!(
    /// The operation was cancelled before it completed (Twisted's `defer.CancelledError`).
    Cancelled,
    "cancelled"
);

simple_error!(
    /// A deadline passed before the operation completed (Twisted's `defer.TimeoutError` and
    /// `error.TimeoutError`).
    TimeoutError,
    "timed out: the operation did not complete before its deadline"
);

simple_error!(
    /// `stop()` was called on a reactor that is not running (Twisted's
    /// `error.ReactorNotRunning`).
    ReactorNotRunning,
    "the reactor is not running: stop() can only be called on a running reactor"
);

simple_error!(
    /// `run()` was called on a reactor that has already run and stopped (Twisted's
    /// `error.ReactorNotRestartable`). Build a new reactor instead.
    ReactorNotRestartable,
    "the reactor cannot be restarted: build a new Reactor to run again"
);

simple_error!(
    /// `run()` was called on a reactor that is already running (Twisted's
    /// `error.ReactorAlreadyRunning`).
    ReactorAlreadyRunning,
    "the reactor is already running"
);

simple_error!(
    /// A `DeferredQueue` already holds as many items as its
    /// size allows (Twisted's `defer.QueueOverflow`).
    QueueOverflow,
    "queue overflow: the DeferredQueue is full"
);

simple_error!(
    /// A `DeferredQueue` already has as many waiting getters as
    /// its backlog allows (Twisted's `defer.QueueUnderflow`).
    QueueUnderflow,
    "queue underflow: too many pending gets on the DeferredQueue"
);

simple_error!(
    /// A cooperative task was stopped before it finished (Twisted's `task.TaskStopped`).
    TaskStopped,
    "the cooperative task was stopped"
);

simple_error!(
    /// A cooperative task was already finished when asked to change (Twisted's
    /// `task.TaskDone`).
    TaskDone,
    "the cooperative task has already finished"
);

simple_error!(
    /// `resume` was called on a cooperative task that is not paused (Twisted's
    /// `task.TaskNotPaused`).
    TaskNotPaused,
    "the cooperative task is not paused: resume() must match an earlier pause()"
);

simple_error!(
    /// A task was given to a `Cooperator` that has been stopped
    /// (Twisted's `task.SchedulerStopped`).
    SchedulerStopped,
    "the Cooperator has been stopped and accepts no new tasks"
);

simple_error!(
    /// The reactor shut down before the operation could complete, for example a
    /// `blocking_call_from_thread` whose reactor stopped first.
    ReactorShutDown,
    "the reactor shut down before the call could complete"
);

/// Every [`Resolver`](crate::Resolver) of a Deferred was dropped before firing it, so
/// nothing could; the Deferred fails with this instead of hanging (a dropped oneshot
/// sender's `RecvError`). It names where the Deferred was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverDropped {
    /// Where the Deferred (and its first Resolver) was created.
    pub created_at: &'static std::panic::Location<'static>,
}

impl fmt::Display for ResolverDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "every Resolver of the Deferred created at {} was dropped before firing it",
            self.created_at
        )
    }
}

impl std::error::Error for ResolverDropped {}

/// An argument was outside what the operation accepts, for example a negative interval or a
/// semaphore of size 0 (Twisted raises `ValueError` for these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidArgument(pub String);

impl fmt::Display for InvalidArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid argument: {}", self.0)
    }
}

impl std::error::Error for InvalidArgument {}

/// User code panicked inside a callback, a delayed call, a spawned future or a pooled
/// thread; the panic was caught and turned into a [`Failure`](crate::Failure) carrying this
/// error. The reactor keeps running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    /// The panic's message, when it was a string.
    pub message: String,
}

impl Panicked {
    /// Builds a `Panicked` from the payload `std::panic::catch_unwind` returned.
    pub fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with a non-string payload".to_string()
        };
        Panicked { message }
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panicked: {}", self.message)
    }
}

impl std::error::Error for Panicked {}

/// The first failure among the Deferreds of a `DeferredList`
/// with `fire_on_one_errback`, or of `gather_results`
/// (Twisted's `defer.FirstError`).
#[derive(Debug, Clone)]
pub struct FirstError {
    /// The failure of the input that failed first.
    pub failure: crate::Failure,
    /// Its position in the input list.
    pub index: usize,
}

impl fmt::Display for FirstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Deferred #{} failed first: {}", self.index, self.failure)
    }
}

impl std::error::Error for FirstError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.failure.as_error())
    }
}

/// Every input of `race` failed (Twisted's `FailureGroup`).
#[derive(Debug, Clone)]
pub struct FailureGroup {
    /// The failures, in input order.
    pub failures: Vec<crate::Failure>,
}

impl fmt::Display for FailureGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {} raced Deferreds failed", self.failures.len())?;
        for (i, failure) in self.failures.iter().enumerate() {
            write!(f, "; #{i}: {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FailureGroup {}

/// Why a `DelayedCall` could not be cancelled, reset or delayed (Twisted raises
/// `error.AlreadyCalled` or `error.AlreadyCancelled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayedCallError {
    /// The call has already run (or is running now).
    AlreadyCalled,
    /// The call was cancelled before.
    AlreadyCancelled,
}

impl fmt::Display for DelayedCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DelayedCallError::AlreadyCalled => fmt::Display::fmt(&AlreadyCalled, f),
            DelayedCallError::AlreadyCancelled => fmt::Display::fmt(&AlreadyCancelled, f),
        }
    }
}

impl std::error::Error for DelayedCallError {}

simple_error!(
    /// Work was given to a [`ThreadPool`](crate::threads::ThreadPool) after
    /// [`stop`](crate::threads::ThreadPool::stop) (Twisted's thread pool drops it silently).
    PoolStopped,
    "the thread pool has been stopped"
);
/// The name given for a reactor backend (in `TORSION_REACTOR`, or parsed as a
/// [`BackendKind`](crate::reactor::backend::BackendKind)) is not one torsion knows (Twisted's
/// `twisted.application.reactors.NoSuchReactor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown reactor backend `{}`: expected epoll, poll, io_uring or auto",
            self.0
        )
    }
}

impl std::error::Error for UnknownBackend {}

simple_error!(
    /// The connection was closed cleanly (Twisted's `error.ConnectionDone`).
    ConnectionDone,
    "connection was closed cleanly"
);

simple_error!(
    /// The connection was lost in a non-clean fashion: reset, broken pipe, or the reactor
    /// shutting down (Twisted's `error.ConnectionLost`).
    ConnectionLost,
    "connection to the other side was lost in a non-clean fashion"
);

simple_error!(
    /// The connection was aborted by `abort_connection` (Twisted's
    /// `error.ConnectionAborted`, a kind of `ConnectionLost`).
    ConnectionAborted,
    "connection was aborted locally with abort_connection"
);

simple_error!(
    /// A producer is already registered on this transport (Twisted raises `RuntimeError`).
    ProducerAlreadyRegistered,
    "a producer is already registered: unregister it before registering another"
);

/// The connection attempt was refused: nothing listens there (Twisted's
/// `error.ConnectionRefusedError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRefused {
    /// Where we tried to connect.
    pub address: String,
}

impl fmt::Display for ConnectionRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connection refused by {}: nothing is listening there",
            self.address
        )
    }
}

impl std::error::Error for ConnectionRefused {}

/// The connection attempt did not complete in time (Twisted's `error.TimeoutError` from a
/// connector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTimeout {
    /// Where we tried to connect.
    pub address: String,
    /// The timeout that expired.
    pub timeout: std::time::Duration,
}

impl fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connecting to {} timed out after {:?}",
            self.address, self.timeout
        )
    }
}

impl std::error::Error for ConnectTimeout {}

/// A host name did not resolve (Twisted's `error.DNSLookupError`), with the resolver's
/// error as its [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct DnsLookupError {
    /// The name.
    pub host: String,
    /// What the resolver said: the error `getaddrinfo` gave (through
    /// [`ToSocketAddrs`](std::net::ToSocketAddrs)), or one of kind
    /// [`NotFound`](std::io::ErrorKind::NotFound) when the name resolved to no address.
    pub source: std::io::Error,
}

impl fmt::Display for DnsLookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot resolve {}: {}", self.host, self.source)
    }
}

impl std::error::Error for DnsLookupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A port could not be opened for listening (Twisted's `error.CannotListenError`), naming
/// the address and why (typically `EADDRINUSE`).
#[derive(Debug)]
pub struct CannotListen {
    /// The address we tried to listen on.
    pub address: String,
    /// Why it failed.
    pub source: std::io::Error,
}

impl fmt::Display for CannotListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: {}", self.address, self.source)
    }
}

impl std::error::Error for CannotListen {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The connection attempt was cancelled by `stop_connecting` (Twisted's `UserError`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectCancelled;

impl fmt::Display for ConnectCancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection attempt was stopped by stop_connecting")
    }
}

impl std::error::Error for ConnectCancelled {}

/// A line grew longer than the parser's maximum line length (Twisted's
/// `lineLengthExceeded(line)`, whose default disconnects), with the bytes Twisted passes it.
///
/// Reported by [`LineParser`](crate::protocols::framing::LineParser) and
/// [`LineOnlyParser`](crate::protocols::framing::LineOnlyParser) at the byte where Twisted's
/// `LineReceiver` and `LineOnlyReceiver` report it, which may be before the line's delimiter
/// has arrived; the parsers' docs give the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTooLong {
    /// The length of the line when its delimiter had arrived; otherwise how many bytes of it
    /// had arrived (a lower bound). Always more than `max`.
    pub length: usize,
    /// The maximum line length in force (Twisted's `MAX_LENGTH`).
    pub max: usize,
    /// What Twisted hands to `lineLengthExceeded(line)`. From a
    /// [`LineParser`](crate::protocols::framing::LineParser) (Twisted's `LineReceiver`): every
    /// byte buffered from the start of the over-long line on, its delimiter and the bytes
    /// after it included. From a
    /// [`LineOnlyParser`](crate::protocols::framing::LineOnlyParser) (`LineOnlyReceiver`):
    /// the over-long line without its delimiter, or, before a delimiter arrived, the bytes
    /// buffered. Either way the parser has discarded these bytes.
    pub line: Vec<u8>,
}

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line too long: {} bytes or more before the delimiter, but a line may have at most {}",
            self.length, self.max
        )
    }
}

impl std::error::Error for LineTooLong {}

/// Why a stream of netstrings (`len:data,`) could not be parsed (Twisted's
/// `NetstringParseError`, after which `NetstringReceiver` disconnects and sets `brokenPeer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetstringError {
    /// The length prefix is not a decimal number followed by `:`: empty (`:aaa,`), starting
    /// or continuing with a byte that is not a digit (`aaa,`, `3aaa,`), or with a leading zero
    /// (`01:a,`).
    BadLength,
    /// The declared length is larger than the maximum. Detected while reading the prefix,
    /// before any of the body arrives.
    TooLong {
        /// The length read so far when it passed `max` (the prefix may go on with more
        /// digits).
        declared: usize,
        /// The maximum length in force (Twisted's `MAX_LENGTH`).
        max: usize,
    },
    /// The byte after the declared number of data bytes is not the terminating `,`.
    MissingComma,
    /// The length prefix does not fit in a `usize` (Twisted's "cannot be represented"
    /// overflow); only reachable with a maximum close to `usize::MAX`.
    LengthTooLongToParse,
}

impl fmt::Display for NetstringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetstringError::BadLength => f.write_str(
                "bad netstring: it does not start with a length (digits without leading zeros, \
                 then `:`)",
            ),
            NetstringError::TooLong { declared, max } => write!(
                f,
                "netstring too long: its length is at least {declared} bytes, but at most {max} \
                 are allowed"
            ),
            NetstringError::MissingComma => {
                f.write_str("bad netstring: its data is not terminated by a comma")
            }
            NetstringError::LengthTooLongToParse => {
                f.write_str("bad netstring: its length does not fit in a machine integer")
            }
        }
    }
}

impl std::error::Error for NetstringError {}

/// A length prefix announced a string longer than the maximum (Twisted's
/// `IntNStringReceiver.lengthLimitExceeded`, whose default disconnects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthLimitExceeded {
    /// The length the prefix announced.
    pub length: usize,
    /// The maximum length in force (Twisted's `MAX_LENGTH`).
    pub max: usize,
}

impl fmt::Display for LengthLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "length limit exceeded: the prefix announces {} bytes, but at most {} are allowed",
            self.length, self.max
        )
    }
}

impl std::error::Error for LengthLimitExceeded {}

/// A string is too long for the length prefix it would be sent with (Twisted's
/// `StringTooLongError`). Nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringTooLong {
    /// The length of the string.
    pub length: usize,
    /// The longest string the prefix can announce.
    pub max: usize,
}

impl fmt::Display for StringTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "string too long: {} bytes, but the length prefix can announce at most {}",
            self.length, self.max
        )
    }
}

impl std::error::Error for StringTooLong {}

/// A datagram was too long to send (`EMSGSIZE`; Twisted's `error.MessageLengthError`).
/// Nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLengthError {
    /// The length of the datagram that was refused.
    pub length: usize,
}

impl fmt::Display for MessageLengthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message too long: a {}-byte datagram does not fit the socket's maximum",
            self.length
        )
    }
}

impl std::error::Error for MessageLengthError {}

/// Joining a multicast group failed (Twisted's `error.MulticastJoinError`), naming the
/// group, the interface and why (for example `ENODEV` when the interface has no address).
#[derive(Debug)]
pub struct MulticastJoinError {
    /// The group we tried to join.
    pub group: std::net::IpAddr,
    /// The interface, as given: an IPv4 address, or an IPv6 interface index.
    pub interface: String,
    /// Why it failed.
    pub source: std::io::Error,
}

impl fmt::Display for MulticastJoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot join multicast group {} on interface {}: {}",
            self.group, self.interface, self.source
        )
    }
}

impl std::error::Error for MulticastJoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
simple_error!(
    /// A consumer asked a producer to stop before it had finished, typically because the
    /// connection closed during a transfer (Twisted's `FileSender` fails with "Consumer
    /// asked us to stop producing").
    ProducerStopped,
    "the consumer asked the producer to stop producing: the connection closed before the \
     transfer finished"
);
simple_error!(
    /// A connection was made but the factory built no protocol for it, so the connection
    /// was closed (Twisted's `error.NoProtocol`).
    NoProtocol,
    "the factory built no protocol for the connection (build_protocol returned None)"
);

/// An endpoint description string (`"tcp:8080:interface=127.0.0.1"`) could not be parsed
/// (Twisted's `serverFromString` and `clientFromString` raise `ValueError`). It names the
/// description and the [problem](EndpointSyntaxProblem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSyntaxError {
    /// The description as given.
    pub description: String,
    /// What is wrong with it.
    pub problem: EndpointSyntaxProblem,
}

impl fmt::Display for EndpointSyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid endpoint description {:?}: {}",
            self.description, self.problem
        )
    }
}

impl std::error::Error for EndpointSyntaxError {}

/// What is wrong with an endpoint description; see [`EndpointSyntaxError`]. `endpoint` is
/// the endpoint type as written (`tcp`, `unix`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointSyntaxProblem {
    /// The description is empty: it names no endpoint type.
    Empty,
    /// A backslash ends the description, escaping nothing.
    TrailingBackslash,
    /// No parser knows this endpoint type.
    UnknownType(String),
    /// A keyword argument the endpoint type does not take.
    UnknownKeyword {
        /// The endpoint type.
        endpoint: String,
        /// The keyword.
        keyword: String,
        /// The arguments the type takes, comma-separated.
        accepted: String,
    },
    /// More positional arguments than the endpoint type takes.
    TooManyArguments {
        /// The endpoint type.
        endpoint: String,
        /// How many were given.
        given: usize,
        /// How many it takes.
        max: usize,
    },
    /// An argument was given twice (by position and by keyword, or twice by keyword).
    DuplicateArgument {
        /// The endpoint type.
        endpoint: String,
        /// The argument.
        argument: String,
    },
    /// A required argument is missing.
    MissingArgument {
        /// The endpoint type.
        endpoint: String,
        /// The argument.
        argument: String,
    },
    /// An argument's value is malformed.
    BadValue {
        /// The endpoint type.
        endpoint: String,
        /// The argument.
        argument: String,
        /// The value as given.
        value: String,
        /// What was expected instead.
        expected: String,
    },
    /// Anything else, in the words of the endpoint type's parser.
    Invalid {
        /// The endpoint type.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for EndpointSyntaxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EndpointSyntaxProblem::*;
        match self {
            Empty => f.write_str("it is empty: expected an endpoint type such as tcp or unix"),
            TrailingBackslash => f.write_str("it ends with a backslash, which escapes nothing"),
            UnknownType(name) => write!(f, "unknown endpoint type {name:?}"),
            UnknownKeyword {
                endpoint,
                keyword,
                accepted,
            } => write!(
                f,
                "unknown keyword {keyword:?} for {endpoint}: it takes {accepted}"
            ),
            TooManyArguments {
                endpoint,
                given,
                max,
            } => write!(
                f,
                "too many positional arguments for {endpoint}: {given} given, at most {max} \
                 taken (name the others, as key=value)"
            ),
            DuplicateArgument { endpoint, argument } => {
                write!(f, "{argument} is given twice for {endpoint}")
            }
            MissingArgument { endpoint, argument } => {
                write!(f, "{endpoint} needs {argument}")
            }
            BadValue {
                endpoint,
                argument,
                value,
                expected,
            } => write!(
                f,
                "bad {argument} {value:?} for {endpoint}: expected {expected}"
            ),
            Invalid { endpoint, message } => write!(f, "{endpoint}: {message}"),
        }
    }
}

impl std::error::Error for EndpointSyntaxProblem {}

/// An endpoint needs something this build of torsion does not offer yet, for example
/// finding a systemd socket by name (`LISTEN_FDNAMES`); the description parsed, but the
/// endpoint cannot listen or connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUnavailable {
    /// The endpoint type (`unix`, `systemd`, …).
    pub endpoint: String,
    /// What is missing, in words (`"unix sockets"`).
    pub missing: String,
}

impl fmt::Display for EndpointUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} endpoint is unavailable: this build has no {}",
            self.endpoint, self.missing
        )
    }
}

impl std::error::Error for EndpointUnavailable {}

/// A UNIX client endpoint with `lockfile=1` found no live server: the socket's lock file
/// `PATH.lock` is missing, unreadable, or names a process that is gone (Twisted's
/// `BadFileError`, raised by `connectUNIX(checkPID=True)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFileError {
    /// The socket path.
    pub path: String,
    /// What is wrong with its lock file.
    pub reason: String,
}

impl fmt::Display for BadFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no live server on UNIX socket {}: {}",
            self.path, self.reason
        )
    }
}

impl std::error::Error for BadFileError {}

/// A `systemd:` endpoint names an inherited socket the process does not have: systemd
/// passed fewer (`LISTEN_FDS`), or the process was not socket-activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoInheritedSocket {
    /// The index asked for (`index=N`).
    pub index: usize,
    /// How many sockets the process inherited.
    pub inherited: usize,
}

impl fmt::Display for NoInheritedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no inherited socket at index {}: systemd passed this process {} (LISTEN_FDS)",
            self.index, self.inherited
        )
    }
}

impl std::error::Error for NoInheritedSocket {}
/// A `MultiService` already has a child with this name (Twisted's `RuntimeError` "cannot
/// have two services with same name").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateServiceName {
    /// The name both services have.
    pub name: String,
}

impl fmt::Display for DuplicateServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot have two services named {:?} in one MultiService: rename one first",
            self.name
        )
    }
}

impl std::error::Error for DuplicateServiceName {}

/// The service to remove is not a child of this `MultiService` (Twisted raises
/// `ValueError` or `KeyError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNotFound {
    /// The name looked for, when removing by name.
    pub name: Option<String>,
}

impl fmt::Display for ServiceNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "no child service named {name:?} in this MultiService"),
            None => f.write_str("the service is not a child of this MultiService"),
        }
    }
}

impl std::error::Error for ServiceNotFound {}

/// A service cannot be renamed while it has a parent, which knows it by its name
/// (Twisted's `RuntimeError` "cannot change name when parent exists").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHasParent {
    /// The service's current name.
    pub name: Option<String>,
}

impl fmt::Display for ServiceHasParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot rename service {:?} while it has a parent: remove it from its \
             MultiService first",
            self.name
        )
    }
}

impl std::error::Error for ServiceHasParent {}

/// Why a cooperative task could not be paused or stopped: it had already finished, and
/// this says how (Twisted's `task.TaskFinished`: `CooperativeTask._checkFinish` raises its
/// subclass `TaskDone`, `TaskFailed` or `TaskStopped`, or `SchedulerStopped`).
///
/// The [`Failed`](TaskFinished::Failed) variant carries the failure that ended the task, so
/// stopping a task that failed reports that failure rather than saying it is done.
#[derive(Debug, Clone)]
pub enum TaskFinished {
    /// Its iterator was exhausted (Twisted's `TaskDone`).
    Done,
    /// Its iterator failed: it yielded an `Err`, panicked, or yielded a Deferred that failed
    /// (Twisted's `TaskFailed`). This is the failure its `when_done` Deferreds errbacked
    /// with.
    Failed(crate::Failure),
    /// It was stopped by `CooperativeTask::stop` (Twisted's `TaskStopped`).
    Stopped,
    /// Its `Cooperator` was stopped (Twisted's `SchedulerStopped`).
    SchedulerStopped,
}

impl fmt::Display for TaskFinished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskFinished::Done => fmt::Display::fmt(&TaskDone, f),
            TaskFinished::Failed(failure) => {
                write!(f, "the cooperative task has already failed: {failure}")
            }
            TaskFinished::Stopped => fmt::Display::fmt(&TaskStopped, f),
            TaskFinished::SchedulerStopped => {
                f.write_str("the cooperative task was stopped with its Cooperator")
            }
        }
    }
}

impl std::error::Error for TaskFinished {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskFinished::Failed(failure) => Some(failure.as_error()),
            _ => None,
        }
    }
}

/// A child process exited with status 0 (Twisted's `error.ProcessDone`): the reason
/// [`process_exited`](crate::process::ProcessProtocol::process_exited) and
/// [`process_ended`](crate::process::ProcessProtocol::process_ended) get for a clean exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessDone;

impl fmt::Display for ProcessDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the process exited with status 0")
    }
}

impl std::error::Error for ProcessDone {}

/// A child process exited with a non-zero status or was killed by a signal (Twisted's
/// `error.ProcessTerminated`, with its `exitCode` and `signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessTerminated {
    /// The exit status, if the process exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
}

impl fmt::Display for ProcessTerminated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.exit_code, self.signal) {
            (Some(code), _) => write!(f, "the process exited with status {code}"),
            (None, Some(signal)) => {
                write!(f, "the process was killed by signal {signal}")?;
                if self.core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            (None, None) => f.write_str("the process ended with an unknown status"),
        }
    }
}

impl std::error::Error for ProcessTerminated {}

/// A child process could not be started (the `OSError` Twisted's `spawnProcess` raises),
/// naming the program and why: not found, not executable, a bad working directory.
#[derive(Debug)]
pub struct CannotSpawn {
    /// The program we tried to run.
    pub program: String,
    /// Why it could not be run.
    pub source: std::io::Error,
}

impl fmt::Display for CannotSpawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot run {:?}: {}", self.program, self.source)
    }
}

impl std::error::Error for CannotSpawn {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

simple_error!(
    /// A signal was sent to a child process that has exited already (Twisted's
    /// `error.ProcessExitedAlready`).
    ProcessExitedAlready,
    "the process has exited already: it cannot be signalled"
);
