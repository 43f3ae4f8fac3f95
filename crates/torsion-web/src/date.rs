//! The `Date` header (Twisted's `http.datetimeToString` with `HTTPFactory._updateLogDateTime`
//! caching it): formatted once per second per thread, not once per response.
//!
//! Invariant: the cached text is for the second it was made in; a response never carries
//! a date more than a second old.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

thread_local! {
    static CACHE: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// The current time as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`), from a cache
/// refreshed once a second.
pub(crate) fn now() -> HeaderValue {
    with_now(HeaderValue::clone)
}

/// Appends [`now`] to `out`.
pub(crate) fn write_now(out: &mut Vec<u8>) {
    with_now(|date| out.extend_from_slice(date.as_bytes()));
}

/// Runs `f` on the cached date, made anew if the second changed.
fn with_now<T>(f: impl FnOnce(&HeaderValue) -> T) -> T {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.as_ref().is_none_or(|(at, _)| *at != second) {
            let value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
            *cache = Some((second, value));
        }
        match cache.as_ref() {
            Some((_, value)) => f(value),
            None => f(&HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_imf_fixdate_and_is_cached_within_the_second() {
        let first = now();
        let text = first.to_str().unwrap();
        assert!(text.ends_with(" GMT"), "{text}");
        assert_eq!(text.len(), 29, "{text}");
        assert!(httpdate::parse_http_date(text).is_ok());
        let second = now();
        // Equal unless the second turned between the two calls.
        let a = httpdate::parse_http_date(first.to_str().unwrap()).unwrap();
        let b = httpdate::parse_http_date(second.to_str().unwrap()).unwrap();
        assert!(
            b.duration_since(a)
                .map(|d| d.as_secs() <= 1)
                .unwrap_or(false)
        );
    }
}
