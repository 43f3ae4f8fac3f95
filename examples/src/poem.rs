//! Printing a poem: its bytes as they arrived, then a newline (the tutorials' `print poem`,
//! without the decoding step their Python 3 versions added).
//!
//! Poems are bytes from end to end: the servers send a file's bytes, the clients collect
//! them and print them untouched, so a poem in Latin-1 (`poems/nachtlied.latin1.txt`)
//! reaches the terminal, or a pipe, byte for byte.
//!
//! Invariant: nothing here decodes, re-encodes or replaces a byte.

use std::io::Write;

use torsion::Failure;

/// Writes `poem` and a newline to standard output and flushes it.
///
/// # Errors
///
/// Standard output cannot be written (closed, or a full disk behind a redirection).
pub fn print_poem(poem: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(poem)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| Failure::msg(format!("cannot write the poem to standard output: {e}")))
}
