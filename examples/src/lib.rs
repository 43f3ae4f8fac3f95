//! The programs of the Twisted tutorials torsion comes from, ported to Rust: Dave
//! Peticolas' poetry series ("An Introduction to Asynchronous Programming and Twisted",
//! the Krondo tutorial), its Part 17 on `inlineCallbacks`, the Tribler guide to
//! generators and Deferreds, a Deferred tutorial's `print_later` and `getPage` programs,
//! and a guide to `callLater`, `callInThread` and `deferToThread`.
//!
//! Each program is a binary of this crate (`src/bin/`), named after the tutorial program
//! it mirrors; `examples/README.md` tells their story in order, with the command that runs
//! each one and the `torsion` runner command that starts the server it talks to. The
//! servers themselves (fast and slow poetry, the transform service, the caching proxy, a
//! web server) are the runner's plugins, not programs of this crate, except the blocking
//! server, whose point is that it is not event-driven.
//!
//! The modules hold what several programs share, one tutorial concept a module:
//!
//! | module | what | Twisted program |
//! | --- | --- | --- |
//! | [`address`] | `[HOST:]PORT` arguments | every `get-poetry.py`'s `parse_address` |
//! | [`poem`] | printing a poem's bytes | `print poem` |
//! | [`delay`] | `--delay SECONDS` options | `slowpoetry.py --delay`, the demos' fixed delays |
//! | [`timedelta`] | elapsed times as Python prints them | the blocking and async clients |
//! | [`client`] | `get_poetry` returning a Deferred | `twisted-client-4` to `-8` |
//! | [`tally`] | poems and errors counted until every download ended | `poem_done` of clients 3 to 6 |
//! | [`cummingsify`] | the transform that fails at random | `twisted-client-5` |
//! | [`transform`] | the transform service's client, `get_transformed_poem` | `twisted-client-6` to `-8` |
//! | [`generator`] | generators with `next`, `send` and `throw` | `inline-callbacks/gen-*.py`, Tribler's `get_id` |
//! | [`program`] | a reactor like Twisted's, `error:` lines and exit codes | `reactor.run()` |
//!
//! Poems are bytes everywhere: no program decodes one.
//!
//! Invariant: no program panics on its input or on I/O: every failure is an `error:` line
//! on stderr and a non-zero exit ([`program::exit`]).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod address;
pub mod client;
pub mod cummingsify;
pub mod delay;
pub mod generator;
pub mod poem;
pub mod program;
pub mod tally;
pub mod timedelta;
pub mod transform;
