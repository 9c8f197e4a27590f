//! Responses the gateway writes itself: small JSON bodies with a reason code and a request
//! id, never policy internals.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora_http::ResponseHeader;

use crate::policy::Reason;

/// Why the gateway answers instead of the backend.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    Forbidden(Reason),
    NoRoute,
    Misdirected,
    BadPath,
    BadRequest(&'static str),
    HeadersTooLarge,
    ClientError(u16),
    UpstreamFailed,
    UpstreamTimeout,
    NoHealthyUpstream,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::Forbidden(_) => 403,
            Refusal::NoRoute => 404,
            Refusal::Misdirected => 421,
            Refusal::BadPath | Refusal::BadRequest(_) => 400,
            Refusal::HeadersTooLarge => 431,
            Refusal::ClientError(code) => code,
            Refusal::UpstreamFailed => 502,
            Refusal::UpstreamTimeout => 504,
            Refusal::NoHealthyUpstream => 503,
        }
    }

    fn error(self) -> &'static str {
        match self {
            Refusal::Forbidden(Reason::NoCert) => "client certificate required",
            Refusal::Forbidden(_) => "client certificate rejected",
            Refusal::NoRoute => "no route for this host and path",
            Refusal::Misdirected => "this connection was made for another host",
            Refusal::BadPath => "ambiguous request path",
            Refusal::BadRequest(what) => what,
            Refusal::HeadersTooLarge => "request headers too large",
            Refusal::ClientError(_) => "bad request",
            Refusal::UpstreamFailed => "upstream unavailable",
            Refusal::UpstreamTimeout => "upstream timed out",
            Refusal::NoHealthyUpstream => "no healthy upstream",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::Forbidden(r) => r.as_str(),
            Refusal::NoRoute => "no_route",
            Refusal::Misdirected => "misdirected_request",
            Refusal::BadPath => "bad_path",
            Refusal::BadRequest(_) | Refusal::ClientError(_) => "bad_request",
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::UpstreamFailed => "upstream_unavailable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::NoHealthyUpstream => "no_healthy_upstream",
        }
    }
}

pub async fn respond(session: &mut Session, refusal: Refusal, route: Option<&str>, request_id: &str) -> Result<()> {
    let body = serde_json::json!({
        "error": refusal.error(),
        "reason": refusal.reason(),
        "route": route,
        "request_id": request_id,
    })
    .to_string();
    if matches!(
        refusal,
        Refusal::BadRequest(_) | Refusal::BadPath | Refusal::ClientError(_) | Refusal::HeadersTooLarge
    ) {
        // whatever follows a malformed request cannot be trusted to be a request
        session.set_keepalive(None);
    }
    let mut resp = ResponseHeader::build(refusal.status(), Some(3))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(Bytes::from(body)), true).await?;
    Ok(())
}
