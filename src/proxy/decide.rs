//! Everything the gateway decides about one request, as one function of the snapshot, the
//! connection's evidence and the request line — no I/O. The proxy, the benches and the
//! allocation test all call this, so they measure the same code.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use pingora_http::RequestHeader;

use super::respond::Refusal;
use crate::audit::ShadowDiff;
use crate::policy::{
    decide, normalize_host, normalize_path, ClientEvidence, Decision, Reason, RouteId, ShadowPolicy, Snapshot, Verdict,
};
use crate::tls::ConnectionTls;

/// Request line and headers beyond this get 431 (Pingora itself stops at 1 MiB).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct RequestDecision {
    pub route: RouteId,
    pub decision: Decision,
    /// What exactly failed, for the audit record.
    pub detail: Option<Arc<str>>,
    /// The chain verified against the route's bundle: the identity may be forwarded.
    pub identity_verified: bool,
    /// The normalized path, when it differs from what the client sent.
    pub rewritten_path: Option<String>,
    /// Where the route's shadow policy disagrees with the live decision, and why.
    pub shadow: Option<ShadowOutcome>,
}

impl RequestDecision {
    /// The client certificate to forward to the backend: only a chain that verified against
    /// the route's bundle names the client, and only a request that goes through sends it.
    pub fn forwarded_certificate(&self, conn: Option<&ConnectionTls>) -> Option<http::HeaderValue> {
        if self.identity_verified && self.decision.verdict.lets_request_through() {
            conn?.peer.as_ref()?.xfcc.clone()
        } else {
            None
        }
    }
}

/// A disagreement between a route's shadow policy and its live decision.
#[derive(Debug)]
pub struct ShadowOutcome {
    pub diff: ShadowDiff,
    /// For `NewlyRejected` the candidate's reason, for `NewlyPassed` the live one.
    pub reason: Reason,
    pub detail: Option<Arc<str>>,
}

/// Matches the route, evaluates the client under the route's effective mode, and counts
/// the outcome. `Err` means the request is refused before any route applies.
pub fn decide_request(
    snapshot: &Snapshot,
    conn: Option<&ConnectionTls>,
    req: &RequestHeader,
    source: Option<IpAddr>,
    now: i64,
) -> Result<RequestDecision, Refusal> {
    let host_field = read_head(req)?;
    let host = request_host(req, host_field)?;
    // A connection's certificate request and server certificate were chosen for its SNI;
    // a request for another host must open its own connection.
    if let Some(sni) = conn.and_then(|c| c.sni.as_deref()) {
        if sni != host {
            return Err(Refusal::Misdirected);
        }
    }
    let path = normalize_path(req.uri.path()).map_err(|_| Refusal::BadPath)?;
    let route_id = snapshot
        .config
        .table
        .lookup(&host, &path.matching)
        .ok_or(Refusal::NoRoute)?;
    let route = &snapshot.config.routes[route_id];
    let mut detail = None;
    let mut identity_verified = false;
    let decision = decide(snapshot.effective_mode(route_id), &route.mtls, now, source, || {
        match (conn, route.trust) {
            (Some(conn), Some(bundle)) => {
                let e = conn.evidence(snapshot, bundle, now);
                detail = e.detail;
                identity_verified = matches!(e.evidence, ClientEvidence::ChainVerified(_));
                e.evidence
            }
            // A route that evaluates certificates always has a bundle (validated); fail closed.
            (Some(conn), None) if conn.peer.is_some() => ClientEvidence::failed(Reason::UntrustedIssuer),
            _ => ClientEvidence::NoCertificate,
        }
    });
    let counters = snapshot.counters(route_id);
    counters.count(decision);
    // The candidate costs only where there is one, and never changes the decision.
    let shadow = route.shadow.as_ref().and_then(|sh| {
        let outcome = shadow_outcome(snapshot, conn, sh, decision.verdict, now);
        counters.count_shadow(outcome.as_ref().map(|o| o.diff));
        outcome
    });
    Ok(RequestDecision {
        route: route_id,
        decision,
        detail,
        identity_verified,
        rewritten_path: match path.forward {
            Cow::Owned(p) => Some(p),
            Cow::Borrowed(_) => None,
        },
        shadow,
    })
}

/// The shadow policy's verdict, as enforce would give it, compared with the live one.
fn shadow_outcome(
    snapshot: &Snapshot,
    conn: Option<&ConnectionTls>,
    shadow: &ShadowPolicy,
    live: Verdict,
    now: i64,
) -> Option<ShadowOutcome> {
    let (evidence, detail) = match conn {
        Some(conn) => {
            let e = conn.evidence(snapshot, shadow.trust, now);
            (e.evidence, e.detail)
        }
        None => (ClientEvidence::NoCertificate, None),
    };
    let candidate = match evidence {
        ClientEvidence::NoCertificate => Err(Reason::NoCert),
        ClientEvidence::ChainFailed { reason, .. } => Err(reason),
        ClientEvidence::ChainVerified(identity) => shadow.allow.check(identity),
    };
    let live_reason = if live.would_be_rejected() { live.reason() } else { None };
    match (live_reason, candidate) {
        (None, Err(reason)) => Some(ShadowOutcome {
            diff: ShadowDiff::NewlyRejected,
            reason,
            detail,
        }),
        (Some(reason), Ok(())) => Some(ShadowOutcome {
            diff: ShadowDiff::NewlyPassed,
            reason,
            detail: None,
        }),
        _ => None,
    }
}

