//! What a web page in an engineer's browser cannot make the daemon do.
//!
//! Two checks run before any route, so a refused request reaches no
//! handler and writes nothing:
//!
//! - **Cross-origin protection**, modelled on Go 1.25's
//!   `net/http.CrossOriginProtection`: a request with a non-safe method
//!   (anything but GET, HEAD, OPTIONS) is refused with 403 when the browser
//!   says it comes from another site (`Sec-Fetch-Site` other than
//!   `same-origin` or `none`) or, from a browser too old to send that
//!   header, when its `Origin` names another host than its `Host`. Requests
//!   with neither header — curl, the admin CLI, `runslave`, scripts — are
//!   not from a browser page and pass. Origins listed as trusted pass.
//! - **Host check against DNS rebinding**: a page whose DNS name was
//!   rebound to the daemon's address is same-origin to the browser, so only
//!   the `Host` it sends gives it away. Under `/api` and `/ui` a `Host` that
//!   is not an allowed name is refused with 421. A `Host` that is an IP
//!   address is always allowed: a rebinding page's `Host` is its own DNS
//!   name. `/gettac`, `/healthz` and `/metrics` answer whatever the `Host`,
//!   so machines and monitors that use an alias keep working.

use std::net::IpAddr;

use warp::http::{HeaderMap, Method, StatusCode};

use crate::models::ApiError;

/// The `Host` names the web UI and the API answer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Every `Host` (`allowed_hosts = ["*"]`): the check is off.
    Any,
    /// These names (lower case, no port, no trailing dot), plus
    /// `localhost` and every IP address.
    Names(Vec<String>),
}

impl Default for AllowedHosts {
    /// `localhost` and IP addresses only.
    fn default() -> Self {
        AllowedHosts::Names(Vec::new())
    }
}

impl AllowedHosts {
    /// From configured names: `"*"` anywhere turns the check off; a port or
    /// a trailing dot is ignored.
    pub fn from_names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut kept = Vec::new();
        for name in names {
            let name = name.as_ref().trim();
            if name == "*" {
                return AllowedHosts::Any;
            }
            let host = host_of(name);
            if !host.is_empty() && !kept.contains(&host) {
                kept.push(host);
            }
        }
        AllowedHosts::Names(kept)
    }

    /// Whether a request with this `Host` header (absent: HTTP/1.0, never a
    /// browser) may use the API and the UI.
    pub fn allows(&self, host_header: Option<&str>) -> bool {
        let names = match self {
            AllowedHosts::Any => return true,
            AllowedHosts::Names(names) => names,
        };
        let Some(header) = host_header else {
            return true;
        };
        let host = host_of(header);
        host == "localhost" || host.parse::<IpAddr>().is_ok() || names.contains(&host)
    }
}

/// The host of a `Host` header or of a configured name: without the port,
/// the brackets of an IPv6 literal and a trailing dot, in lower case.
fn host_of(authority: &str) -> String {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The cross-origin rule and the host rule, with their configuration.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Origins (`https://name[:port]`) whose pages may write.
    pub trusted_origins: Vec<String>,
    /// Who may use `/api` and `/ui`.
    pub allowed_hosts: AllowedHosts,
}

