//! The process's tokio runtime, as the bridge uses it: one multi-thread runtime started on
//! first use (with `enable_all`), or the one the program hands over with [`set_runtime`];
//! Twisted's counterpart is the asyncio loop `asyncioreactor` runs on.
//!
//! Reactors that spawn tokio work count as users of the runtime. A runtime the bridge
//! started is shut down (within [`set_shutdown_timeout`]'s bound, 1 s by default) when its
//! last user reactor shuts down, and started afresh by the next call that needs one; a
//! runtime the program handed over is the program's, and the bridge never shuts it down.
//!
//! Invariant: the lock of this module's state is never held while tokio or user code runs
//! (building a runtime, shutting one down, calling the builder).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};
use torsion::Failure;
use torsion::log::Logger;

use crate::error::RuntimeUnavailable;

/// How long shutting down a runtime the bridge started may take by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

type BuildRuntime = Arc<dyn Fn() -> std::io::Result<Runtime> + Send + Sync>;

struct State {
    /// The program's runtime, from [`set_runtime`].
    given: Option<Handle>,
    /// The runtime the bridge started.
    owned: Option<Runtime>,
    /// How to start one (from [`set_runtime_builder`]; tokio's multi-thread default).
    build: Option<BuildRuntime>,
    /// Reactors whose shutdown must come before the owned runtime's.
    users: usize,
    shutdown_timeout: Duration,
}

static STATE: Mutex<State> = Mutex::new(State {
    given: None,
    owned: None,
    build: None,
    users: 0,
    shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn log() -> Logger {
    Logger::new("torsion_tokio.runtime")
}

/// Makes the bridge run its tokio work on the program's runtime (Twisted's
/// `asyncioreactor.install(loop)` picks the loop the same way). The bridge never shuts this
/// runtime down: the program does, after its reactors have stopped. Work already running
/// on another runtime stays there. Returns the runtime used before, if one was given.
///
/// # Examples
///
/// ```
/// let runtime = tokio::runtime::Builder::new_multi_thread()
///     .worker_threads(1)
///     .enable_all()
///     .build()
///     .unwrap();
/// let previous = torsion_tokio::set_runtime(runtime.handle().clone());
/// assert!(previous.is_none());
/// // ... reactors use `runtime` from here on ...
/// torsion_tokio::clear_runtime();
/// ```
pub fn set_runtime(handle: Handle) -> Option<Handle> {
    state().given.replace(handle)
}

/// Forgets the runtime given with [`set_runtime`]: the bridge goes back to a runtime of its
/// own, started when next needed. Returns the runtime that was given. Twisted has no
/// counterpart (its loop is chosen once).
pub fn clear_runtime() -> Option<Handle> {
    state().given.take()
}

/// Sets how the bridge builds the runtime it starts on first use (Twisted builds its
/// asyncio loop with `asyncio.new_event_loop`; the default here is tokio's
/// multi-thread runtime with `enable_all`), for a program that wants, say, fewer worker
/// threads. Takes effect the next time the bridge starts a runtime.
///
/// # Examples
///
/// ```
/// torsion_tokio::set_runtime_builder(|| {
///     tokio::runtime::Builder::new_multi_thread()
///         .worker_threads(2)
///         .thread_name("my-tokio")
///         .enable_all()
///         .build()
/// });
/// ```
pub fn set_runtime_builder(build: impl Fn() -> std::io::Result<Runtime> + Send + Sync + 'static) {
    state().build = Some(Arc::new(build));
}

/// Sets how long shutting down a runtime the bridge started may block the last reactor's
/// shutdown (1 s by default), as the reactor builder's `shutdown_timeout` bounds Twisted's
/// `before` triggers: tasks still running after it (blocking ones, say) are left to finish
/// on their own threads, and that is logged.
pub fn set_shutdown_timeout(timeout: Duration) {
    state().shutdown_timeout = timeout;
}

/// The handle of the runtime the bridge runs tokio work on, starting one if needed (the
/// loop Twisted's `asyncioreactor` runs on; `asyncio.get_event_loop()`).
///
/// # Errors
///
/// [`RuntimeUnavailable`] if a runtime had to be started and could not be.
pub fn runtime_handle() -> Result<Handle, Failure> {
    handle(false)
}

/// The runtime's handle; with `use_it`, counts the caller (a reactor) as a user, whose
/// [`release`] may shut the runtime down.
pub(crate) fn handle(use_it: bool) -> Result<Handle, Failure> {
    let build = {
        let mut st = state();
        if let Some(given) = &st.given {
            let handle = given.clone();
            if use_it {
                st.users += 1;
            }
            return Ok(handle);
        }
        if let Some(owned) = &st.owned {
            let handle = owned.handle().clone();
            if use_it {
                st.users += 1;
            }
            return Ok(handle);
        }
        st.build.clone()
    };
    // Built outside the lock: the builder is user code.
    let built = match build {
        Some(build) => build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .thread_name("torsion-tokio")
            .enable_all()
            .build(),
    }
    .map_err(|e| Failure::new(RuntimeUnavailable(e)))?;
    let mut st = state();
    // Another thread may have started one meanwhile: keep the first, drop ours below.
    let spare = match &st.owned {
        Some(_) => Some(built),
        None => {
            st.owned = Some(built);
            None
        }
    };
    let handle = st
        .owned
        .as_ref()
        .map(|rt| rt.handle().clone())
        .ok_or_else(|| Failure::msg("internal error: the tokio runtime vanished"))?;
    if use_it {
        st.users += 1;
    }
    drop(st);
    if let Some(spare) = spare {
        spare.shutdown_background();
    } else {
        log().info("started the tokio runtime");
    }
    Ok(handle)
}

/// A reactor that [`handle`]`(true)` counted has shut down: the last one shuts down the
/// runtime the bridge started, within the shutdown timeout.
pub(crate) fn release() {
    let (runtime, timeout) = {
        let mut st = state();
        st.users = st.users.saturating_sub(1);
        if st.users > 0 {
            return;
        }
        (st.owned.take(), st.shutdown_timeout)
    };
    let Some(runtime) = runtime else { return };
    if Handle::try_current().is_ok() {
        // Inside a runtime's context a blocking shutdown would panic: leave it to finish.
        runtime.shutdown_background();
        log().info("shut down the tokio runtime in the background (inside a tokio context)");
        return;
    }
    let started = Instant::now();
    runtime.shutdown_timeout(timeout);
    let took = started.elapsed();
    if took >= timeout {
        log().warn(format_args!(
            "the tokio runtime did not stop within {timeout:?}: its remaining tasks were left to finish on their own threads"
        ));
    } else {
        log().info(format_args!("shut down the tokio runtime in {took:?}"));
    }
}
