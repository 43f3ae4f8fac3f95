//! Files served from disk (Twisted's `twisted.web.test.test_static`): types, listings with
//! escaped names, index files, ranges, conditional requests, HEAD, paths that try to leave
//! the root, and large files streamed in bounded memory, to a slow reader too.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use torsion_web::{SiteConfig, StaticFile};

mod common;
use common::{connect, exchange, read_response, serve};

/// A directory tree for one test, removed afterwards.
struct Tree(PathBuf);

impl Tree {
    fn new() -> Tree {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "torsion-web-static-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www/sub")).unwrap();
        std::fs::create_dir_all(dir.join("www/withindex")).unwrap();
        std::fs::write(
            dir.join("www/poem.txt"),
            "roses are red\nviolets are blue\n",
        )
        .unwrap();
        std::fs::write(dir.join("www/<b>&'.txt"), "odd name").unwrap();
        std::fs::write(dir.join("www/sub/page.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.join("www/withindex/index.html"), "the index").unwrap();
        std::fs::write(dir.join("secret.txt"), "outside the root").unwrap();
        std::os::unix::fs::symlink(dir.join("secret.txt"), dir.join("www/link-out")).unwrap();
        Tree(dir)
    }

    fn www(&self) -> PathBuf {
        self.0.join("www")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn get(port: u16, path: &str, extra: &str) -> common::Response {
    exchange(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes(),
    )
    .0
}

fn site(root: &Path) -> Rc<StaticFile> {
    Rc::new(StaticFile::new(root))
}

#[test]
fn a_file_is_served_with_its_type_validators_and_length() {
    let tree = Tree::new();
    let (response, head) = serve(site(&tree.www()), SiteConfig::default(), |port| {
        (
            get(port, "/poem.txt", ""),
            exchange(port, b"HEAD /poem.txt HTTP/1.1\r\nHost: x\r\n\r\n").0,
        )
    });
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"roses are red\nviolets are blue\n");
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert!(response.header("etag").is_some());
    assert!(response.header("last-modified").is_some());
    assert_eq!(response.header("accept-ranges"), Some("bytes"));
    assert_eq!(head.header("content-length"), Some("31"));
    assert!(head.body.is_empty());
}

#[test]
fn a_directory_redirects_to_its_slash_then_lists_with_escaped_names_or_serves_its_index() {
    let tree = Tree::new();
    let (redirect, listing, index) = serve(site(&tree.www()), SiteConfig::default(), |port| {
        (
            get(port, "/sub", ""),
            get(port, "/", ""),
            get(port, "/withindex/", ""),
        )
    });
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("location"), Some("/sub/"));
    let page = String::from_utf8(listing.body).unwrap();
    assert!(page.contains("poem.txt"), "{page}");
    assert!(
        page.contains("&lt;b&gt;&amp;&#39;.txt"),
        "the name is escaped: {page}"
    );
    assert!(!page.contains("<b>&"), "{page}");
    assert!(page.contains("href=\"sub/\""), "{page}");
    assert_eq!(index.body, b"the index");
}

#[test]
fn ranges_single_multiple_and_unsatisfiable() {
    let tree = Tree::new();
    let (one, many, none) = serve(site(&tree.www()), SiteConfig::default(), |port| {
        (
            get(port, "/poem.txt", "Range: bytes=0-4\r\n"),
            get(port, "/poem.txt", "Range: bytes=0-4, 6-8\r\n"),
            get(port, "/poem.txt", "Range: bytes=100-200\r\n"),
        )
    });
    assert_eq!(one.status, 206);
    assert_eq!(one.body, b"roses");
    assert_eq!(one.header("content-range"), Some("bytes 0-4/31"));
    assert_eq!(many.status, 206);
    let content_type = many.header("content-type").unwrap().to_string();
    assert!(
        content_type.starts_with("multipart/byteranges; boundary="),
        "{content_type}"
    );
    let body = String::from_utf8(many.body).unwrap();
    assert!(
        body.contains("Content-Range: bytes 0-4/31\r\n\r\nroses"),
        "{body}"
    );
    assert!(
        body.contains("Content-Range: bytes 6-8/31\r\n\r\nare"),
        "{body}"
    );
    assert_eq!(none.status, 416);
    assert_eq!(none.header("content-range"), Some("bytes */31"));
}

#[test]
fn conditional_requests_get_304() {
    let tree = Tree::new();
    let (by_tag, by_date, changed) = serve(site(&tree.www()), SiteConfig::default(), |port| {
        let first = get(port, "/poem.txt", "");
        let etag = first.header("etag").unwrap().to_string();
        let modified = first.header("last-modified").unwrap().to_string();
        (
            get(port, "/poem.txt", &format!("If-None-Match: {etag}\r\n")),
            get(
                port,
                "/poem.txt",
                &format!("If-Modified-Since: {modified}\r\n"),
            ),
            get(port, "/poem.txt", "If-None-Match: \"other\"\r\n"),
        )
    });
    assert_eq!(by_tag.status, 304);
    assert!(by_tag.body.is_empty());
    assert_eq!(by_date.status, 304);
    assert_eq!(changed.status, 200);
}

#[test]
fn paths_out_of_the_root_are_refused() {
    let tree = Tree::new();
    let statuses = serve(site(&tree.www()), SiteConfig::default(), |port| {
        [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/sub/%2e%2e/%2e%2e/secret.txt",
            "/link-out",
            "/sub%2f..%2f..%2fsecret.txt",
            "/sub//page.html",
        ]
        .iter()
        .map(|path| (path.to_string(), get(port, path, "").status))
        .collect::<Vec<_>>()
    });
    for (path, status) in statuses {
        assert_eq!(status, 404, "{path}");
    }
}

