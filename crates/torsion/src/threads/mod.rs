//! Threads: the reactor's thread pool, for blocking work that must not run on the reactor
//! thread (Twisted's `twisted.internet.threads` and `twisted.python.threadpool`).

mod pool;

pub use pool::ThreadPool;
