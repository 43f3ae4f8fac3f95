//! SIGINT and SIGTERM stop the reactor gracefully (Twisted's `_SignalReactorMixin`).
//!
//! The handlers only record the signal and write to the reactor's waker (a self-pipe in
//! spirit: an eventfd), both async-signal-safe; the loop then calls `stop` on its own
//! thread. Handlers are registered through `signal-hook-registry` for the duration of
//! `run`. Once removed, the process keeps that registry's handler installed with no
//! action: a later SIGINT is ignored rather than fatal (a limit of the registry).

use std::sync::Arc;

use signal_hook_registry::SigId;

use super::{ReactorHandle, Shared};

/// Installs the handlers; returns what to pass to [`uninstall`].
pub(super) fn install(shared: &Arc<Shared>) -> Vec<SigId> {
    let mut ids = Vec::new();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let target = shared.clone();
        // SAFETY: the action is async-signal-safe: it stores into an atomic and performs
        // one write(2) on an eventfd, with no allocation, lock or logging.
        let registered = unsafe {
            signal_hook_registry::register(signal, move || {
                ReactorHandle::signal_stop(&target, signal);
            })
        };
        match registered {
            Ok(id) => ids.push(id),
            Err(err) => crate::log::warning!(
                target: "torsion::reactor",
                "cannot install the handler for signal {signal}: {err}"
            ),
        }
    }
    ids
}

/// Removes the handlers [`install`] added.
pub(super) fn uninstall(ids: Vec<SigId>) {
    for id in ids {
        signal_hook_registry::unregister(id);
    }
}
