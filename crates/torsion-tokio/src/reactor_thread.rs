//! A torsion reactor on a thread of its own inside a tokio program (Twisted's
//! `threadedselectreactor` idea, and what `crochet` does for Twisted in a threaded program):
//! [`ReactorThread`] starts it, tokio code reaches it through its
//! [`ReactorHandle`] (with [`call_from_tokio`](crate::call_from_tokio)), and
//! [`stop`](ReactorThread::stop) ends it cleanly (the shutdown triggers run, the thread
//! is joined).
//!
//! Invariant: the reactor never leaves its thread; only its `Send + Sync` handle and the
//! outcome of `run` cross.

use std::thread::JoinHandle;

use tokio::sync::oneshot;
use torsion::error::ReactorShutDown;
use torsion::{Failure, Reactor, ReactorHandle};

/// A reactor running on its own thread, for a tokio (or any threaded) program to drive a
/// torsion service. Dropping it without [`stop`](ReactorThread::stop) asks the reactor to
/// stop and leaves the thread to finish on its own.
///
/// # Examples
///
/// ```
/// use torsion_tokio::{ReactorThread, call_from_tokio};
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let reactor = ReactorThread::start().unwrap();
///     let backend = call_from_tokio(reactor.handle(), |r: &torsion::Reactor| {
///         Ok(format!("{:?}", r.backend()))
///     })
///     .await
///     .unwrap();
///     assert!(!backend.is_empty());
///     reactor.stop().await.unwrap();
/// }
/// ```
#[derive(Debug)]
pub struct ReactorThread {
    handle: ReactorHandle,
    finished: Option<oneshot::Receiver<Result<(), Failure>>>,
    thread: Option<JoinHandle<()>>,
}

impl ReactorThread {
    /// Starts a reactor ([`Reactor::new`]: the backend `TORSION_REACTOR` names, no signal
    /// handlers) on a new thread named `torsion-reactor`. Blocks only until the reactor is
    /// built.
    ///
    /// # Errors
    ///
    /// Why the reactor could not be built, or the thread not started.
    pub fn start() -> Result<ReactorThread, Failure> {
        ReactorThread::start_with(Reactor::new, |_| Ok(()))
    }

    /// Starts a reactor built by `build` on a new thread, and runs `setup` on that thread
    /// before the reactor runs (to listen, start services, …). Blocks until `setup` has
    /// returned.
    ///
    /// # Errors
    ///
    /// `build`'s or `setup`'s failure (the reactor then does not run), or the thread's.
    pub fn start_with(
        build: impl FnOnce() -> Result<Reactor, Failure> + Send + 'static,
        setup: impl FnOnce(&Reactor) -> Result<(), Failure> + Send + 'static,
    ) -> Result<ReactorThread, Failure> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (finished_tx, finished_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("torsion-reactor".into())
            .spawn(move || {
                let reactor = match build() {
                    Ok(reactor) => reactor,
                    Err(failure) => {
                        let _ = ready_tx.send(Err(failure));
                        return;
                    }
                };
                if let Err(failure) = setup(&reactor) {
                    let _ = ready_tx.send(Err(failure));
                    return;
                }
                let _ = ready_tx.send(Ok(reactor.handle()));
                let outcome = reactor.run();
                let _ = finished_tx.send(outcome);
            })
            .map_err(Failure::new)?;
        match ready_rx.recv() {
            Ok(Ok(handle)) => Ok(ReactorThread {
                handle,
                finished: Some(finished_rx),
                thread: Some(thread),
            }),
            Ok(Err(failure)) => {
                let _ = thread.join();
                Err(failure)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Failure::msg(
                    "the reactor thread ended before its reactor was built",
                ))
            }
        }
    }

    /// The reactor's `Send + Sync` handle, for
    /// [`call_from_tokio`](crate::call_from_tokio) and `call_from_thread`.
    pub fn handle(&self) -> &ReactorHandle {
        &self.handle
    }

    /// Stops the reactor (Twisted's `reactor.callFromThread(reactor.stop)`) and waits,
    /// without blocking the executor, until `run` has returned; then joins the thread.
    ///
    /// # Errors
    ///
    /// What `run` returned (a failure given to `stop_with_failure`), or
    /// [`ReactorShutDown`] if the thread ended without saying.
    pub async fn stop(self) -> Result<(), Failure> {
        self.handle.stop();
        self.join().await
    }

    /// Waits, without blocking the executor, until the reactor stops by itself (a
    /// `stop` from inside it, or a failure); then joins the thread.
    ///
    /// # Errors
    ///
    /// As [`stop`](ReactorThread::stop).
    pub async fn join(mut self) -> Result<(), Failure> {
        let outcome = match self.finished.take() {
            Some(finished) => finished
                .await
                .unwrap_or_else(|_| Err(ReactorShutDown.into())),
            None => Err(ReactorShutDown.into()),
        };
        if let Some(thread) = self.thread.take() {
            // `run` has returned: what is left of the thread is dropping the reactor.
            let _ = thread.join();
        }
        outcome
    }

    /// [`stop`](ReactorThread::stop) for code outside an executor: blocks the calling
    /// thread until the reactor has stopped.
    ///
    /// # Errors
    ///
    /// As [`stop`](ReactorThread::stop).
    ///
    /// # Panics
    ///
    /// Panics if called from inside an async context (tokio forbids blocking there): use
    /// `stop().await` instead.
    pub fn stop_blocking(mut self) -> Result<(), Failure> {
        self.handle.stop();
        let outcome = match self.finished.take() {
            Some(finished) => finished
                .blocking_recv()
                .unwrap_or_else(|_| Err(ReactorShutDown.into())),
            None => Err(ReactorShutDown.into()),
        };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        outcome
    }
}

impl Drop for ReactorThread {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.stop();
        }
    }
}
