//! Bearer-token check for admin mutations: constant-time, and never logged.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use openssl::sha::sha256;
use subtle::ConstantTimeEq;

use super::SharedAdmin;

/// The admin token, kept only as its hash so comparison time does not depend on where the
/// first differing byte is, or on the token's length.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> Option<AdminToken> {
        let token = token.trim();
        (!token.is_empty()).then(|| AdminToken(sha256(token.as_bytes())))
    }

    fn matches(&self, presented: &str) -> bool {
        self.0.ct_eq(&sha256(presented.as_bytes())).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Middleware for every mutating route.
pub async fn require_token(State(state): State<SharedAdmin>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let refusal = match (&state.token, presented) {
        (None, _) => "admin changes are disabled: start phasegate with --admin-token-file or PHASEGATE_ADMIN_TOKEN",
        (Some(_), None) => "missing bearer token (expected Authorization: Bearer <admin token>)",
        (Some(token), Some(p)) if token.matches(p) => return next.run(request).await,
        (Some(_), Some(_)) => "wrong admin token",
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({"error": refusal, "reason": "unauthorized"})),
    )
        .into_response()
}

/// The names the admin listener answers to. A page on another origin that rebinds its own
/// DNS name to 127.0.0.1 still sends its own name in `Host`, so it is refused. An IP
/// literal is always answered: no rebinding can produce one (a page served from that
/// address is the admin listener itself), and probes and scrapers address pods by IP.
#[derive(Clone, Debug)]
pub struct AdminHosts(std::sync::Arc<[String]>);

impl AdminHosts {
    /// `localhost`, any IP literal, and `extra` (`--admin-host`).
    pub fn new(extra: &[String]) -> Self {
        let mut names: Vec<String> = vec!["localhost".to_string()];
        names.extend(
            extra
                .iter()
                .map(|h| crate::policy::normalize_host(h.trim()).into_owned()),
        );
        names.sort();
        names.dedup();
        AdminHosts(names.into())
    }

    /// Whether a `Host` value names this listener (port and case ignored).
    pub fn allows(&self, host: &str) -> bool {
        let host = crate::policy::normalize_host(host);
        host.parse::<std::net::IpAddr>().is_ok() || self.0.iter().any(|n| *n == host)
    }
}

/// Middleware for every admin route: only requests for a configured name (DNS rebinding).
/// A request without `Host` (HTTP/1.0 tools) cannot come from a browser and is answered.
pub async fn require_known_host(State(state): State<SharedAdmin>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_string())
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if !state.hosts.allows(&h) => (
            StatusCode::MISDIRECTED_REQUEST,
            axum::Json(serde_json::json!({
                "error": format!("the admin listener does not answer for host {h:?} (start phasegate with --admin-host {} to allow it)", crate::policy::normalize_host(&h)),
                "reason": "unknown_admin_host",
            })),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_hosts_are_loopback_the_bound_address_and_what_the_operator_adds() {
        let hosts = AdminHosts::new(&["Admin.Internal".into()]);
        for ok in [
            "localhost:9901",
            "127.0.0.1",
            "[::1]:9901",
            "10.0.0.7:9901",
            "admin.internal",
            "10.1.2.3:9901",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "attacker.test:9901",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
    }
}
