//! The tutorial's torsion clients against real Twisted servers (from PyPI), over loopback:
//! the Deferred client (client 4.0) downloads from Twisted's fast poetry servers, the
//! Latin-1 poem byte for byte, and client 6.0 has a Twisted transform service cummingsify
//! a poem from a Twisted poetry server. The peers are the repository's
//! `tests/interop/poetry_peers.py` and `netstring_peers.py`.
//!
//! They run under the Python of `$TORSION_INTEROP_PYTHON` (`.ci/run` sets it;
//! `tests/interop/setup.sh` makes one); without one the tests are skipped with a note,
//! unless `TORSION_REQUIRE_INTEROP=1`, when they fail.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Child, poem, poem_path, printed, repository, run};

/// The Python with Twisted, or `None` (the test is skipped; a panic if peers are
/// required).
fn python() -> Option<String> {
    let mut candidates: Vec<String> = std::env::var("TORSION_INTEROP_PYTHON")
        .into_iter()
        .collect();
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/torsion-interop-venv/bin/python");
        candidates.push(venv.to_string_lossy().into_owned());
    }
    let found = candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import twisted"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("TORSION_REQUIRE_INTEROP").map_or(true, |v| v != "1"),
            "TORSION_REQUIRE_INTEROP=1 and no Python with Twisted: run tests/interop/setup.sh"
        );
        eprintln!("skipped: no Python with Twisted (tests/interop/setup.sh makes one)");
    }
    found
}

/// A Twisted server peer: `tests/interop/SCRIPT ARGS`, once it printed its port.
struct Twisted {
    _child: Child,
    port: u16,
}

impl Twisted {
    fn start(python: &str, script: &str, args: &[&str]) -> Twisted {
        let script = repository().join("tests/interop").join(script);
        let mut all = vec![script.to_str().expect("a UTF-8 path")];
        all.extend_from_slice(args);
        let mut child = Child::start(python, &all);
        child.wait_for_stdout("its port", |out| {
            String::from_utf8_lossy(out).contains('\n')
        });
        let text = child.stdout.text();
        let port = text
            .lines()
            .find_map(|l| l.strip_prefix("PORT "))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the Twisted peer printed no port: {text:?}"));
        Twisted {
            _child: child,
            port,
        }
    }

    fn poetry(python: &str, name: &str) -> Twisted {
        let path = poem_path(name);
        Twisted::start(
            python,
            "poetry_peers.py",
            &["server", path.to_str().expect("a UTF-8 path")],
        )
    }

    fn arg(&self) -> String {
        self.port.to_string()
    }
}

#[test]
fn the_deferred_client_downloads_from_twisted_poetry_servers_byte_for_byte() {
    let Some(python) = python() else { return };
    let science = Twisted::poetry(&python, "science.txt");
    let latin1 = Twisted::poetry(&python, "nachtlied.latin1.txt");
    let out = run(
        env!("CARGO_BIN_EXE_get-poetry-4"),
        [science.arg(), latin1.arg()],
    );
    out.assert_success();
    assert_eq!(out.stderr, "");
    let (a, b) = (
        printed(&poem("science.txt")),
        printed(&poem("nachtlied.latin1.txt")),
    );
    assert_eq!(out.stdout.len(), a.len() + b.len());
    assert!(out.stdout == [a.clone(), b.clone()].concat() || out.stdout == [b, a].concat());
}

#[test]
fn client_6_has_a_twisted_transform_service_cummingsify_a_twisted_poem() {
    let Some(python) = python() else { return };
    let xform = Twisted::start(&python, "netstring_peers.py", &["server"]);
    let latin1 = Twisted::poetry(&python, "nachtlied.latin1.txt");
    let out = run(
        env!("CARGO_BIN_EXE_get-poetry-6"),
        [xform.arg(), latin1.arg()],
    );
    out.assert_success();
    assert_eq!(out.stderr, "");
    // Twisted's bytes.lower(), like torsion's transform, changes ASCII letters only.
    assert_eq!(
        out.stdout,
        printed(&poem("nachtlied.latin1.txt").to_ascii_lowercase())
    );
}
