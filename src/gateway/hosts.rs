//! The `Host` names the MCP endpoint answers to.
//!
//! A page on `evil.example` can rebind that name to 127.0.0.1 and make the browser talk
//! to the gateway; the browser still sends `Host: evil.example`. So, as the MCP spec's
//! DNS-rebinding guidance asks, a request is served only when its `Host` names the
//! gateway: its listen address, `localhost`, `127.0.0.1` or `[::1]` with the listen
//! port, or an entry of `[gateway] allowed_hosts`.

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::http::uri::Authority;

pub struct ServedHosts {
    /// `host:port` (and a bare `host` where the port is 80, which clients may omit).
    exact: HashSet<String>,
    /// Configured host names without a port: served on any port.
    any_port: HashSet<String>,
}

impl ServedHosts {
    /// `listen` is the address actually bound (port 0 already replaced by the system's).
    pub fn new(listen: SocketAddr, allowed_hosts: &[String]) -> Self {
        let port = listen.port();
        let own = match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let mut exact = HashSet::new();
        for host in [own.as_str(), "localhost", "127.0.0.1", "[::1]"] {
            exact.insert(format!("{host}:{port}"));
            if port == 80 {
                exact.insert(host.to_owned());
            }
        }
        let mut any_port = HashSet::new();
        for entry in allowed_hosts {
            let entry = entry.to_ascii_lowercase();
            if entry.contains(':') && !entry.ends_with(']') {
                exact.insert(entry);
            } else {
                any_port.insert(entry);
            }
        }
        Self { exact, any_port }
    }

    /// Whether a request's `Host` value names this gateway.
    pub fn admits(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let Some((name, _)) = split_host(&host) else {
            return false;
        };
        self.exact.contains(&host) || self.any_port.contains(name)
    }
}

/// Splits `host[:port]` (IPv6 in brackets), or `None` when it is not a valid authority
/// without user info.
pub fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    if host.is_empty() || host.contains('@') {
        return None;
    }
    let authority: Authority = host.parse().ok()?;
    let name = &host[..authority.host().len()];
    Some((name, authority.port_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_are_served_on_the_listen_port_only() {
        let hosts = ServedHosts::new("127.0.0.1:7800".parse().unwrap(), &[]);
        for ok in [
            "127.0.0.1:7800",
            "localhost:7800",
            "LocalHost:7800",
            "[::1]:7800",
        ] {
            assert!(hosts.admits(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:7800",
            "localhost",
            "localhost:7801",
            "localhost.evil.example:7800",
            "user@localhost:7800",
            "",
            "127.0.0.1:7800/x",
        ] {
            assert!(!hosts.admits(refused), "{refused}");
        }
    }

    #[test]
    fn configured_hosts_with_a_port_match_exactly_and_without_one_on_any_port() {
        let hosts = ServedHosts::new(
            "0.0.0.0:80".parse().unwrap(),
            &["Toolgate.Internal".into(), "gw.corp.example:8443".into()],
        );
        assert!(hosts.admits("localhost"), "port 80 may be left out");
        assert!(hosts.admits("0.0.0.0:80"));
        assert!(hosts.admits("toolgate.internal"));
        assert!(hosts.admits("toolgate.internal:9000"));
        assert!(hosts.admits("gw.corp.example:8443"));
        assert!(!hosts.admits("gw.corp.example"));
        assert!(!hosts.admits("gw.corp.example:80"));
    }
}
