//! torsion's `twisted.web`: HTTP/1.1 for torsion; this release holds the HTTP/1.1 parsing
//! layer.
//!
//! The crate will grow into Twisted's `twisted.web`: a `Site` of `Resource`s, static files
//! and an `Agent`. What is here is its foundation, [`parse`]: a sans-I/O reader of request
//! heads and chunked bodies that touches no socket and no reactor, so the server and the
//! client built on it share one strict reading of the wire.
//!
//! The invariant a reader must keep: nothing in this crate panics on what a peer sends;
//! every malformed input is an error value that names the status to answer with.
#![warn(missing_docs)]

pub mod parse;
