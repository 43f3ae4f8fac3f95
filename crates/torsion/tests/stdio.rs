//! A torsion process driven through its standard input and output (Twisted's
//! `test_stdio.py`): this binary runs itself as the child, with a protocol on
//! [`StandardIo`], over pipes, a regular file, /dev/null and a socket, and checks that the
//! shared descriptors' flags are left as they were (Twisted's #3442).
//!
//! The child writes `ready\n`, echoes what it reads upper-cased, and at the end of its
//! input either writes `bye\n` and closes (a half-closing protocol) or is closed at once.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};

use torsion::net::Transport;
use torsion::protocol::Protocol;
use torsion::stdio::StandardIo;
use torsion::{Failure, Reactor};

const CHILD: &str = "TORSION_STDIO_CHILD";

struct Shout {
    transport: Option<Transport>,
    half_close: bool,
    reactor: Reactor,
}

impl Protocol for Shout {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(b"ready\n");
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(&data.to_ascii_uppercase());
        }
    }
    fn supports_half_close(&self) -> bool {
        self.half_close
    }
    fn read_connection_lost(&mut self) {
        if let Some(t) = &self.transport {
            t.write(b"bye\n");
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        if !reason.check::<torsion::error::ConnectionDone>() {
            eprintln!("lost: {reason}");
            std::process::exit(3);
        }
        let _ = self.reactor.stop();
    }
}

fn child(mode: &str) -> ! {
    let reactor = Reactor::new().expect("reactor");
    let protocol = Shout {
        transport: None,
        half_close: mode == "half",
        reactor: reactor.clone(),
    };
    if let Err(err) = StandardIo::new(&reactor, protocol) {
        eprintln!("cannot start: {err}");
        std::process::exit(2);
    }
    reactor.run().expect("run");
    std::process::exit(0);
}

fn me(mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command.env(CHILD, mode);
    command
}

fn check(name: &str, ok: bool, detail: impl std::fmt::Debug) -> bool {
    println!(
        "test stdio::{name} ... {}",
        if ok { "ok" } else { "FAILED" }
    );
    if !ok {
        println!("  {detail:?}");
    }
    ok
}

fn pipes_with_half_close() -> bool {
    let mut child = me("half")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    check(
        "pipes_with_half_close",
        out.status.success() && out.stdout == b"ready\nHELLO\nbye\n",
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
    )
}

fn pipes_without_half_close_close_at_end_of_input() -> bool {
    let mut child = me("plain")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    check(
        "pipes_without_half_close_close_at_end_of_input",
        out.status.success() && out.stdout == b"ready\nHELLO\n",
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
    )
}

fn a_regular_file_as_stdin() -> bool {
    let path = std::env::temp_dir().join(format!("torsion-stdio-{}", std::process::id()));
    let big: Vec<u8> = (0..300_000).map(|i| b"abcdefghij\n"[i % 11]).collect();
    std::fs::write(&path, &big).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let out = me("half")
        .stdin(file)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let mut want = b"ready\n".to_vec();
    want.extend(big.to_ascii_uppercase());
    want.extend(b"bye\n");
    check(
        "a_regular_file_as_stdin",
        out.status.success() && out.stdout == want,
        (out.status, out.stdout.len(), want.len()),
    )
}

fn dev_null_as_stdin() -> bool {
    let out = me("half")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    check(
        "dev_null_as_stdin",
        out.status.success() && out.stdout == b"ready\nbye\n",
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
    )
}

fn nonblocking(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .unwrap()
        .contains(rustix::fs::OFlags::NONBLOCK)
}

