//! Responses the gateway writes itself: a refusal is decided once and rendered per protocol
//! here — a small JSON body with a reason code and a request id for HTTP, a page people can
//! read for browsers (requests that accept `text/html`), `grpc-status` and `grpc-message` for
//! gRPC — never policy internals.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora_http::{RequestHeader, ResponseHeader};

use super::refusal_page;
use crate::policy::{PageWords, Reason};

/// What a refusal names besides its reason.
pub struct Answer<'a> {
    pub route: Option<&'a str>,
    pub request_id: &'a str,
    /// The operator's words for the page (the route's, else the listener's).
    pub page: PageWords<'a>,
    /// Unix seconds.
    pub at: i64,
}

/// Why the gateway answers instead of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A browser: `text/html` is acceptable and preferred over JSON (`q` values; on a tie, or
/// for `*/*` alone as from fetch and curl, JSON stays the answer).
pub fn accepts_html(req: &RequestHeader) -> bool {
    let (mut html, mut json) = (0.0f32, 0.0f32);
    for value in req.headers.get_all(http::header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if media.eq_ignore_ascii_case("text/html") || media.eq_ignore_ascii_case("application/xhtml+xml") {
                html = html.max(q);
            } else if media.eq_ignore_ascii_case("application/json") {
                json = json.max(q);
            }
        }
    }
    html > 0.0 && html > json
}

pub async fn respond(session: &mut Session, refusal: Refusal, answer: &Answer<'_>) -> Result<()> {
    if is_grpc(session.req_header()) {
        return respond_grpc(session, refusal, answer.route, answer.request_id).await;
    }
    let html = accepts_html(session.req_header());
    let body = if html {
        refusal_page::render(refusal, refusal.reason(), answer)
    } else {
        serde_json::json!({
            "error": refusal.error(),
            "reason": refusal.reason(),
            "route": answer.route,
            "request_id": answer.request_id,
        })
        .to_string()
    };
    if matches!(
        refusal,
        Refusal::BadRequest(_) | Refusal::BadPath | Refusal::ClientError(_) | Refusal::HeadersTooLarge
    ) {
        // whatever follows a malformed request cannot be trusted to be a request
        session.set_keepalive(None);
    }
    let mut resp = ResponseHeader::build(refusal.status(), Some(7))?;
    if html {
        resp.insert_header("content-type", "text/html; charset=utf-8")?;
        resp.insert_header("content-security-policy", refusal_page::CONTENT_SECURITY_POLICY)?;
        resp.insert_header("x-content-type-options", "nosniff")?;
        resp.insert_header("referrer-policy", "no-referrer")?;
    } else {
        resp.insert_header("content-type", "application/json")?;
    }
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("vary", "accept")?;
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

    #[test]
    fn browsers_get_html_and_programs_keep_json() {
        let with_accept = |accept: Option<&str>| {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            if let Some(a) = accept {
                req.insert_header("accept", a).unwrap();
            }
            accepts_html(&req)
        };
        let chromium = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(with_accept(Some(chromium)));
        assert!(with_accept(Some("TEXT/HTML")));
        assert!(with_accept(Some("application/json;q=0.5, text/html")));
        assert!(!with_accept(None));
        assert!(!with_accept(Some("*/*")));
        assert!(!with_accept(Some("application/json")));
        assert!(!with_accept(Some("application/json, text/html")));
        assert!(!with_accept(Some("text/html;q=0")));
        assert!(!with_accept(Some("text/htmlx")));
    }
}
