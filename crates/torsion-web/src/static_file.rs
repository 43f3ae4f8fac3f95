//! Files and directories served from disk (Twisted's `twisted.web.static.File`): content
//! types, index files, directory listings, byte ranges (one, or several as
//! `multipart/byteranges`), `Last-Modified`/`If-Modified-Since` and `ETag`/`If-None-Match`,
//! HEAD, and bodies streamed through a pull producer so a large file is served in bounded
//! memory.
//!
//! Invariant: nothing outside the root is ever opened: a path segment that is `.`, `..`,
//! empty in the middle, or holds `/`, `\` or NUL (after percent-decoding, so `%2e%2e` too)
//! is refused, and a symbolic link resolving outside the root is refused unless
//! [`StaticFile::follow_symlinks`] allows it.

use std::cell::{Cell, RefCell};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use http::StatusCode;
use torsion::net::Producer;

use crate::request::Request;
use crate::resource::{NotFound, Render, Resource};

/// How much one read of a file takes (and one write sends), as much as the transport's
/// high-water mark. Larger chunks (128, 256 KiB) saved no CPU we could measure on a 1 GiB
/// download, cost memory per connection (the read buffer, and as much again in the
/// transport), and put the transport's buffer over glibc's mmap threshold (128 KiB),
/// where each refill of it is a fresh mapping faulted in page by page until the
/// allocator adapts.
const CHUNK: usize = 64 * 1024;

/// A file or a directory tree on disk as a resource (Twisted's `static.File`).
///
/// # Examples
///
/// ```no_run
/// use std::rc::Rc;
/// use torsion_web::{Site, StaticFile};
///
/// let site = Site::new(Rc::new(StaticFile::new("/srv/www")));
/// # let _ = site;
/// ```
pub struct StaticFile {
    path: PathBuf,
    root: Rc<Root>,
}

struct Root {
    /// The root, resolved: where every served path must stay.
    canonical: PathBuf,
    follow_symlinks: Cell<bool>,
    listings: Cell<bool>,
    index_names: RefCell<Vec<String>>,
}

impl StaticFile {
    /// Serves `path`: a file, or a directory and everything under it.
    pub fn new(path: impl AsRef<Path>) -> StaticFile {
        let path = path.as_ref().to_path_buf();
        let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        StaticFile {
            path,
            root: Rc::new(Root {
                canonical,
                follow_symlinks: Cell::new(false),
                listings: Cell::new(true),
                index_names: RefCell::new(vec!["index.html".to_string()]),
            }),
        }
    }

    /// Follows symbolic links that lead outside the root (off by default).
    pub fn follow_symlinks(self, on: bool) -> StaticFile {
        self.root.follow_symlinks.set(on);
        self
    }

    /// Lists directories without an index file (on by default; off: 404).
    pub fn listings(self, on: bool) -> StaticFile {
        self.root.listings.set(on);
        self
    }

    /// The files a directory is answered with, in order (Twisted's `indexNames`:
    /// `index.html`).
    pub fn index_names(self, names: &[&str]) -> StaticFile {
        *self.root.index_names.borrow_mut() = names.iter().map(|n| n.to_string()).collect();
        self
    }

    fn at(&self, path: PathBuf) -> StaticFile {
        StaticFile {
            path,
            root: self.root.clone(),
        }
    }

    /// Whether `path` may be served: it exists and stays under the root.
    fn allowed(&self, path: &Path) -> Option<fs::Metadata> {
        let resolved = fs::canonicalize(path).ok()?;
        if !resolved.starts_with(&self.root.canonical) && !self.root.follow_symlinks.get() {
            return None;
        }
        fs::metadata(&resolved).ok()
    }

    fn render_directory(&self, request: &Rc<Request>) -> Render {
        if !request.path().ends_with('/') {
            // Relative links in the page need the slash (Twisted's `addSlash`).
            let mut location = format!("{}/", request.path());
            if let Some((_, query)) = request.uri().split_once('?') {
                location = format!("{location}?{query}");
            }
            request.redirect(&location);
            return Render::text(format!("moved to {location}\n"));
        }
        let index_names = self.root.index_names.borrow().clone();
        for name in index_names {
            let index = self.path.join(&name);
            if let Some(meta) = self.allowed(&index)
                && meta.is_file()
            {
                return serve_file(request, &index, &meta);
            }
        }
        if !self.root.listings.get() {
            return NotFound.render(request);
        }
        self.listing(request)
    }

