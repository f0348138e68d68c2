//! Open mode's guard against web pages. With no API keys, anything that
//! can reach the port is a caller, and a browser on the same machine can
//! be made to reach it: a page's cross-site `fetch` carries an `Origin`,
//! and DNS rebinding makes the page's own name resolve to 127.0.0.1 (then
//! the `Host` is that name). So in open mode:
//! - a request with an `Origin` that is not loopback (or listed in
//!   `--allowed-origins`) gets 403;
//! - when the gateway listens on a loopback address, a `Host` that is not
//!   a loopback name gets 403. Listening on another address is the
//!   operator's choice to be reached by other names, so `Host` is not
//!   checked then.
//!
//! With keys configured the key is the guard (browsers cannot attach one
//! cross-site without the page knowing it), and none of this applies.

use axum::extract::Request;
use axum::http::header;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The listener is on a loopback address: `Host` must be loopback.
    pub loopback_listener: bool,
    /// Origins (`scheme://host[:port]`) a browser UI may call from.
    pub allowed_origins: Vec<String>,
}

/// `host[:port]` or `[v6][:port]` → the host part, lowercased.
fn host_part(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_owned();
    }
    a.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(a.clone(), |(h, _)| h.to_owned())
}

fn loopback_host(host: &str) -> bool {
    let h = host.trim_end_matches('.');
    h == "localhost"
        || h.ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn forbidden(message: String) -> ApiError {
    ApiError::Forbidden {
        message,
        code: "forbidden_origin",
    }
}

impl Policy {
    fn origin_ok(&self, origin: &str) -> bool {
        if self
            .allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        // "null" (sandboxed pages, file://) is not a loopback origin
        origin
            .split_once("://")
            .is_some_and(|(_, authority)| loopback_host(&host_part(authority)))
    }
}

/// The open-mode checks (see the module docs).
pub fn check(st: &AppState, req: &Request) -> Result<(), ApiError> {
    let p = &st.origins;
    let h = req.headers();
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !p.origin_ok(origin) {
            return Err(forbidden(format!(
                "requests from the web origin '{}' are refused in open mode (no API keys); \
                 configure keys or --allowed-origins",
                origin.chars().take(100).collect::<String>()
            )));
        }
    }
    if p.loopback_listener {
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Some(host) = host
            && !loopback_host(&host_part(&host))
        {
            return Err(forbidden(format!(
                "Host '{}' is not a loopback name; a gateway in open mode on a loopback address \
                 answers only loopback names",
                host.chars().take(100).collect::<String>()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        assert_eq!(host_part("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_part("[::1]:80"), "::1");
        assert_eq!(host_part("LocalHost"), "localhost");
        for ok in [
            "localhost",
            "127.0.0.1",
            "::1",
            "127.1.2.3",
            "app.localhost",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example", "10.0.0.1", "localhost.evil.example", ""] {
            assert!(!loopback_host(bad), "{bad}");
        }
        let p = Policy {
            loopback_listener: true,
            allowed_origins: vec!["https://ui.example".into()],
        };
        assert!(p.origin_ok("http://localhost:3000"));
        assert!(p.origin_ok("https://ui.example"));
        assert!(!p.origin_ok("https://evil.example"));
        assert!(!p.origin_ok("null"));
    }
}
