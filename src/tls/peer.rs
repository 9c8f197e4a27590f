use foreign_types::ForeignTypeRef;
use openssl::hash::MessageDigest;
use openssl::ssl::SslRef;
use openssl::x509::{X509Ref, X509};

use super::identity::parse_identity;
use super::memo::{Fingerprint, FingerprintMemo};
use super::xfcc::xfcc_value;
use crate::policy::Identity;

/// The certificate chain a client presented, with its identity parsed once.
pub struct PeerCertificate {
    pub leaf: X509,
    /// Certificates sent after the leaf, as presented (untrusted).
    pub chain: Vec<X509>,
    /// `Err` holds why the leaf is `malformed`.
    pub identity: Result<Identity, String>,
    /// The `x-forwarded-client-cert` value, built once; only sent when the chain verifies.
    pub xfcc: Option<http::HeaderValue>,
    /// SHA-256 of the leaf's DER encoding, computed once for the caches keyed by it;
    /// `None` if it could not be encoded.
    pub leaf_sha256: Option<Fingerprint>,
}

impl PeerCertificate {
    pub fn new(leaf: X509, chain: Vec<X509>) -> Self {
        let ParsedLeaf { identity, xfcc } = ParsedLeaf::of(&leaf);
        PeerCertificate {
            leaf_sha256: sha256(&leaf),
            leaf,
            chain,
            identity,
            xfcc,
        }
    }

    /// What the client sent in this handshake. On the server side OpenSSL's peer chain
    /// excludes the leaf; where a build includes it, it is the same object, which is
    /// dropped. (By identity, not `==`: `X509_cmp` decodes every extension of both
    /// certificates, ~2% of a handshake.)
    pub fn from_handshake(ssl: &SslRef, leaves: &LeafCache) -> Option<Self> {
        let leaf = ssl.peer_certificate()?;
        let chain = ssl
            .peer_cert_chain()
            .map(|stack| {
                stack
                    .iter()
                    .filter(|c| c.as_ptr() != leaf.as_ptr())
                    .map(|c| c.to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let leaf_sha256 = sha256(&leaf);
        let ParsedLeaf { identity, xfcc } = leaves.parse(&leaf, leaf_sha256);
        Some(PeerCertificate {
            leaf,
            chain,
            identity,
            xfcc,
            leaf_sha256,
        })
    }

    /// A PEM file holding the leaf followed by its intermediates (`phasegate verify`).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut certs = X509::stack_from_pem(pem)
            .map_err(|e| format!("not a PEM certificate: {e}"))?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| "no certificate found (expected a PEM CERTIFICATE block)".to_string())?;
        Ok(PeerCertificate::new(leaf, certs.collect()))
    }
}

/// A leaf certificate's identity and XFCC value.
#[derive(Clone)]
struct ParsedLeaf {
    identity: Result<Identity, String>,
    xfcc: Option<http::HeaderValue>,
}

impl ParsedLeaf {
    fn of(leaf: &X509Ref) -> Self {
        let identity = parse_identity(leaf);
        let xfcc = identity.as_ref().ok().and_then(xfcc_value);
        ParsedLeaf { identity, xfcc }
    }
}

fn sha256(cert: &X509Ref) -> Option<Fingerprint> {
    let digest = cert.digest(MessageDigest::sha256()).ok()?;
    <Fingerprint>::try_from(&digest[..]).ok()
}

/// Leaf certificates already parsed, by the SHA-256 of their DER encoding: clients
/// reconnect with the same certificate all day, and parsing it (x509-parser, names
/// formatted as text) was ~3% of a handshake. Same bytes, same identity, so a hit is as
/// good as a parse.
pub struct LeafCache {
    parsed: FingerprintMemo<ParsedLeaf>,
}

/// Remembered leaves per listener (~1 KiB each); beyond this the memory starts over.
const LEAF_CACHE_CAP: usize = 4 * 1024;

impl Default for LeafCache {
    fn default() -> Self {
        LeafCache {
            parsed: FingerprintMemo::new(LEAF_CACHE_CAP),
        }
    }
}

impl LeafCache {
    fn parse(&self, leaf: &X509Ref, key: Option<Fingerprint>) -> ParsedLeaf {
        let Some(key) = key else {
            return ParsedLeaf::of(leaf);
        };
        if let Some(hit) = self.parsed.get(&key) {
            return hit;
        }
        let parsed = ParsedLeaf::of(leaf);
        self.parsed.remember(key, parsed.clone());
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devpki::{CertificateAuthority, LeafSpec};

    fn leaf(ca: &CertificateAuthority, uri: &str) -> X509 {
        let issued = ca.issue(&LeafSpec::client(uri)).expect("issue");
        X509::from_pem(issued.cert_pem.as_bytes()).expect("pem")
    }

    #[test]
    fn the_cache_gives_what_a_parse_gives_once_per_distinct_certificate() {
        let ca = CertificateAuthority::root("cache test root").expect("root");
        let (a, b) = (leaf(&ca, "spiffe://t/a"), leaf(&ca, "spiffe://t/b"));
        let cache = LeafCache::default();
        for cert in [&a, &b, &a, &b, &a] {
            let cached = cache.parse(cert, sha256(cert));
            let fresh = ParsedLeaf::of(cert);
            assert_eq!(cached.identity, fresh.identity);
            assert_eq!(cached.xfcc, fresh.xfcc);
        }
        assert_eq!(cache.parsed.len(), 2);
        assert_eq!(
            cache.parse(&b, sha256(&b)).identity.expect("parses").uris,
            ["spiffe://t/b"]
        );
    }
}
