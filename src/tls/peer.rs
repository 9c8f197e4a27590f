use openssl::ssl::SslRef;
use openssl::x509::X509;

use super::identity::parse_identity;
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
}

impl PeerCertificate {
    pub fn new(leaf: X509, chain: Vec<X509>) -> Self {
        let identity = parse_identity(&leaf);
        let xfcc = identity.as_ref().ok().and_then(xfcc_value);
        PeerCertificate {
            leaf,
            chain,
            identity,
            xfcc,
        }
    }

    /// What the client sent in this handshake. On the server side OpenSSL's peer chain
    /// excludes the leaf; a duplicate leaf is dropped in case a build includes it.
    pub fn from_handshake(ssl: &SslRef) -> Option<Self> {
        let leaf = ssl.peer_certificate()?;
        let chain = ssl
            .peer_cert_chain()
            .map(|stack| stack.iter().filter(|c| **c != *leaf).map(|c| c.to_owned()).collect())
            .unwrap_or_default();
        Some(PeerCertificate::new(leaf, chain))
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
