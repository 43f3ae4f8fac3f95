//! Where a seccomp profile refuses io_uring (as Docker's and containerd's defaults do), asking
//! for the io_uring backend fails with a clear error and `auto` falls back to epoll.
//!
//! The refusal is real: a child process (this test binary again) installs a seccomp filter
//! that fails `io_uring_setup` with `EPERM`, then tries.

use torsion::Reactor;
use torsion::reactor::backend::BackendKind;

const SCENARIO: &str = "TORSION_IO_URING_REFUSED";

/// A seccomp filter failing `io_uring_setup` with `EPERM` and allowing everything else,
/// installed for this thread and the threads it starts.
fn refuse_io_uring() {
    // Classic BPF: load the system call number, compare, return.
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let setup = u32::try_from(libc::SYS_io_uring_setup).expect("a small number");
    let mut filter = [
        // seccomp_data.nr is at offset 0.
        libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: setup,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(
        rc,
        0,
        "PR_SET_NO_NEW_PRIVS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `program` points at `filter`, both alive across the call; the kernel copies
    // the program before returning.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        )
    };
    assert_eq!(rc, 0, "PR_SET_SECCOMP: {}", std::io::Error::last_os_error());
}

/// The child side: runs the scenario named in the environment, if any.
#[test]
fn child() {
    if std::env::var_os(SCENARIO).is_none() {
        return;
    }
    refuse_io_uring();

    let err = BackendKind::IoUring
        .probe()
        .expect_err("io_uring is refused");
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{err}");
    let failure = Reactor::builder()
        .backend(BackendKind::IoUring)
        .build()
        .expect_err("no reactor on a refused io_uring");
    eprintln!("refused: {failure}");

    assert_eq!(BackendKind::auto(), BackendKind::Epoll);
    // TORSION_REACTOR=auto, as the parent set it.
    let reactor = Reactor::new().expect("a reactor on the fallback");
    assert_eq!(reactor.backend(), BackendKind::Epoll);
    eprintln!("auto: {}", reactor.backend());
}

#[test]
fn a_refused_io_uring_is_a_clear_error_and_auto_falls_back_to_epoll() {
    if BackendKind::IoUring.probe().is_err() {
        eprintln!("skipped: io_uring is refused here already");
        return;
    }
    let (code, stderr) = {
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = std::process::Command::new(exe)
            .args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env(SCENARIO, "1")
            .env("TORSION_REACTOR", "auto")
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("cannot run the test binary");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("refused: io_uring is not available: Operation not permitted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("seccomp"),
        "the message names the likely cause: {stderr}"
    );
    assert!(stderr.contains("auto: epoll"), "{stderr}");
}
