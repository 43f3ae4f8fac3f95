//! Client 5's poem transformation (`twisted-client-5/get-poetry.py`): `cummingsify`
//! lower-cases a poem, except when it fails, at random, in one of two ways. A
//! [`GibberishError`] means the poem itself is bad and goes down the errback chain; any
//! other error is a bug in `cummingsify`, and `try_to_cummingsify` falls back to the
//! original poem.
//!
//! Poems are bytes: lower-casing changes the ASCII letters only (Python's `bytes.lower()`),
//! so a Latin-1 poem keeps every other byte.
//!
//! Invariant: [`try_to_cummingsify`] lets only a [`GibberishError`] through; every other
//! failure becomes the original poem.

use std::hash::{BuildHasher, Hasher, RandomState};

use torsion::Failure;

torsion::error_type!(
    /// The poem is gibberish: cummingsifying it cannot work (the tutorial's
    /// `GibberishError`).
    pub GibberishError,
    "the poem is gibberish"
);

torsion::error_type!(
    /// A bug in `cummingsify` (the tutorial's `ValueError`).
    pub CummingsifyBug,
    "cummingsify has a bug"
);

/// How a call to [`cummingsify`] goes: the tutorial's `random.choice([success, gibberish,
/// bug])`, a value here so that a command-line option (and a test) can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fate {
    /// The poem comes back lower-cased.
    Success,
    /// [`GibberishError`].
    Gibberish,
    /// [`CummingsifyBug`].
    Bug,
}

impl Fate {
    /// One of the three, at random.
    pub fn random() -> Fate {
        // A fresh RandomState hashes with new random keys: enough for a demo.
        match RandomState::new().build_hasher().finish() % 3 {
            0 => Fate::Success,
            1 => Fate::Gibberish,
            _ => Fate::Bug,
        }
    }
}

/// The poem with its ASCII letters lower-cased, unless `fate` says it fails (the
/// tutorial's `cummingsify`).
///
/// # Errors
///
/// [`GibberishError`] or [`CummingsifyBug`], as `fate` says.
///
/// # Examples
///
/// ```
/// use torsion_examples::cummingsify::{Fate, GibberishError, cummingsify};
///
/// assert_eq!(cummingsify(b"Roses ARE Red", Fate::Success).unwrap(), b"roses are red");
/// assert!(cummingsify(b"Roses", Fate::Gibberish).unwrap_err().check::<GibberishError>());
/// ```
pub fn cummingsify(poem: &[u8], fate: Fate) -> Result<Vec<u8>, Failure> {
    match fate {
        Fate::Success => Ok(poem.to_ascii_lowercase()),
        Fate::Gibberish => Err(GibberishError.into()),
        Fate::Bug => Err(CummingsifyBug.into()),
    }
}

/// Cummingsifies the poem: gibberish is an error that goes on down the chain; any other
/// failure is a bug, reported with `Cummingsify failed!` on stdout, and the original poem
/// is used (the tutorial's `try_to_cummingsify`).
///
/// # Errors
///
/// [`GibberishError`], passed on.
pub fn try_to_cummingsify(poem: Vec<u8>, fate: Fate) -> Result<Vec<u8>, Failure> {
    match cummingsify(&poem, fate) {
        Err(failure) if failure.check::<GibberishError>() => Err(failure),
        Err(_) => {
            println!("Cummingsify failed!");
            Ok(poem)
        }
        ok => ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ascii_letters_change_and_a_bug_keeps_the_original() {
        let poem = || b"Roses ARE Red, \xc9T\xc9".to_vec();
        assert_eq!(
            try_to_cummingsify(poem(), Fate::Success).unwrap(),
            b"roses are red, \xc9t\xc9"
        );
        let failure = try_to_cummingsify(poem(), Fate::Gibberish).unwrap_err();
        assert!(failure.check::<GibberishError>());
        assert_eq!(try_to_cummingsify(poem(), Fate::Bug).unwrap(), poem());
    }
}
