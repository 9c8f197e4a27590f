//! Responses the gateway writes itself: a refusal is decided once and rendered per protocol
//! here — a small JSON body with a reason code and a request id for HTTP, `grpc-status` and
//! `grpc-message` for gRPC — never policy internals.

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

impl Refusal {
    /// The gRPC status a gRPC client gets (the HTTP status codes' gRPC counterparts).
    fn grpc_status(self) -> u8 {
        match self {
            Refusal::Forbidden(Reason::NoCert) => 16, // UNAUTHENTICATED
            Refusal::Forbidden(_) => 7,               // PERMISSION_DENIED
            Refusal::NoRoute => 12,                   // UNIMPLEMENTED
            Refusal::Misdirected | Refusal::UpstreamFailed | Refusal::NoHealthyUpstream => 14, // UNAVAILABLE
            Refusal::UpstreamTimeout => 4,            // DEADLINE_EXCEEDED
            Refusal::HeadersTooLarge => 8,            // RESOURCE_EXHAUSTED
            Refusal::BadPath | Refusal::BadRequest(_) | Refusal::ClientError(_) => 13, // INTERNAL
        }
    }
}

/// A gRPC request: its answers must be gRPC answers (HTTP 200 with a grpc-status).
pub fn is_grpc(req: &pingora_http::RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

pub async fn respond(session: &mut Session, refusal: Refusal, route: Option<&str>, request_id: &str) -> Result<()> {
    if is_grpc(session.req_header()) {
        return respond_grpc(session, refusal, route, request_id).await;
    }
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

/// A trailers-only gRPC answer: HTTP 200, the status and a message that says why, so a gRPC
/// client sees the reason code, the route and the request id.
async fn respond_grpc(session: &mut Session, refusal: Refusal, route: Option<&str>, request_id: &str) -> Result<()> {
    let message = format!(
        "{} (reason {}, route {}, request {request_id})",
        refusal.error(),
        refusal.reason(),
        route.unwrap_or("none")
    );
    if matches!(
        refusal,
        Refusal::BadRequest(_) | Refusal::BadPath | Refusal::ClientError(_)
    ) {
        session.set_keepalive(None);
    }
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header("content-type", "application/grpc")?;
    resp.insert_header("grpc-status", refusal.grpc_status().to_string())?;
    resp.insert_header("grpc-message", percent_encode(&message))?;
    resp.insert_header("cache-control", "no-store")?;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(())
}

/// grpc-message is percent-encoded: everything outside printable ASCII, and '%' itself.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    text.bytes().fold(String::with_capacity(text.len()), |mut out, b| {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_refusals_map_to_grpc_codes_with_an_encoded_message() {
        assert_eq!(Refusal::Forbidden(Reason::NoCert).grpc_status(), 16);
        assert_eq!(Refusal::Forbidden(Reason::Revoked).grpc_status(), 7);
        assert_eq!(Refusal::UpstreamTimeout.grpc_status(), 4);
        assert_eq!(Refusal::UpstreamFailed.grpc_status(), 14);
        assert_eq!(percent_encode("50% off: ü"), "50%25 off: %C3%BC");
        let mut req = pingora_http::RequestHeader::build("POST", b"/pkg.Svc/Call", None).unwrap();
        assert!(!is_grpc(&req));
        req.insert_header("content-type", "application/grpc+proto").unwrap();
        assert!(is_grpc(&req));
    }
}
