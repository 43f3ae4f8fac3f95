//! [`Failure`]: an error together with where it arose (Twisted's `twisted.python.failure`).
//!
//! A `Failure` is cheap to clone (one `Arc`), is `Send + Sync` so it can cross from a pooled
//! thread back to the reactor, and records the source location that created it and every
//! spawned future it passed through. It deliberately does not implement
//! [`std::error::Error`]: that is what lets `?` convert any error into a `Failure` through
//! the blanket `From` impl. Use [`Failure::into_error`] where a `std::error::Error` is needed.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::error::Error;
use std::fmt;
use std::panic::Location;
use std::sync::Arc;

use crate::error::Panicked;

/// An error with its origin, carried down a `Deferred`'s errback chain
/// (Twisted's `Failure`).
///
/// Any `E: Error + Send + Sync + 'static` converts into a `Failure` with `?` or `.into()`,
/// recording the caller's location. [`check`](Failure::check), [`trap`](Failure::trap) and
/// [`downcast_ref`](Failure::downcast_ref) recognise the wrapped error again.
///
/// # Examples
///
/// ```
/// use torsion::Failure;
/// use torsion::error::TimeoutError;
///
/// let failure: Failure = TimeoutError.into();
/// assert!(failure.check::<TimeoutError>());
/// // trap hands the failure back as Err when it is of another type, so `?` re-raises it.
/// let trapped = failure.trap::<TimeoutError>();
/// assert!(trapped.is_ok());
/// ```
#[derive(Clone)]
pub struct Failure(Arc<Inner>);

struct Inner {
    error: Arc<dyn Error + Send + Sync + 'static>,
    origin: &'static Location<'static>,
    path: Vec<&'static Location<'static>>,
    backtrace: Option<Arc<Backtrace>>,
}

/// A plain message used as an error (for [`Failure::msg`]).
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

fn capture_backtrace() -> Option<Arc<Backtrace>> {
    let bt = Backtrace::capture();
    (bt.status() == BacktraceStatus::Captured).then(|| Arc::new(bt))
}

impl Failure {
    /// Wraps `error`, recording the caller as the origin.
    #[track_caller]
    pub fn new<E: Error + Send + Sync + 'static>(error: E) -> Self {
        Self::from_arc(Arc::new(error), Location::caller())
    }

    /// Wraps `error` without a backtrace: for the routine ends of connections
    /// ([`ConnectionDone`](crate::error::ConnectionDone), a reset peer), made inside the
    /// reactor on every close, where a backtrace would show only the loop and costs a stack
    /// walk per connection when `RUST_BACKTRACE` is set.
    #[track_caller]
    pub(crate) fn routine<E: Error + Send + Sync + 'static>(error: E) -> Self {
        Failure(Arc::new(Inner {
            error: Arc::new(error),
            origin: Location::caller(),
            path: Vec::new(),
            backtrace: None,
        }))
    }

    /// Wraps an already boxed error (the conversion `?` cannot do for
    /// `Box<dyn Error + Send + Sync>`; use `.map_err(Failure::from_boxed)?`).
    #[track_caller]
    pub fn from_boxed(error: Box<dyn Error + Send + Sync + 'static>) -> Self {
        Self::from_arc(Arc::from(error), Location::caller())
    }

    /// A failure carrying just a message.
    #[track_caller]
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::from_arc(Arc::new(Message(message.to_string())), Location::caller())
    }

    /// The failure for a caught panic's payload (from `std::panic::catch_unwind`); the
    /// wrapped error is [`Panicked`].
    #[track_caller]
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        Self::new(Panicked::from_payload(payload))
    }

    fn from_arc(
        error: Arc<dyn Error + Send + Sync + 'static>,
        origin: &'static Location<'static>,
    ) -> Self {
        Failure(Arc::new(Inner {
            error,
            origin,
            path: Vec::new(),
            backtrace: capture_backtrace(),
        }))
    }

    /// Whether the wrapped error is an `E` (Twisted's `Failure.check`).
    pub fn check<E: Error + 'static>(&self) -> bool {
        self.0.error.is::<E>()
    }

    /// The wrapped error as an `E`, if it is one.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.0.error.downcast_ref::<E>()
    }

    /// `Ok(self)` when the wrapped error is an `E`, else `Err(self)`, so that
    /// `failure.trap::<E>()?` re-raises any other failure (Twisted's `Failure.trap`).
    pub fn trap<E: Error + 'static>(self) -> Result<Self, Self> {
        if self.check::<E>() {
            Ok(self)
        } else {
            Err(self)
        }
    }

    /// The wrapped error.
    pub fn as_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0.error
    }

    /// Where the failure was created (the `?`, `errback`, `fail` or `Failure::new` call).
    pub fn origin(&self) -> &'static Location<'static> {
        self.0.origin
    }

    /// The spawned futures (and other hand-offs) this failure passed through on its way
    /// out, innermost first.
    pub fn path(&self) -> &[&'static Location<'static>] {
        &self.0.path
    }

    /// The backtrace captured at creation, when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE`
    /// enable it.
    pub fn backtrace(&self) -> Option<&Backtrace> {
        self.0.backtrace.as_deref()
    }

    /// Returns this failure with `location` appended to its [`path`](Failure::path).
    pub fn passed_through(mut self, location: &'static Location<'static>) -> Self {
        match Arc::get_mut(&mut self.0) {
            Some(inner) => inner.path.push(location),
            None => {
                let mut path = self.0.path.clone();
                path.push(location);
                self = Failure(Arc::new(Inner {
                    error: self.0.error.clone(),
                    origin: self.0.origin,
                    path,
                    backtrace: self.0.backtrace.clone(),
                }));
            }
        }
        self
    }

    /// Converts into a type that implements [`std::error::Error`], for code that needs one
    /// (a `Box<dyn Error>`, `anyhow`, …).
    pub fn into_error(self) -> FailureError {
        FailureError(self)
    }
}