/// Reads what the decision needs of the request's fields in one pass (a lookup by name
/// would hash the names again for each field): refuses a head over `MAX_HEADER_BYTES`, and
/// bodies whose length two parties could read differently (request smuggling) —
/// Content-Length together with Transfer-Encoding, conflicting Content-Lengths, or a
/// transfer coding other than plain `chunked` — and two `Host` fields. Returns the `Host`
/// field.
fn read_head(req: &RequestHeader) -> Result<Option<&http::HeaderValue>, Refusal> {
    let mut header_bytes = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    let (mut host, mut hosts) = (None, 0);
    let (mut length, mut lengths_differ) = (None, false);
    let (mut codings, mut only_chunked) = (0, true);
    for (name, value) in &req.headers {
        header_bytes += name.as_str().len() + value.len() + 4;
        if name == http::header::HOST {
            hosts += 1;
            host.get_or_insert(value);
        } else if name == http::header::CONTENT_LENGTH {
            lengths_differ |= *length.get_or_insert(value) != value;
        } else if name == http::header::TRANSFER_ENCODING {
            codings += 1;
            only_chunked &= codings == 1 && value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked");
        }
    }
    if header_bytes > MAX_HEADER_BYTES {
        return Err(Refusal::HeadersTooLarge);
    }
    if codings > 0 {
        if length.is_some() {
            return Err(Refusal::BadRequest("both Content-Length and Transfer-Encoding"));
        }
        if !only_chunked {
            return Err(Refusal::BadRequest("unsupported Transfer-Encoding (expected chunked)"));
        }
    }
    if lengths_differ {
        return Err(Refusal::BadRequest("conflicting Content-Length headers"));
    }
    if hosts > 1 {
        return Err(Refusal::BadRequest("two Host headers"));
    }
    Ok(host)
}

/// The host the request names. HTTP/2 carries it in `:authority`, HTTP/1.1 in `Host`;
/// an absolute-form URI must agree with `Host` (at most one, see `read_head`).
fn request_host<'a>(req: &'a RequestHeader, header: Option<&'a http::HeaderValue>) -> Result<Cow<'a, str>, Refusal> {
    let header = match header {
        Some(v) => Some(v.to_str().map_err(|_| Refusal::BadRequest("Host is not text"))?),
        None => None,
    };
    let authority = req.uri.authority().map(|a| a.as_str());
    let host = match (header, authority) {
        (Some(h), Some(a)) if normalize_host(h) != normalize_host(a) => {
            return Err(Refusal::BadRequest("Host differs from the request target"))
        }
        (Some(h), _) => h,
        (None, Some(a)) => a,
        (None, None) => return Err(Refusal::BadRequest("no Host")),
    };
    Ok(normalize_host(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read_head` of a request with these fields: the `Host` it returns, or its refusal.
    fn read(fields: &[(&'static str, &str)]) -> Result<Option<String>, Refusal> {
        let mut req = RequestHeader::build("POST", b"/upload?x=1", None).unwrap();
        for (name, value) in fields {
            req.append_header(*name, *value).unwrap();
        }
        read_head(&req).map(|host| host.map(|v| v.to_str().unwrap().to_string()))
    }

    // Pingora's parser refuses some of these before the gateway sees them; this holds the
    // gateway's own reading to them whatever Pingora does.
    #[test]
    fn the_head_is_read_in_one_pass_and_ambiguous_framing_is_refused() {
        let bad = |why| Err(Refusal::BadRequest(why));
        assert_eq!(
            read(&[("Host", "api.test"), ("Accept", "*/*")]),
            Ok(Some("api.test".into()))
        );
        assert_eq!(read(&[("Accept", "*/*")]), Ok(None));
        assert_eq!(
            read(&[("Host", "a.test"), ("Content-Length", "3"), ("content-length", "3")]),
            Ok(Some("a.test".into()))
        );
        assert_eq!(
            read(&[("Host", "a.test"), ("Transfer-Encoding", " Chunked ")]),
            Ok(Some("a.test".into()))
        );

        assert_eq!(read(&[("Host", "a.test"), ("host", "b.test")]), bad("two Host headers"));
        assert_eq!(
            read(&[("Content-Length", "3"), ("Content-Length", "10")]),
            bad("conflicting Content-Length headers")
        );
        assert_eq!(
            read(&[
                ("Content-Length", "3"),
                ("X-A", "1"),
                ("Content-Length", "3"),
                ("Content-Length", "4")
            ]),
            bad("conflicting Content-Length headers")
        );
        for te in [
            &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")][..],
            &[("Content-Length", "3"), ("Transfer-Encoding", "chunked")][..],
        ] {
            assert_eq!(read(te), bad("both Content-Length and Transfer-Encoding"));
        }
        for te in [
            &[("Transfer-Encoding", "gzip, chunked")][..],
            &[("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")][..],
            &[("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")][..],
        ] {
            assert_eq!(
                read(te),
                bad("unsupported Transfer-Encoding (expected chunked)"),
                "{te:?}"
            );
        }
        let big = "a".repeat(MAX_HEADER_BYTES);
        assert_eq!(
            read(&[("Host", "a.test"), ("X-Big", &big)]),
            Err(Refusal::HeadersTooLarge)
        );
        // the limit counts the request target, each name and value, and 4 bytes per field
        let almost = "a".repeat(MAX_HEADER_BYTES - "/upload?x=1".len() - "x-big".len() - 4);
        assert_eq!(read(&[("X-Big", &almost)]), Ok(None));
        assert_eq!(read(&[("X-Big", &format!("{almost}a"))]), Err(Refusal::HeadersTooLarge));
        assert_eq!(read(&[("X-Big", &almost), ("A", "")]), Err(Refusal::HeadersTooLarge));
    }
}
