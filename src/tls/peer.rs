use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;
use openssl::x509::X509;

use super::identity::{encode, identity_of_der};
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
        Self::parsed(leaf, chain, None)
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
        Some(Self::parsed(leaf, chain, Some(leaves)))
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

    /// The leaf is encoded and hashed once: the hash keys both caches and is the identity's
    /// fingerprint; the encoding is what the identity is parsed from.
    fn parsed(leaf: X509, chain: Vec<X509>, leaves: Option<&LeafCache>) -> Self {
        let (ParsedLeaf { identity, xfcc }, leaf_sha256) = match encode(&leaf) {
            Ok(der) => {
                let key = openssl::sha::sha256(&der);
                let parse = || ParsedLeaf::of(&der, &key);
                let parsed = match leaves {
                    Some(cache) => cache.parse(key, parse),
                    None => parse(),
                };
                (parsed, Some(key))
            }
            Err(why) => (
                ParsedLeaf {
                    identity: Err(why),
                    xfcc: None,
                },
                None,
            ),
        };
        PeerCertificate {
            leaf,
            chain,
            identity,
            xfcc,
            leaf_sha256,
        }
    }
}

/// A leaf certificate's identity and XFCC value.
#[derive(Clone)]
struct ParsedLeaf {
    identity: Result<Identity, String>,
    xfcc: Option<http::HeaderValue>,
}

impl ParsedLeaf {
    fn of(der: &[u8], sha256: &Fingerprint) -> Self {
        let identity = identity_of_der(der, sha256);
        let xfcc = identity.as_ref().ok().and_then(xfcc_value);
        ParsedLeaf { identity, xfcc }
    }
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
    fn parse(&self, key: Fingerprint, parse: impl FnOnce() -> ParsedLeaf) -> ParsedLeaf {
        if let Some(hit) = self.parsed.get(&key) {
            return hit;
        }
        let parsed = parse();
        self.parsed.remember(key, parsed.clone());
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devpki::{CertificateAuthority, LeafSpec};
    use crate::tls::parse_identity;

    fn leaf(ca: &CertificateAuthority, uri: &str) -> X509 {
        let issued = ca.issue(&LeafSpec::client(uri)).expect("issue");
        X509::from_pem(issued.cert_pem.as_bytes()).expect("pem")
    }

    #[test]
    fn the_cache_gives_what_a_parse_gives_once_per_distinct_certificate() {
        let ca = CertificateAuthority::root("cache test root").expect("root");
        let (a, b) = (leaf(&ca, "spiffe://t/a"), leaf(&ca, "spiffe://t/b"));
        let cache = LeafCache::default();
        let parse_with =
            |cache: Option<&LeafCache>, cert: &X509| PeerCertificate::parsed(cert.clone(), Vec::new(), cache);
        for cert in [&a, &b, &a, &b, &a] {
            let cached = parse_with(Some(&cache), cert);
            let fresh = parse_with(None, cert);
            assert_eq!(cached.identity, fresh.identity);
            assert_eq!(cached.xfcc, fresh.xfcc);
            assert_eq!(cached.identity, parse_identity(cert));
            // the fingerprint is OpenSSL's SHA-256 of the certificate, as before
            let digest = cert.digest(openssl::hash::MessageDigest::sha256()).expect("digest");
            assert_eq!(cached.leaf_sha256.as_ref().map(|d| &d[..]), Some(&digest[..]));
            assert_eq!(
                cached.identity.as_ref().expect("parses").sha256,
                crate::tls::hex(&digest)
            );
        }
        assert_eq!(cache.parsed.len(), 2);
        assert_eq!(
            parse_with(Some(&cache), &b).identity.expect("parses").uris,
            ["spiffe://t/b"]
        );
    }
}