impl Guard {
    /// `Err` with the answer to give when the request must not reach a
    /// route. `path` is the path after the base path.
    ///
    /// # Errors
    /// 421 for a `Host` that is not allowed on `/api` or `/ui`; 403 for a
    /// cross-origin write.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        if matches!(first, "api" | "ui") && !self.allowed_hosts.allows(header("host")) {
            return Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this daemon does not serve the host {:?}; add it to allowed_hosts if it is one of its names",
                    header("host").unwrap_or_default()
                ),
            ));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let origin = header("origin");
        let trusted = || origin.is_some_and(|o| self.is_trusted(o));
        match header("sec-fetch-site") {
            Some("same-origin" | "none") => Ok(()),
            Some(site) if !trusted() => Err(forbidden(format!(
                "cross-origin request refused: the browser says it comes from a {site} page"
            ))),
            Some(_) => Ok(()),
            None => match origin {
                Some(o) if !same_host(o, header("host")) && !trusted() => Err(forbidden(format!(
                    "cross-origin request refused: Origin {o:?} is not this host"
                ))),
                _ => Ok(()),
            },
        }
    }

    fn is_trusted(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.trusted_origins
            .iter()
            .any(|t| t.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// Whether `Origin: scheme://host[:port]` names the request's `Host`
/// exactly (port included), as Go's check compares them.
fn same_host(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| !authority.contains('/') && authority.eq_ignore_ascii_case(host.trim()))
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

#[cfg(test)]
mod tests {
    use warp::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    type Pairs<'a> = &'a [(&'static str, &'static str)];

    fn check(guard: &Guard, method: Method, path: &str, pairs: &[(&'static str, &'static str)]) -> Option<u16> {
        guard
            .check(&method, path, &headers(pairs))
            .err()
            .map(|e| e.status.as_u16())
    }

    #[test]
    fn cross_origin_writes_are_refused_and_everything_else_passes() {
        let g = Guard {
            allowed_hosts: AllowedHosts::Any,
            ..Guard::default()
        };
        let host = ("host", "alloc.example:8010");
        let cases: &[(Method, Pairs<'_>, Option<u16>)] = &[
            // No browser headers: curl, the CLI, runslave.
            (Method::PUT, &[host], None),
            (Method::POST, &[], None),
            (Method::PUT, &[host, ("sec-fetch-site", "same-origin")], None),
            (Method::PUT, &[host, ("sec-fetch-site", "none")], None),
            (Method::PUT, &[host, ("sec-fetch-site", "cross-site")], Some(403)),
            (Method::DELETE, &[host, ("sec-fetch-site", "same-site")], Some(403)),
            (
                Method::POST,
                &[
                    host,
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "http://alloc.example:8010"),
                ],
                Some(403),
            ),
            // Old browsers: Origin alone.
            (Method::POST, &[host, ("origin", "http://alloc.example:8010")], None),
            (Method::POST, &[host, ("origin", "http://evil.example")], Some(403)),
            (
                Method::POST,
                &[host, ("origin", "http://alloc.example:8011")],
                Some(403),
            ),
            (Method::POST, &[host, ("origin", "null")], Some(403)),
            (Method::PATCH, &[host, ("origin", "http://evil.example")], Some(403)),
            // Safe methods are never refused for their origin.
            (Method::GET, &[host, ("sec-fetch-site", "cross-site")], None),
            (Method::OPTIONS, &[host, ("origin", "http://evil.example")], None),
        ];
        for (method, pairs, want) in cases {
            assert_eq!(
                check(&g, method.clone(), "/api/slaves/1", pairs),
                *want,
                "{method} {pairs:?}"
            );
        }
    }

    #[test]
    fn trusted_origins_may_write() {
        let g = Guard {
            trusted_origins: vec!["https://tools.example/".into()],
            allowed_hosts: AllowedHosts::Any,
        };
        let from = |origin: &'static str, site: &'static str| {
            check(
                &g,
                Method::PUT,
                "/api/slaves/1",
                &[("host", "alloc.example"), ("origin", origin), ("sec-fetch-site", site)],
            )
        };
        assert_eq!(from("https://tools.example", "cross-site"), None);
        assert_eq!(from("https://TOOLS.example", "same-site"), None);
        assert_eq!(from("http://tools.example", "cross-site"), Some(403));
    }

    #[test]
    fn rebound_hosts_are_refused_on_the_api_and_ui_only() {
        let g = Guard {
            allowed_hosts: AllowedHosts::from_names(["Slavealloc.Example.com.", "alias.example:1080"]),
            ..Guard::default()
        };
        let get = |path: &str, host: &'static str| check(&g, Method::GET, path, &[("host", host)]);
        for host in [
            "slavealloc.example.com",
            "SLAVEALLOC.example.com:443",
            "alias.example",
            "localhost:8010",
            "127.0.0.1:8010",
            "10.2.3.4",
            "[::1]:8010",
        ] {
            assert_eq!(get("/api/slaves", host), None, "{host}");
        }
        assert_eq!(get("/api/slaves", "rebind.attacker.example"), Some(421));
        assert_eq!(get("/ui/", "rebind.attacker.example:8010"), Some(421));
        for open in ["/gettac/x", "/healthz", "/metrics", "/"] {
            assert_eq!(get(open, "rebind.attacker.example"), None, "{open}");
        }
        let any = Guard {
            allowed_hosts: AllowedHosts::from_names(["x", "*"]),
            ..Guard::default()
        };
        assert_eq!(check(&any, Method::GET, "/api/", &[("host", "anything.example")]), None);
        assert!(g.allowed_hosts.allows(None), "HTTP/1.0 without Host is no browser");
    }
}
