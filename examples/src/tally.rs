//! The bookkeeping of clients 3 to 6 (`twisted-client-3/get-poetry-1.py` to
//! `twisted-client-6/get-poetry.py`): the poems and errors collected so far, so that
//! `poem_done` can stop the reactor once every download has ended either way. Client 8
//! replaces it with a `DeferredList`.
//!
//! Invariant: each download adds exactly one entry, a poem or an error.

use std::cell::RefCell;

use torsion::Failure;

/// Counts the results of downloads as they end: how many poems came, how many failed.
/// The clients stop the reactor when `poems + errors` reaches the number of servers (the
/// tutorials' `poem_done`).
#[derive(Default)]
pub struct Tally {
    /// The poems, in the order they finished.
    pub poems: RefCell<Vec<Vec<u8>>>,
    /// The failures, in the order they happened.
    pub errors: RefCell<Vec<Failure>>,
}

impl Tally {
    /// How many downloads have ended either way.
    pub fn done(&self) -> usize {
        self.poems.borrow().len() + self.errors.borrow().len()
    }
}