fn shared_descriptions_stay_blocking() -> bool {
    // The child's stdin and stdout are pipe ends this process keeps copies of: the same
    // file descriptions. Once the child runs, they must still be blocking.
    let (in_read, in_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let (out_read, out_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let keep_in: OwnedFd = in_read.try_clone().unwrap();
    let keep_out: OwnedFd = out_write.try_clone().unwrap();
    let mut child = me("half")
        .stdin(Stdio::from(in_read))
        .stdout(Stdio::from(out_write))
        .spawn()
        .unwrap();
    let mut from_child = std::fs::File::from(out_read);
    let mut ready = [0u8; 6];
    from_child.read_exact(&mut ready).unwrap();
    let flags_ok = !nonblocking(&keep_in) && !nonblocking(&keep_out);
    let mut to_child = std::fs::File::from(in_write);
    to_child.write_all(b"x\n").unwrap();
    drop(to_child);
    drop(keep_in);
    drop(keep_out);
    let mut rest = Vec::new();
    from_child.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    check(
        "shared_descriptions_stay_blocking",
        flags_ok && status.success() && &ready == b"ready\n" && rest == b"X\nbye\n",
        (
            flags_ok,
            status,
            String::from_utf8_lossy(&rest).into_owned(),
        ),
    )
}

fn a_socket_as_stdin_and_stdout() -> bool {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let theirs_out = theirs.try_clone().unwrap();
    let mut child = me("half")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)))
        .spawn()
        .unwrap();
    let mut ours = ours;
    ours.write_all(b"sock\n").unwrap();
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    ours.read_to_end(&mut got).unwrap();
    let status = child.wait().unwrap();
    let blocking = !nonblocking(&ours);
    check(
        "a_socket_as_stdin_and_stdout",
        status.success() && got == b"ready\nSOCK\nbye\n" && blocking,
        (status, String::from_utf8_lossy(&got).into_owned()),
    )
}

/// One check: runs the child as it needs and says whether it behaved.
type Check = fn() -> bool;

fn stdout_to_a_regular_file() -> bool {
    // poll(2) calls a regular file always readable: that must not read as "closed".
    let path = std::env::temp_dir().join(format!("torsion-stdio-out-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let mut child = me("half")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    stdin.write_all(b"late\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    let got = std::fs::read(&path).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    check(
        "stdout_to_a_regular_file",
        status.success() && got == b"ready\nLATE\nbye\n",
        (status, String::from_utf8_lossy(&got).into_owned()),
    )
}

fn a_terminal_as_stdin_and_stdout() -> bool {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::ffi::OsStr::new(
            std::str::from_utf8(name.to_bytes()).unwrap(),
        ))
        .unwrap();
    let mut child = me("half")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut terminal = std::fs::File::from(master);
    let mut seen = Vec::new();
    let read_until = |terminal: &mut std::fs::File, want: &[u8], seen: &mut Vec<u8>| {
        let mut buf = [0u8; 256];
        while !seen.windows(want.len()).any(|w| w == want) {
            match terminal.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    let ready = read_until(&mut terminal, b"ready", &mut seen);
    // A typed line makes the terminal's write end look readable too: that is not a close.
    terminal.write_all(b"typed\n").unwrap();
    let echoed = ready && read_until(&mut terminal, b"TYPED", &mut seen);
    terminal.write_all(b"\x04").unwrap();
    let bye = echoed && read_until(&mut terminal, b"bye", &mut seen);
    let status = child.wait().unwrap();
    check(
        "a_terminal_as_stdin_and_stdout",
        bye && status.success(),
        (status, String::from_utf8_lossy(&seen).into_owned()),
    )
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
    }
    // `cargo test -- NAME` filters; the harness's flags are ignored.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: &[(&str, Check)] = &[
        ("pipes_with_half_close", pipes_with_half_close),
        (
            "pipes_without_half_close_close_at_end_of_input",
            pipes_without_half_close_close_at_end_of_input,
        ),
        ("a_regular_file_as_stdin", a_regular_file_as_stdin),
        ("dev_null_as_stdin", dev_null_as_stdin),
        (
            "shared_descriptions_stay_blocking",
            shared_descriptions_stay_blocking,
        ),
        ("a_socket_as_stdin_and_stdout", a_socket_as_stdin_and_stdout),
        ("stdout_to_a_regular_file", stdout_to_a_regular_file),
        (
            "a_terminal_as_stdin_and_stdout",
            a_terminal_as_stdin_and_stdout,
        ),
    ];
    let mut failed = 0;
    let mut ran = 0;
    for &(name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        if !test() {
            failed += 1;
        }
    }
    println!(
        "test result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        ran - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
