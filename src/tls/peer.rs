use std::sync::{Arc, LazyLock};

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;
use openssl::x509::{X509Ref, X509};

use super::identity::{encode, identity_of_der};
use super::memo::{Fingerprint, FingerprintMemo};
use super::xfcc::xfcc_value;
use crate::policy::Identity;

/// The certificate chain a client presented, with its identity parsed once.
pub struct PeerCertificate {
    pub leaf: X509,
    /// Certificates sent after the leaf, as presented (untrusted).
    pub chain: Vec<X509>,
    /// `Err` holds why the leaf is `malformed`. Shared by the connections that present
    /// the same leaf.
    pub identity: Result<Arc<Identity>, String>,
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

/// Client certificates as OpenSSL parsed them, one object per distinct encoding. OpenSSL
/// parses every handshake's chain into objects of its own (~4 KiB for a 470-byte leaf) that
/// the connection's session keeps until it closes; a client opens many connections with one
/// certificate, so the handshake swaps in the object an earlier connection parsed (see
/// `ffi::share_presented_certificates`). Same bytes, same certificate.
static SHARED_CERTIFICATES: LazyLock<FingerprintMemo<X509>> =
    LazyLock::new(|| FingerprintMemo::new(SHARED_CERTIFICATES_CAP));

/// Distinct certificates kept for sharing (~4 KiB each); beyond this the memory starts
/// over, and connections keep the objects they hold.
const SHARED_CERTIFICATES_CAP: usize = 1024;

/// The object an earlier handshake parsed from the same encoding as `cert`, if it is
/// another object; otherwise `cert` is remembered for the handshakes to come.
pub(super) fn shared_copy(cert: &X509Ref) -> Option<X509> {
    let key = openssl::sha::sha256(&encode(cert).ok()?);
    match SHARED_CERTIFICATES.get(&key) {
        Some(shared) => (shared.as_ptr() != cert.as_ptr()).then_some(shared),
        None => {
            SHARED_CERTIFICATES.remember(key, cert.to_owned());
            None
        }
    }
}

/// A leaf certificate's identity and XFCC value.
#[derive(Clone)]
struct ParsedLeaf {
    identity: Result<Arc<Identity>, String>,
    xfcc: Option<http::HeaderValue>,
}

impl ParsedLeaf {
    fn of(der: &[u8], sha256: &Fingerprint) -> Self {
        let identity = identity_of_der(der, sha256).map(Arc::new);
        let xfcc = identity.as_ref().ok().and_then(|id| xfcc_value(id));
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

    /// A real TLS 1.3 handshake with the listener's deferred verification: what the
    /// server's session keeps of the chain the client presented.
    fn handshake(server: &crate::devpki::Issued, client: &crate::devpki::Issued, chain: &[&str]) -> (X509, Vec<X509>) {
        use openssl::pkey::PKey;
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        let mut acceptor = crate::tls::test_acceptor(server);
        acceptor.set_verify(SslVerifyMode::PEER);
        crate::tls::ffi::defer_client_chain_verification(&mut acceptor);
        let acceptor = acceptor.build();
        let mut connector = SslConnector::builder(SslMethod::tls()).expect("connector");
        connector.set_verify(SslVerifyMode::NONE);
        connector
            .set_certificate(&X509::from_pem(client.cert_pem.as_bytes()).expect("pem"))
            .expect("client cert");
        for pem in chain {
            connector
                .add_extra_chain_cert(X509::from_pem(pem.as_bytes()).expect("pem"))
                .expect("chain cert");
        }
        connector
            .set_private_key(&PKey::private_key_from_pem(client.key_pem.as_bytes()).expect("key"))
            .expect("client key");
        let connector = connector.build();
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let client_side = std::thread::spawn(move || {
            let mut tls = connector.connect("localhost", b).expect("client handshake");
            std::io::Read::read(&mut tls, &mut [0u8; 1]).ok();
        });
        let tls = acceptor.accept(a).expect("server handshake");
        let ssl = tls.ssl();
        let leaf = ssl.peer_certificate().expect("a client certificate");
        let chain = ssl
            .peer_cert_chain()
            .map(|s| s.iter().map(|c| c.to_owned()).collect())
            .unwrap_or_default();
        drop(tls);
        client_side.join().expect("client");
        (leaf, chain)
    }

    #[test]
    fn connections_with_one_certificate_share_one_parsed_object_and_others_do_not() {
        let root = CertificateAuthority::root("sharing test root").expect("root");
        let intermediate = root.intermediate("sharing test intermediate").expect("intermediate");
        let server = root.issue(&LeafSpec::server(&["localhost"])).expect("server");
        let alice = intermediate
            .issue(&LeafSpec::client("spiffe://t/alice"))
            .expect("alice");
        let bob = intermediate.issue(&LeafSpec::client("spiffe://t/bob")).expect("bob");
        let via = [intermediate.cert_pem.as_str()];

        let (first, first_chain) = handshake(&server, &alice, &via);
        let (second, second_chain) = handshake(&server, &alice, &via);
        let (other, other_chain) = handshake(&server, &bob, &via);
        // what OpenSSL parsed from the wire was swapped for one shared object per encoding
        assert_eq!(first.as_ptr(), second.as_ptr(), "one object for one certificate");
        assert_ne!(first.as_ptr(), other.as_ptr(), "another certificate, another object");
        assert_eq!(first_chain.len(), 1);
        assert_eq!(first_chain[0].as_ptr(), second_chain[0].as_ptr());
        assert_eq!(
            first_chain[0].as_ptr(),
            other_chain[0].as_ptr(),
            "the intermediate is shared too"
        );
        // and it is the certificate the client sent
        let der = |cert: &X509Ref| cert.to_der().expect("der");
        let sent = |pem: &str| der(&X509::from_pem(pem.as_bytes()).expect("pem"));
        assert_eq!(der(&first), sent(&alice.cert_pem));
        assert_eq!(der(&other), sent(&bob.cert_pem));
        assert_eq!(der(&first_chain[0]), sent(&intermediate.cert_pem));
        // the identity read from the shared object is the client's
        let parsed = PeerCertificate::new(first, first_chain);
        assert_eq!(parsed.identity.expect("parses").uris, ["spiffe://t/alice"]);
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
            assert_eq!(
                cached.identity.clone().map(|id| Identity::clone(&id)),
                parse_identity(cert)
            );
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
