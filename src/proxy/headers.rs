//! Identity headers: what the backend may believe about the client comes only from the
//! gateway, never from the client.

use pingora::{OrErr, Result};
use pingora_http::RequestHeader;

use crate::policy::Verdict;

/// Header names (after lowercasing and `_` → `-`) that carry client identity or the
/// gateway's verdict. Client-supplied copies are removed in every spelling, because some
/// backends (CGI, nginx with underscores_in_headers) treat `_` and `-` alike.
const IDENTITY_HEADERS: [&str; 2] = [XFCC_NAME, VERDICT_NAME];
const IDENTITY_PREFIXES: [&str; 3] = ["x-mtls-", "x-client-cert", "x-ssl-client"];

// Given to Pingora as text: from a `HeaderName` it would copy the name once more for its
// case map.
const XFCC_NAME: &str = "x-forwarded-client-cert";
const VERDICT_NAME: &str = "x-mtls-verdict";

/// Whether `name` is an identity header in some spelling, at any length: compared byte by
/// byte, case-insensitively and with `_` read as `-`, without copying the name.
fn is_identity_header(name: &str) -> bool {
    let same = |a: u8, b: u8| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-');
    let starts_with =
        |prefix: &str| name.len() >= prefix.len() && name.bytes().zip(prefix.bytes()).all(|(a, b)| same(a, b));
    let equals = |full: &str| name.len() == full.len() && starts_with(full);
    starts_with("x-")
        && (IDENTITY_HEADERS.iter().any(|h| equals(h)) || IDENTITY_PREFIXES.iter().any(|p| starts_with(p)))
}

/// Whether the request carries a field that Pingora's standard forwarding policy strips or
/// rewrites: the hop-by-hop fields (RFC 9110 §7.6.1), the upgrade fields, and `Connection`,
/// the only way to nominate more. Most requests carry none, and for them that policy's dozen
/// map lookups change nothing; one pass over the names costs a few per header.
///
/// The names are those of pingora-proxy 0.9.1's `sanitize_h1_upstream_request` and
/// `sanitize_h2_upstream_request` (private there): recheck them when Pingora moves.
pub fn carries_hop_by_hop_fields(req: &RequestHeader) -> bool {
    req.headers.keys().any(|name| {
        matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "http2-settings"
        )
    })
}

/// Removes every client-supplied identity header. Allocates only when there is one.
pub fn strip_identity_headers(req: &mut RequestHeader) {
    let found: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| is_identity_header(name.as_str()))
        .cloned()
        .collect();
    for name in found {
        req.remove_header(&name);
    }
}

/// The request the backend receives: client-supplied identity headers removed, then the
/// gateway's own added — the client certificate (`xfcc`, only for a chain verified against
/// the route's bundle) and the verdict — and the normalized path in place of the client's.
pub fn prepare_upstream_request(
    req: &mut RequestHeader,
    xfcc: Option<http::HeaderValue>,
    verdict: Option<Verdict>,
    rewritten_path: Option<String>,
) -> Result<()> {
    strip_identity_headers(req);
    if let Some(xfcc) = xfcc {
        req.insert_header(XFCC_NAME, xfcc)?;
    }
    let verdict = verdict.map_or("unauthenticated", Verdict::header_value);
    // static value; Pingora copies the name into its maps
    req.insert_header(VERDICT_NAME, http::HeaderValue::from_static(verdict))?;
    if let Some(path) = rewritten_path {
        let uri = match req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let uri = http::Uri::try_from(uri).or_err(pingora::ErrorType::InternalError, "normalized path is not a URI")?;
        req.set_uri(uri);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const XFCC: http::HeaderName = http::HeaderName::from_static(XFCC_NAME);
    const VERDICT: http::HeaderName = http::HeaderName::from_static(VERDICT_NAME);

    #[test]
    fn identity_headers_are_recognized_in_every_spelling() {
        for name in [
            "x-forwarded-client-cert",
            "x_forwarded_client_cert",
            "x-forwarded_client-cert",
            "x-mtls-verdict",
            "x-mtls-anything",
            "x-ssl-client-s-dn",
            "x-client-cert",
            "X_SSL_CLIENT_VERIFY",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        // at any length: a long name must not slip past a fixed-size buffer
        let long = format!("x-ssl-client-{}", "a".repeat(52));
        assert!(is_identity_header(&long) && is_identity_header(&long.replace('-', "_")));
        assert!(is_identity_header(&format!("x-mtls-{}", "z".repeat(4096))));
        for name in ["x-request-id", "forwarded", "x-forwarded-for", "content-type"] {
            assert!(!is_identity_header(name), "{name}");
        }
    }

    #[test]
    fn the_backend_hears_identity_only_from_the_gateway() {
        let mut req = RequestHeader::build("GET", b"/a/../b?x=1", None).unwrap();
        req.append_header("x-forwarded-client-cert", "Hash=spoofed").unwrap();
        req.append_header("x-mtls-verdict", "pass").unwrap();
        let xfcc = http::HeaderValue::from_static("Hash=abc;URI=spiffe://t/ns/a/sa/b");
        prepare_upstream_request(&mut req, Some(xfcc.clone()), Some(Verdict::Pass), Some("/b".into())).unwrap();
        assert_eq!(req.headers.get_all(XFCC).iter().collect::<Vec<_>>(), [&xfcc]);
        assert_eq!(req.headers.get(VERDICT).unwrap(), Verdict::Pass.header_value());
        assert_eq!(req.uri.to_string(), "/b?x=1");

        let mut anonymous = RequestHeader::build("GET", b"/", None).unwrap();
        anonymous
            .append_header("x-forwarded-client-cert", "Hash=spoofed")
            .unwrap();
        prepare_upstream_request(&mut anonymous, None, None, None).unwrap();
        assert!(anonymous.headers.get(XFCC).is_none());
        assert_eq!(anonymous.headers.get(VERDICT).unwrap(), "unauthenticated");
        assert_eq!(anonymous.uri.to_string(), "/");
    }

    #[test]
    fn hop_by_hop_fields_are_found_in_any_case_and_position() {
        let carries = |names: &[&str]| {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            for name in names {
                req.append_header(name.to_string(), "1").unwrap();
            }
            carries_hop_by_hop_fields(&req)
        };
        assert!(!carries(&[]));
        assert!(!carries(&[
            "Host",
            "User-Agent",
            "Accept",
            "x-forwarded-client-cert",
            "content-length"
        ]));
        for field in [
            "Connection",
            "keep-alive",
            "Proxy-Connection",
            "proxy-authenticate",
            "Proxy-Authorization",
            "TE",
            "trailer",
            "Transfer-Encoding",
            "upgrade",
            "HTTP2-Settings",
        ] {
            assert!(carries(&["Host", "Accept", field]), "{field}");
            assert!(carries(&[field, "Host"]), "{field}");
        }
        // a name that only starts like one is not one
        assert!(!carries(&["te-x", "connection-id", "upgrade-insecure-requests"]));
    }

    #[test]
    fn stripping_removes_all_copies() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-Client-Cert", "Hash=evil").unwrap();
        req.append_header("x-forwarded-client-cert", "Hash=evil2").unwrap();
        req.append_header("x_forwarded_client_cert", "Hash=evil3").unwrap();
        req.append_header("X-MTLS-Verdict", "pass").unwrap();
        req.append_header("x-keep", "1").unwrap();
        strip_identity_headers(&mut req);
        assert_eq!(req.headers.len(), 1);
        assert!(req.headers.get("x-keep").is_some());
    }
}