impl<E: Error + Send + Sync + 'static> From<E> for Failure {
    #[track_caller]
    fn from(error: E) -> Self {
        Failure::new(error)
    }
}

impl fmt::Display for Failure {
    /// The error's message; with `{:#}`, also where the failure arose and every spawned
    /// future it passed through (what logs and test reports show).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.error)?;
        if f.alternate() {
            write!(f, " (at {})", self.0.origin)?;
            for location in &self.0.path {
                write!(f, "\n  passed through {location}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Failure {
    /// The full form, as `{:#}` displays it: what `fn main() -> Result<(), Failure>` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:#}")
    }
}

/// A [`Failure`] as a [`std::error::Error`] (see [`Failure::into_error`]).
#[derive(Clone, Debug)]
pub struct FailureError(pub Failure);

impl fmt::Display for FailureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for FailureError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.0.as_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Cancelled, TimeoutError};

    #[test]
    fn question_mark_records_the_origin_and_check_recognises_the_type() {
        fn parse(s: &str) -> Result<u32, Failure> {
            Ok(s.parse::<u32>()?)
        }
        let failure = parse("x").unwrap_err();
        assert!(failure.check::<std::num::ParseIntError>());
        assert!(!failure.check::<Cancelled>());
        assert_eq!(failure.origin().file(), file!());
    }

    #[test]
    fn trap_returns_err_for_other_types() {
        let f: Failure = Cancelled.into();
        let f = f.trap::<TimeoutError>().unwrap_err();
        assert!(f.trap::<Cancelled>().is_ok());
    }

    #[test]
    fn display_names_origin_and_path() {
        let f = Failure::msg("boom");
        let here = Location::caller();
        let f = f.passed_through(here);
        assert_eq!(f.to_string(), "boom");
        let text = format!("{f:#}");
        assert!(text.starts_with("boom (at "), "{text}");
        assert!(text.contains("passed through"), "{text}");
        assert_eq!(format!("{f:?}"), text);
        let shared = f.clone();
        let g = shared.passed_through(here);
        assert_eq!(g.path().len(), 2);
        assert_eq!(f.path().len(), 1);
    }
}
