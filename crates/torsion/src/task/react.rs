//! [`react`], [`react_with`] and [`react_result`] (Twisted's `task.react`): a main function
//! run on a reactor, its outcome turned into the process exit code.
//!
//! Invariant: the reactor is stopped once, by `main`'s end or by whoever stops it first;
//! `main` unfinished when the reactor stops is cancelled, never left running.

use std::cell::RefCell;
use std::future::Future;
use std::process::ExitCode;
use std::rc::Rc;

use crate::{Failure, Reactor};

/// Runs `main` on a new reactor and returns the process exit code (Twisted's `task.react`).
///
/// The reactor is built with SIGINT and SIGTERM handlers installed, so either stops it
/// gracefully. See [`react_with`] for what happens next, and to choose the reactor.
///
/// # Examples
///
/// ```
/// use std::process::ExitCode;
/// use torsion::task::{react, sleep};
///
/// let code = react(|reactor| async move {
///     sleep(&reactor, 0.01).await?;
///     println!("slept");
///     Ok(())
/// });
/// assert_eq!(code, ExitCode::SUCCESS);
/// ```
///
/// A program's `main` returns it:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     torsion::task::react(|_reactor| async { Ok(()) })
/// }
/// ```
pub fn react<F, Fut>(main: F) -> ExitCode
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    match Reactor::builder().install_signal_handlers(true).build() {
        Ok(reactor) => react_with(reactor, main),
        Err(failure) => {
            eprintln!("cannot build a reactor: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `main` on `reactor` and returns the process exit code ([`react`] with a reactor of
/// your choosing; Twisted's `react(main, argv, _reactor)`).
///
/// Runs [`react_result`], then returns [`ExitCode::SUCCESS`] if it is `Ok`; otherwise prints
/// the failure to stderr (`main function encountered error: ...`, with where it arose
/// when `RUST_BACKTRACE` is set) and returns [`ExitCode::FAILURE`].
pub fn react_with<F, Fut>(reactor: Reactor, main: F) -> ExitCode
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    match react_result(reactor, main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Where it arose (source locations) only for whoever asked for backtraces: a
            // user is told what went wrong.
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                eprintln!("main function encountered error: {failure:#}");
            } else {
                eprintln!("main function encountered error: {failure}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs `main` on `reactor` and returns its outcome (the testable core of [`react`]).
///
/// Once the reactor runs, `main(reactor)` is [spawned](crate::spawn). When it finishes, the
/// reactor is stopped, unless it is already stopping (`main` may have stopped it itself: it
/// is never stopped twice); `run` returns and so does this, with `main`'s outcome.
///
/// If the reactor stops before `main` has finished (SIGINT or SIGTERM, or other code calling
/// `stop`), the outcome is `Ok`, so the program exits 0, as Twisted's `react` does; `main`'s
/// unfinished future is cancelled (see [`spawn`](crate::spawn)). A server's `main` usually
/// ends with [`Reactor::until_shutdown`], so it finishes as the reactor stops.
///
/// # Errors
///
/// `main`'s failure (a panic included), the failure the reactor was stopped with
/// ([`Reactor::stop_with_failure`]), or `run`'s error if the reactor has already run
/// ([`ReactorNotRestartable`](crate::error::ReactorNotRestartable)).
pub fn react_result<F, Fut>(reactor: Reactor, main: F) -> Result<(), Failure>
where
    F: FnOnce(Reactor) -> Fut + 'static,
    Fut: Future<Output = Result<(), Failure>> + 'static,
{
    let outcome: Rc<RefCell<Option<Result<(), Failure>>>> = Rc::new(RefCell::new(None));
    let main_handle: Rc<RefCell<Option<crate::defer::DeferredHandle>>> =
        Rc::new(RefCell::new(None));
    let (out, handle_slot, r) = (outcome.clone(), main_handle.clone(), reactor.clone());
    reactor.call_when_running(move || {
        let finished = crate::spawn(main(r.clone()));
        *handle_slot.borrow_mut() = Some(finished.handle());
        drop(finished.add_both(move |result| {
            out.borrow_mut().get_or_insert(result);
            if r.is_running() {
                let _ = r.stop();
            }
            Ok(())
        }));
    });
    let ran = reactor.run();
    let result = outcome.borrow_mut().take();
    let unfinished = main_handle.borrow_mut().take().filter(|_| result.is_none());
    if let Some(handle) = unfinished {
        handle.cancel();
    }
    ran?;
    result.unwrap_or(Ok(()))
}
