//! What the end-to-end tests share: the `torsion` runner started as a child process (the
//! servers the examples talk to are its plugins), the examples run as child processes,
//! and the poems of `poems/`.
//!
//! Finding `torsion`: a test can name only its own package's binaries with
//! `env!("CARGO_BIN_EXE_...")`, and the runner is `torsion-cli`'s. So this crate builds the
//! same runner (`Runner::with_builtin_plugins()`, what `torsion`'s `main` calls) as its
//! binary `torsion-runner`, which cargo builds with the tests, from the same sources and
//! features: never stale, never a second build. `TORSION_BIN=/path/to/torsion` runs the
//! tests against another runner binary, the installed `torsion` say.
//!
//! Invariant: no test leaves a process behind and none waits without a deadline. Every
//! child is held by a [`Child`] that kills it on drop, so a failing assertion kills it
//! too; every wait gives up after [`DEADLINE`] and fails the test, showing what the child
//! printed.
#![allow(dead_code)] // each test file uses some of these

use std::ffi::OsStr;
use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any child may take to do what a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(10);

/// The path of this package's binary `$name` (an example).
#[macro_export]
macro_rules! example {
    ($name:literal) => {
        env!(concat!("CARGO_BIN_EXE_", $name))
    };
}

/// The repository's top directory.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples/ has a parent")
        .to_path_buf()
}

/// The path of a poem of `poems/`.
pub fn poem_path(name: &str) -> PathBuf {
    repository().join("poems").join(name)
}

/// The bytes of a poem of `poems/`.
pub fn poem(name: &str) -> Vec<u8> {
    let path = poem_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What a client prints for one poem: its bytes and a newline.
pub fn printed(poem: &[u8]) -> Vec<u8> {
    let mut out = poem.to_vec();
    out.push(b'\n');
    out
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// The runner binary the servers are started with (see the module doc).
pub fn torsion_bin() -> PathBuf {
    match std::env::var_os("TORSION_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_torsion-runner")),
    }
}

/// Bytes a thread collects from one of a child's pipes.
#[derive(Clone, Default)]
pub struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    fn spawn(mut source: impl Read + Send + 'static) -> (Collected, JoinHandle<()>) {
        let collected = Collected::default();
        let sink = collected.clone();
        let handle = thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sink.lock().extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        (collected, handle)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// Everything so far, as text (lossily).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }
}

/// How a child ended, and all it printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    /// Stdout as text (lossily: for programs that print text only).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stdout's lines.
    pub fn lines(&self) -> Vec<String> {
        self.stdout_text().lines().map(str::to_string).collect()
    }

    /// Fails unless the child exited with `code`, showing what it printed.
    pub fn assert_code(&self, code: i32) -> &Finished {
        assert_eq!(
            self.status.code(),
            Some(code),
            "exit status {:?}, expected {code}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout_text(),
            self.stderr
        );
        self
    }

    /// Fails unless the child exited 0.
    pub fn assert_success(&self) -> &Finished {
        self.assert_code(0)
    }
}

/// A child process whose stdout and stderr are collected; killed on drop if still running.
pub struct Child {
    child: std::process::Child,
    pub stdout: Collected,
    pub stderr: Collected,
    readers: Vec<JoinHandle<()>>,
    what: String,
}

