//! Where a URL points (Twisted's `twisted.web.client.URI`): the scheme, host, port and
//! request target of an `http:` or `https:` URL, and the resolution of a redirect's
//! `Location` against the URL that answered it (RFC 3986 §5.2, which Twisted's
//! `_urljoin` follows).
//!
//! Invariant: a `Target` always has a host, a port and a path starting with `/`, neither
//! its authority nor its path holds a space or a control character (both are written into
//! the request head as they are), and the fragment never reaches it (it is not sent).

use super::error::AgentError;

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, `/` if empty.
    pub(crate) path: String,
    /// The `Host` header.
    pub(crate) authority: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, AgentError> {
        let url = url.split_once('#').map_or(url, |(before, _)| before);
        let (https, rest) = match split_scheme(url) {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => {
                return Err(AgentError::InvalidUrl(format!(
                    "{url:?} is not an http: or https: URL"
                )));
            }
        };
        let Some(rest) = rest.strip_prefix("//") else {
            return Err(AgentError::InvalidUrl(format!("no host in {url:?}")));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        // The authority is the Host header as written: a line break in it would add
        // headers of the URL's choosing (Twisted's CVE-2019-12387 checks the whole URI).
        if authority.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(AgentError::InvalidUrl(format!(
                "spaces or control characters in the host of {url:?}"
            )));
        }
        if authority.contains('@') {
            return Err(AgentError::InvalidUrl(
                "credentials in URLs are not supported".into(),
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| AgentError::InvalidUrl(format!("bad IPv6 host in {url:?}")))?;
            let port =
                match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or_else(|| {
                        AgentError::InvalidUrl(format!("bad IPv6 host in {url:?}"))
                    })?),
                };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(AgentError::InvalidUrl(format!("no host in {url:?}")));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(AgentError::InvalidUrl(format!(
                "spaces or control characters in the path of {url:?}"
            )));
        }
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| AgentError::InvalidUrl(format!("bad port in {url:?}")))?,
            None if https => 443,
            None => 80,
        };
        Ok(Target {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path,
            authority: authority.to_string(),
        })
    }

    /// The scheme, host and port: what a redirect must keep for credentials to follow it.
    pub(crate) fn origin(&self) -> (bool, &str, u16) {
        (self.https, &self.host, self.port)
    }
}

/// `scheme:rest` if `url` starts with a scheme (RFC 3986 §3.1), the scheme lowercased.
fn split_scheme(url: &str) -> Option<(&'static str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    if scheme.eq_ignore_ascii_case("http") {
        Some(("http", rest))
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(("https", rest))
    } else if !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        Some(("other", rest))
    } else {
        None
    }
}

/// Resolves `reference` (a `Location`) against the absolute URL `base` (RFC 3986 §5.2.2,
/// fragments dropped).
pub(crate) fn resolve(base: &str, reference: &str) -> String {
    let reference = reference.trim();
    let reference = reference
        .split_once('#')
        .map_or(reference, |(before, _)| before);
    let base = base.split_once('#').map_or(base, |(before, _)| before);
    if split_scheme(reference).is_some() {
        // An absolute URL (of any scheme: a redirect to ftp: fails when requested).
        return reference.to_string();
    }
    let (scheme, after_scheme) = base.split_once(':').unwrap_or(("http", base));
    let after_scheme = after_scheme.strip_prefix("//").unwrap_or(after_scheme);
    let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let (authority, base_rest) = after_scheme.split_at(authority_end);
    if let Some(network) = reference.strip_prefix("//") {
        return format!("{scheme}://{network}");
    }
    let (base_path, base_query) = match base_rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (base_rest, None),
    };
    let (path, query) = if reference.is_empty() {
        (base_path.to_string(), base_query)
    } else if let Some(query) = reference.strip_prefix('?') {
        (base_path.to_string(), Some(query))
    } else {
        let (ref_path, ref_query) = match reference.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (reference, None),
        };
        let merged = if ref_path.starts_with('/') {
            ref_path.to_string()
        } else {
            // Merge (§5.2.3): the base path up to its last `/`, then the reference.
            let dir = match base_path.rfind('/') {
                Some(i) => &base_path[..=i],
                None => "/",
            };
            format!("{dir}{ref_path}")
        };
        (remove_dot_segments(&merged), ref_query)
    };
    let path = if path.is_empty() { "/" } else { &path };
    match query {
        Some(query) => format!("{scheme}://{authority}{path}?{query}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// RFC 3986 §5.2.4: `.` and `..` segments taken out of an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_host_port_and_path() {
        let t = Target::parse("http://example.com/a?b=1#frag").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (false, "example.com", 80, "/a?b=1")
        );
        let t = Target::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (
                t.https,
                t.host.as_str(),
                t.port,
                t.path.as_str(),
                t.authority.as_str()
            ),
            (true, "::1", 8443, "/", "[::1]:8443")
        );
        let t = Target::parse("HTTP://H:81?q").unwrap();
        assert_eq!((t.path.as_str(), t.host.as_str()), ("/?q", "h"));
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("http:///x").is_err());
        assert!(Target::parse("http:x").is_err());
        assert!(Target::parse("http://h:99999/").is_err());
        assert!(Target::parse("http://u:p@h/").is_err());
        assert!(Target::parse("http://h/a b").is_err());
        assert!(Target::parse("http://[::1]\r\nX: y/").is_err());
        assert!(Target::parse("http://[::1]x/").is_err());
        assert!(Target::parse("http://h\t/").is_err());
    }

    #[test]
    fn references_resolve_as_rfc_3986_says() {
        // RFC 3986 §5.4.1's normal examples, and a few of §5.4.2's.
        let base = "http://a/b/c/d;p?q";
        for (reference, want) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q"),
            ("g#s", "http://a/b/c/g"),
            (";x", "http://a/b/c/;x"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("./", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../g", "http://a/g"),
            ("../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("g.", "http://a/b/c/g."),
            ("g/../h", "http://a/b/c/h"),
            ("https://other:8443/x", "https://other:8443/x"),
            ("HTTP://Up/x", "HTTP://Up/x"),
        ] {
            assert_eq!(resolve(base, reference), want, "{reference:?}");
        }
        assert_eq!(
            resolve("https://h:1/x", "//o/p"),
            "https://o/p",
            "the scheme is kept"
        );
        assert_eq!(resolve("http://h", "a"), "http://h/a");
        assert_eq!(resolve("http://h/a/b", "ftp://x/"), "ftp://x/");
    }
}