    /// An HTML list of the directory's entries (Twisted's `DirectoryLister`).
    fn listing(&self, request: &Rc<Request>) -> Render {
        let mut names: Vec<(String, bool)> = match fs::read_dir(&self.path) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| {
                    let dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    (e.file_name().to_string_lossy().into_owned(), dir)
                })
                .collect(),
            Err(_) => return NotFound.render(request),
        };
        names.sort();
        let title = escape_html(&percent_decode_path(request.path()));
        let mut page = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Directory listing for {title}</title></head>\n<body><h1>Directory listing for {title}</h1>\n<ul>\n"
        );
        for (name, dir) in names {
            let slash = if dir { "/" } else { "" };
            page.push_str(&format!(
                "<li><a href=\"{}{slash}\">{}{slash}</a></li>\n",
                escape_html(&percent_encode(&name)),
                escape_html(&name)
            ));
        }
        page.push_str("</ul></body></html>\n");
        request.set_header("content-type", "text/html; charset=utf-8");
        Render::text(page)
    }
}

impl Resource for StaticFile {
    fn child(&self, name: &str, _request: &Request) -> Option<Rc<dyn Resource>> {
        if name.is_empty() {
            // A trailing slash: the directory itself.
            return Some(Rc::new(self.at(self.path.clone())));
        }
        if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
            return None;
        }
        Some(Rc::new(self.at(self.path.join(name))))
    }

    fn render_get(&self, request: &Rc<Request>) -> Render {
        // An empty segment before the end ("a//b") would have walked into the directory
        // itself; refuse it rather than serve a second name for everything.
        if request.path().contains("//") {
            return NotFound.render(request);
        }
        let Some(meta) = self.allowed(&self.path) else {
            return NotFound.render(request);
        };
        if meta.is_dir() {
            return self.render_directory(request);
        }
        serve_file(request, &self.path, &meta)
    }
}

/// Answers with the file at `path`: headers, a conditional 304, ranges, and the body
/// through a producer.
fn serve_file(request: &Rc<Request>, path: &Path, meta: &fs::Metadata) -> Render {
    let size = meta.len();
    let modified = meta.modified().ok();
    let mtime = modified
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let etag = format!("\"{size:x}-{mtime:x}\"");
    let content_type = mime_guess::from_path(path)
        .first_or_octet_stream()
        .essence_str()
        .to_string();
    request.set_header("accept-ranges", "bytes");
    request.set_header("etag", &etag);
    if let Some(modified) = modified {
        request.set_header("last-modified", &httpdate::fmt_http_date(modified));
    }
    if not_modified(request, &etag, mtime) {
        request.set_response_code(StatusCode::NOT_MODIFIED);
        let _ = request.finish();
        return Render::Later;
    }
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(_) => return NotFound.render(request),
    };
    let segments = match request.header("range").map(|r| parse_ranges(r, size)) {
        None | Some(Ranges::Ignore) => {
            request.set_header("content-type", &content_type);
            vec![Segment::File(0, size)]
        }
        Some(Ranges::Unsatisfiable) => {
            request.set_response_code(StatusCode::RANGE_NOT_SATISFIABLE);
            request.set_header("content-range", &format!("bytes */{size}"));
            return Render::text(format!(
                "416 Range Not Satisfiable: the file has {size} bytes\n"
            ));
        }
        Some(Ranges::Some(ranges)) if ranges.len() == 1 => {
            let (start, end) = ranges[0];
            request.set_response_code(StatusCode::PARTIAL_CONTENT);
            request.set_header("content-type", &content_type);
            request.set_header("content-range", &format!("bytes {start}-{end}/{size}"));
            vec![Segment::File(start, end - start + 1)]
        }
        Some(Ranges::Some(ranges)) => {
            let boundary = format!("torsion-{size:x}-{mtime:x}");
            request.set_response_code(StatusCode::PARTIAL_CONTENT);
            request.set_header(
                "content-type",
                &format!("multipart/byteranges; boundary={boundary}"),
            );
            let mut segments = Vec::new();
            for (start, end) in ranges {
                segments.push(Segment::Text(format!(
                    "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n"
                ).into_bytes()));
                segments.push(Segment::File(start, end - start + 1));
            }
            segments.push(Segment::Text(
                format!("\r\n--{boundary}--\r\n").into_bytes(),
            ));
            segments
        }
    };
    let length: u64 = segments.iter().map(Segment::len).sum();
    request.set_header("content-length", &length.to_string());
    if request.method() == http::Method::HEAD {
        let _ = request.finish();
        return Render::Later;
    }
    if let Some(Segment::File(start, _)) = segments.first()
        && file.seek(SeekFrom::Start(*start)).is_err()
    {
        request.fail(&torsion::Failure::msg(format!(
            "cannot seek in {}",
            path.display()
        )));
        return Render::Later;
    }
    let producer = Rc::new(FileProducer {
        request: request.clone(),
        file: RefCell::new(Some(file)),
        segments: RefCell::new(segments.into()),
        position: Cell::new(None),
        buffer: RefCell::new(ReadBuffer::default()),
    });
    if request.register_producer(producer, false).is_err() {
        return Render::Later;
    }
    Render::Later
}