impl Child {
    /// Starts `program` with `args`, stdin on /dev/null, from the repository's top.
    pub fn start<I, S>(program: impl AsRef<OsStr>, args: I) -> Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(repository())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("{command:?}");
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.to_string_lossy()));
        let (stdout, out_reader) = Collected::spawn(child.stdout.take().expect("piped stdout"));
        let (stderr, err_reader) = Collected::spawn(child.stderr.take().expect("piped stderr"));
        Child {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
            what,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `wanted` holds for stdout; fails if the child exits first or
    /// [`DEADLINE`] passes.
    pub fn wait_for_stdout(&mut self, what: &str, wanted: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !wanted(&self.stdout.bytes()) {
            if !self.running() || Instant::now() > deadline {
                thread::sleep(Duration::from_millis(50));
                if wanted(&self.stdout.bytes()) {
                    return;
                }
                let finished = self.kill();
                panic!(
                    "{} never printed {what}\nstdout:\n{}\nstderr:\n{}",
                    self.what,
                    finished.stdout_text(),
                    finished.stderr
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a positive pid");
        rustix::process::kill_process(pid, signal).expect("cannot signal the child");
    }

    /// Waits for the child to exit by itself (killed and failed past [`DEADLINE`]).
    pub fn finish(mut self) -> Finished {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return self.collect(),
                Ok(None) if Instant::now() > deadline => {
                    let finished = self.kill();
                    panic!(
                        "{} did not exit within {DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
                        self.what,
                        finished.stdout_text(),
                        finished.stderr
                    );
                }
                Ok(None) => thread::sleep(POLL),
                Err(e) => panic!("cannot wait for {}: {e}", self.what),
            }
        }
    }

    /// SIGINT (Ctrl-C), then [`finish`](Child::finish).
    pub fn interrupt(self) -> Finished {
        self.signal(rustix::process::Signal::INT);
        self.finish()
    }

    /// SIGTERM, then [`finish`](Child::finish).
    pub fn terminate(self) -> Finished {
        self.signal(rustix::process::Signal::TERM);
        self.finish()
    }

    fn kill(&mut self) -> Finished {
        let _ = self.child.kill();
        self.collect()
    }

    fn collect(&mut self) -> Finished {
        let status = self.child.wait().expect("the child's status");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Finished {
            status,
            stdout: self.stdout.bytes(),
            stderr: self.stderr.text(),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `program` with `args` to its end.
pub fn run<I, S>(program: impl AsRef<OsStr>, args: I) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Child::start(program, args).finish()
}

/// A `torsion` plugin serving on a free loopback port, its JSON log read from stdout.
pub struct Server {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl Server {
    /// Starts `torsion PLUGIN --listen tcp:0:interface=127.0.0.1 ARGS...` and waits until
    /// it listens.
    pub fn start(plugin: &str, args: &[&str]) -> Server {
        let mut all = vec![
            "--log-format",
            "json",
            plugin,
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ];
        all.extend_from_slice(args);
        let mut child = Child::start(torsion_bin(), &all);
        child.wait_for_stdout("the address it listens on", |out| {
            listening_port(&String::from_utf8_lossy(out)).is_some()
        });
        let port = listening_port(&child.stdout.text()).expect("checked above");
        Server { child, port }
    }

    /// A fast poetry server for the poem `name` of `poems/`.
    pub fn poetry(name: &str) -> Server {
        let path = poem_path(name);
        Server::start("poetry", &[path.to_str().expect("a UTF-8 path")])
    }

    /// A slow poetry server: `num_bytes` bytes every `delay` seconds.
    pub fn slow_poetry(name: &str, num_bytes: &str, delay: &str) -> Server {
        let path = poem_path(name);
        let path = path.to_str().expect("a UTF-8 path");
        Server::start(
            "poetry",
            &["--num-bytes", num_bytes, "--delay", delay, path],
        )
    }

    /// The transform service.
    pub fn transform() -> Server {
        Server::start("transform", &[])
    }

    /// The port, as a client argument.
    pub fn arg(&self) -> String {
        self.port.to_string()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.child.stdout.text()
    }
}

/// The port of a JSON `listening on tcp:127.0.0.1:PORT` log line in `log`.
pub fn listening_port(log: &str) -> Option<u16> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on "))
        })
        .find_map(|event| {
            event["address"]
                .as_str()?
                .strip_prefix("tcp:")?
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.port())
        })
}

/// `lines` as owned strings, for comparing with [`Finished::lines`].
pub fn lines(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|line| line.to_string()).collect()
}