#[test]
fn a_symlink_out_is_followed_only_when_allowed() {
    let tree = Tree::new();
    let root = Rc::new(StaticFile::new(tree.www()).follow_symlinks(true));
    let response = serve(root, SiteConfig::default(), |port| {
        get(port, "/link-out", "")
    });
    assert_eq!(response.body, b"outside the root");
}

#[test]
fn a_large_file_is_streamed_in_bounded_memory() {
    const SIZE: u64 = 256 << 20;
    let tree = Tree::new();
    let big = tree.www().join("big.bin");
    std::fs::File::create(&big).unwrap().set_len(SIZE).unwrap();
    let before = peak_rss_kib();
    let received = serve(site(&tree.www()), SiteConfig::default(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match reader.read(&mut buf).unwrap() {
                0 => break,
                n => total += n as u64,
            }
        }
        (head, total)
    });
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(
        received.0.contains("content-length: 268435456"),
        "{}",
        received.0
    );
    assert_eq!(received.1, SIZE);
    assert!(
        grown_mib < 64,
        "serving 256 MiB grew the peak RSS by {grown_mib} MiB"
    );
}

#[test]
fn a_large_file_reaches_a_slow_reader_intact_in_bounded_memory() {
    // 64 MiB of 1 MiB blocks: a pseudo-random block, each copy stamped with its number,
    // so a lost, repeated or reordered chunk shows.
    const BLOCK: usize = 1 << 20;
    const BLOCKS: usize = 64;
    fn block(pattern: &[u8], n: usize) -> Vec<u8> {
        let mut block = pattern.to_vec();
        block[..8].copy_from_slice(&(n as u64).to_le_bytes());
        block
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let pattern: Vec<u8> = (0..BLOCK / 8)
        .flat_map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state.to_le_bytes()
        })
        .collect();
    let tree = Tree::new();
    {
        let mut file = std::fs::File::create(tree.www().join("slow.bin")).unwrap();
        for n in 0..BLOCKS {
            file.write_all(&block(&pattern, n)).unwrap();
        }
    }
    let before = peak_rss_kib();
    let expected = pattern.clone();
    let (head, blocks) = serve(site(&tree.www()), SiteConfig::default(), move |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"GET /slow.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        // Slower than the server: stalls long enough for every buffer between the two
        // to fill, then reads of 16 KiB with a pause after each 256 KiB.
        let mut current = Vec::with_capacity(BLOCK);
        let mut buf = vec![0u8; 16 << 10];
        let mut blocks = 0;
        let mut since_pause = 0;
        loop {
            if blocks % 16 == 0 && current.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(150));
            }
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let take = rest.len().min(BLOCK - current.len());
                current.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if current.len() == BLOCK {
                    assert!(
                        current == block(&expected, blocks),
                        "block {blocks} differs"
                    );
                    blocks += 1;
                    current.clear();
                }
            }
            since_pause += n;
            if since_pause >= 256 << 10 {
                since_pause = 0;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        assert!(
            current.is_empty(),
            "{} bytes after the last block",
            current.len()
        );
        (head, blocks)
    });
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(head.contains("content-length: 67108864"), "{head}");
    assert_eq!(blocks, BLOCKS);
    // Buffering the file for the slow reader would grow the peak by up to 64 MiB.
    assert!(
        grown_mib < 16,
        "serving 64 MiB to a slow reader grew the peak RSS by {grown_mib} MiB"
    );
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn pipelined_file_requests_come_back_in_order() {
    let tree = Tree::new();
    let bodies = serve(site(&tree.www()), SiteConfig::default(), |port| {
        let (mut stream, mut reader) = connect(port);
        stream
            .write_all(b"GET /poem.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /sub/page.html HTTP/1.1\r\nHost: x\r\n\r\nGET /poem.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-4\r\n\r\n")
            .unwrap();
        (0..3)
            .map(|_| read_response(&mut reader, false).body)
            .collect::<Vec<_>>()
    });
    assert_eq!(
        bodies,
        [
            &b"roses are red\nviolets are blue\n"[..],
            b"<p>hi</p>",
            b"roses"
        ]
    );
}

#[test]
fn curl_gets_ranges_heads_and_conditional_answers() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("TORSION_REQUIRE_INTEROP").is_none(),
            "curl is required: install curl"
        );
        eprintln!("skipped: curl is not installed");
        return;
    }
    let tree = Tree::new();
    let poem = tree.www().join("poem.txt");
    let (range, head, fresh, stale) =
        serve(site(&tree.www()), SiteConfig::default(), move |port| {
            let url = format!("http://127.0.0.1:{port}/poem.txt");
            let curl = |args: &[&str]| {
                let output = std::process::Command::new("curl")
                    .args(args)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&output.stdout).into_owned()
            };
            let range = curl(&["-s", "-r", "6-8", &url]);
            let head = curl(&["-sI", &url]);
            // -z FILE: only if changed since the file's time (it is not): 304, no body.
            let fresh = curl(&[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-z",
                poem.to_str().unwrap(),
                &url,
            ]);
            let stale = curl(&[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-z",
                "Jan 1 2001",
                &url,
            ]);
            (range, head, fresh, stale)
        });
    assert_eq!(range, "are");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 31"),
        "{head}"
    );
    assert_eq!(fresh, "304");
    assert_eq!(stale, "200");
}