/// Whether `If-None-Match` or, without it, `If-Modified-Since` says the client's copy is
/// current (RFC 9110 13.2.2: `If-None-Match` takes precedence).
fn not_modified(request: &Request, etag: &str, mtime: u64) -> bool {
    if let Some(tags) = request.header("if-none-match") {
        return tags
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag));
    }
    if let Some(since) = request.header("if-modified-since")
        && let Ok(since) = httpdate::parse_http_date(since)
        && let Ok(since) = since.duration_since(UNIX_EPOCH)
    {
        return mtime <= since.as_secs();
    }
    false
}

/// What a `Range` header asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ranges {
    /// Not a byte range we understand: serve the whole file (RFC 9110 14.2).
    Ignore,
    /// No range overlaps the file: 416.
    Unsatisfiable,
    /// The satisfiable ranges, inclusive, in the order asked.
    Some(Vec<(u64, u64)>),
}

/// Parses `bytes=a-b, c-, -n` against a file of `size` bytes.
fn parse_ranges(header: &str, size: u64) -> Ranges {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ranges::Ignore;
    };
    let mut ranges = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let Some((first, last)) = part.split_once('-') else {
            return Ranges::Ignore;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let range = match (first.trim(), last.trim()) {
            (f, l) if digits(f) && (l.is_empty() || digits(l)) => {
                let (Ok(start), end) = (
                    f.parse::<u64>(),
                    if l.is_empty() {
                        Ok(u64::MAX)
                    } else {
                        l.parse::<u64>()
                    },
                ) else {
                    return Ranges::Ignore;
                };
                let Ok(end) = end else { return Ranges::Ignore };
                if end < start {
                    return Ranges::Ignore;
                }
                (start < size).then(|| (start, end.min(size.saturating_sub(1))))
            }
            ("", l) if digits(l) => {
                let Ok(n) = l.parse::<u64>() else {
                    return Ranges::Ignore;
                };
                (n > 0 && size > 0).then(|| (size.saturating_sub(n), size - 1))
            }
            _ => return Ranges::Ignore,
        };
        if let Some(range) = range {
            ranges.push(range);
        }
    }
    if ranges.is_empty() {
        Ranges::Unsatisfiable
    } else {
        Ranges::Some(ranges)
    }
}

/// A piece of a response body: bytes of the file, or text between them (multipart).
enum Segment {
    /// `len` bytes from `start`.
    File(u64, u64),
    Text(Vec<u8>),
}

impl Segment {
    fn len(&self) -> u64 {
        match self {
            Segment::File(_, len) => *len,
            Segment::Text(text) => text.len() as u64,
        }
    }
}

/// Writes the segments a chunk at a time, each time the connection asks for more (a pull
/// producer: Twisted's `static.NoRangeStaticProducer` and its siblings).
struct FileProducer {
    request: Rc<Request>,
    file: RefCell<Option<fs::File>>,
    segments: RefCell<std::collections::VecDeque<Segment>>,
    /// Where the file is positioned, once moved by a read.
    position: Cell<Option<u64>>,
    /// Where file bytes are read, one buffer for the whole body.
    buffer: RefCell<ReadBuffer>,
}

/// A page, for aligning [`ReadBuffer`].
const PAGE: usize = 4096;

/// The producer's read buffer: allocated once (for the largest chunk asked of it, at most
/// [`CHUNK`]) and used from a page boundary, so the kernel copies whole pages out of the
/// page cache to an equally aligned address (a copy between differently aligned addresses
/// is several times slower on some x86 cores, whose `rep movsb` both the kernel and libc
/// use).
#[derive(Default)]
struct ReadBuffer {
    bytes: Vec<u8>,
    start: usize,
}

