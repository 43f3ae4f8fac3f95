//! A poetry server's address as the tutorials' clients take it on their command line:
//! `PORT` or `HOST:PORT`, the host 127.0.0.1 when left out (the `parse_address` and
//! `format_address` of every `get-poetry.py` in Dave Peticolas' series).
//!
//! Invariant: a [`ServerAddress`] always has a port that parsed as a number from 0 to
//! 65535; a bad argument is refused with a message saying what is wrong, never a panic.

use std::fmt;
use std::str::FromStr;

/// Where a poetry (or transform) server listens: the tutorials' `(host, port)` pair.
///
/// # Examples
///
/// ```
/// use torsion_examples::address::ServerAddress;
///
/// let address: ServerAddress = "10001".parse().unwrap();
/// assert_eq!(address.to_string(), "127.0.0.1:10001");
/// let address: ServerAddress = "localhost:10002".parse().unwrap();
/// assert_eq!((address.host.as_str(), address.port), ("localhost", 10002));
/// assert!("localhost:poetry".parse::<ServerAddress>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    /// The host name or IP address (`127.0.0.1` when the argument was a bare port).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl ServerAddress {
    /// The host given for a bare port, as in the tutorials.
    pub const DEFAULT_HOST: &'static str = "127.0.0.1";
}

/// Why a `[HOST:]PORT` argument was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAddress(String);

impl fmt::Display for BadAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadAddress {}

impl FromStr for ServerAddress {
    type Err = BadAddress;

    /// Parses `PORT` or `HOST:PORT` (the tutorials' `parse_address`: the host is
    /// everything before the first `:`; ports must be integers).
    fn from_str(arg: &str) -> Result<ServerAddress, BadAddress> {
        let (host, port) = match arg.split_once(':') {
            Some((host, port)) => (host, port),
            None => (ServerAddress::DEFAULT_HOST, arg),
        };
        if host.is_empty() {
            return Err(BadAddress(format!("no host before the ':' in {arg:?}")));
        }
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadAddress(format!(
                "ports must be integers, not {port:?} (give PORT or HOST:PORT)"
            )));
        }
        let port = port
            .parse()
            .map_err(|_| BadAddress(format!("port {port} is out of range (0 to 65535)")))?;
        Ok(ServerAddress {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ServerAddress {
    /// `HOST:PORT` (the tutorials' `format_address`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_is_on_the_loopback_host() {
        let address: ServerAddress = "10001".parse().unwrap();
        assert_eq!(address.host, "127.0.0.1");
        assert_eq!(address.port, 10001);
    }

    #[test]
    fn bad_ports_and_empty_hosts_are_refused_with_a_reason() {
        for (arg, says) in [
            ("poetry", "ports must be integers"),
            ("host:", "ports must be integers"),
            ("host:-1", "ports must be integers"),
            ("70000", "out of range"),
            (":10001", "no host"),
        ] {
            let error = arg.parse::<ServerAddress>().unwrap_err();
            assert!(error.to_string().contains(says), "{arg}: {error}");
        }
    }
}
