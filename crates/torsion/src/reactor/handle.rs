//! The reactor's face for other threads (Twisted's `callFromThread` and `stop` from a
//! thread): [`ReactorHandle`], and the queue of calls it feeds.
//!
//! Invariant: a burst of calls costs one wake-up (the `notified` flag is set by the first
//! call and cleared by the reactor before it takes the queue); calls made after the reactor
//! finished are dropped without running, never queued for nobody.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use super::waker::Waker;
use super::{Inner, Reactor};
use crate::defer::Failure;

pub(super) type ThreadCall = Box<dyn FnOnce(&Reactor) + Send>;
/// Completes the Deferred of a thread-pool call with its (type-erased) result.
pub(crate) type ThreadResult = Box<dyn FnOnce(Box<dyn std::any::Any + Send>)>;

/// The part of a reactor other threads (and signal handlers) reach.
pub(super) struct Shared {
    pub(super) owner: ThreadId,
    pub(super) waker: Waker,
    pub(super) calls: Mutex<ThreadCalls>,
    /// Set when calls are queued and not yet taken, so a burst costs one wake-up.
    pub(super) notified: AtomicBool,
    /// A signal asked the reactor to stop (the signal number, or 0).
    pub(super) stop_signal: AtomicI32,
}

pub(super) struct ThreadCalls {
    pub(super) queue: VecDeque<ThreadCall>,
    /// The reactor has finished: calls are dropped instead of queued.
    pub(super) closed: bool,
}

/// The `Send + Sync` handle of a [`Reactor`], for other threads (Twisted's
/// `callFromThread` and `stop` from a thread).
#[derive(Clone)]
pub struct ReactorHandle {
    pub(super) shared: Arc<Shared>,
}

impl Reactor {
    pub(super) fn run_thread_calls(&self) {
        if !self.inner.shared.notified.swap(false, Ordering::AcqRel) {
            return;
        }
        let calls = std::mem::take(
            &mut self
                .inner
                .shared
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .queue,
        );
        for call in calls {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| call(self))) {
                crate::log::error!(
                    target: "torsion::reactor",
                    "a call from another thread panicked: {}",
                    Failure::from_panic(&*payload)
                );
            }
        }
    }

    pub(super) fn close_thread_calls(&self) {
        let dropped = {
            let mut calls = self
                .inner
                .shared
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            calls.closed = true;
            std::mem::take(&mut calls.queue)
        };
        drop(dropped);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut calls = self
            .shared
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        calls.closed = true;
        let dropped = std::mem::take(&mut calls.queue);
        drop(calls);
        drop(dropped);
        // Pending delayed calls go with the reactor. Their queue is shared with the
        // `DelayedCall` handles, which a callback may own (a `defer_later`'s canceller
        // does): clearing it breaks that cycle, so what the calls own is freed too.
        crate::defer::chain::quietly(|| self.timers.clear());
    }
}

impl ReactorHandle {
    /// Runs `f` on the reactor's thread, in the order calls were made, on the reactor's
    /// next iteration (Twisted's `callFromThread`). Calls made before `run` wait for it. A
    /// burst of calls costs one wake-up. After the reactor has finished, `f` is dropped
    /// without running.
    pub fn call_from_thread(&self, f: impl FnOnce(&Reactor) + Send + 'static) {
        {
            let mut calls = self
                .shared
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if calls.closed {
                return;
            }
            calls.queue.push_back(Box::new(f));
        }
        if !self.shared.notified.swap(true, Ordering::AcqRel) {
            self.shared.waker.wake();
        }
    }

    /// Asks the reactor to stop from another thread (Twisted's
    /// `callFromThread(reactor.stop)`); a reactor not running ignores it.
    pub fn stop(&self) {
        self.call_from_thread(|reactor| {
            let _ = reactor.stop();
        });
    }

    /// Whether the calling thread is the reactor's own (Twisted's `isInIOThread`).
    pub fn is_reactor_thread(&self) -> bool {
        std::thread::current().id() == self.shared.owner
    }

    pub(super) fn signal_stop(shared: &Shared, signal: i32) {
        shared.stop_signal.store(signal, Ordering::Release);
        shared.waker.wake_from_signal();
    }
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle").finish_non_exhaustive()
    }
}
