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