impl ReadBuffer {
    /// `len` bytes to read into.
    fn space(&mut self, len: usize) -> &mut [u8] {
        if self.bytes.len() < self.start + len {
            self.bytes = vec![0; len + PAGE];
            let start = self.bytes.as_ptr().align_offset(PAGE);
            self.start = if start < PAGE { start } else { 0 };
        }
        &mut self.bytes[self.start..self.start + len]
    }

    /// The first `len` bytes read.
    fn filled(&self, len: usize) -> &[u8] {
        &self.bytes[self.start..self.start + len]
    }
}

/// What [`FileProducer::next_chunk`] found to write next.
enum Chunk {
    /// Text between parts (multipart), taken from its segment.
    Text(Vec<u8>),
    /// This many bytes of the file, at the start of the buffer.
    File(usize),
}

impl FileProducer {
    /// The next chunk to write, or `None` at the end. File bytes are read into `buffer`,
    /// which is given back to the producer afterwards.
    fn next_chunk(&self, buffer: &mut ReadBuffer) -> Result<Option<Chunk>, std::io::Error> {
        let mut segments = self.segments.borrow_mut();
        let Some(segment) = segments.front_mut() else {
            return Ok(None);
        };
        match segment {
            Segment::Text(text) => {
                let text = std::mem::take(text);
                segments.pop_front();
                Ok(Some(Chunk::Text(text)))
            }
            Segment::File(start, len) => {
                let mut file = self.file.borrow_mut();
                let Some(file) = file.as_mut() else {
                    return Ok(None);
                };
                if self.position.get() != Some(*start) {
                    file.seek(SeekFrom::Start(*start))?;
                }
                let want = (*len).min(CHUNK as u64) as usize;
                let got = file.read(buffer.space(want))?;
                if got == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file is shorter than when the response started",
                    ));
                }
                *start += got as u64;
                *len -= got as u64;
                self.position.set(Some(*start));
                if *len == 0 {
                    segments.pop_front();
                }
                Ok(Some(Chunk::File(got)))
            }
        }
    }
}

impl Producer for FileProducer {
    fn resume_producing(&self) {
        // Out of its cell while the request writes, so nothing called from there can find
        // it borrowed.
        let mut buffer = std::mem::take(&mut *self.buffer.borrow_mut());
        let written = match self.next_chunk(&mut buffer) {
            Ok(Some(Chunk::Text(text))) => self.request.write(&text),
            Ok(Some(Chunk::File(n))) => self.request.write(buffer.filled(n)),
            Ok(None) => {
                self.file.borrow_mut().take();
                self.request.unregister_producer();
                let _ = self.request.finish();
                return;
            }
            Err(error) => {
                self.file.borrow_mut().take();
                self.request.unregister_producer();
                self.request.fail(&torsion::Failure::new(error));
                return;
            }
        };
        if written.is_err() {
            self.stop_producing();
            return;
        }
        *self.buffer.borrow_mut() = buffer;
    }

    fn stop_producing(&self) {
        self.file.borrow_mut().take();
        self.segments.borrow_mut().clear();
        *self.buffer.borrow_mut() = ReadBuffer::default();
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Percent-encodes a file name for a link (everything but unreserved characters).
fn percent_encode(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_clamped_and_judged() {
        assert_eq!(parse_ranges("bytes=0-4", 10), Ranges::Some(vec![(0, 4)]));
        assert_eq!(parse_ranges("bytes=5-", 10), Ranges::Some(vec![(5, 9)]));
        assert_eq!(parse_ranges("bytes=-3", 10), Ranges::Some(vec![(7, 9)]));
        assert_eq!(parse_ranges("bytes=8-100", 10), Ranges::Some(vec![(8, 9)]));
        assert_eq!(
            parse_ranges("bytes=0-0, 2-3", 10),
            Ranges::Some(vec![(0, 0), (2, 3)])
        );
        assert_eq!(parse_ranges("bytes=10-20", 10), Ranges::Unsatisfiable);
        assert_eq!(parse_ranges("bytes=-0", 10), Ranges::Unsatisfiable);
        assert_eq!(parse_ranges("bytes=5-2", 10), Ranges::Ignore);
        assert_eq!(parse_ranges("lines=1-2", 10), Ranges::Ignore);
        assert_eq!(parse_ranges("bytes=a-b", 10), Ranges::Ignore);
    }

    #[test]
    fn names_in_listings_are_escaped_and_links_encoded() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(percent_encode("a b/<c>"), "a%20b%2F%3Cc%3E");
    }
}
