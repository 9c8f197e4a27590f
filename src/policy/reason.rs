use std::fmt;

use serde::{Serialize, Serializer};

/// Why a client would be (or is) rejected. One list, used in responses, logs, the admin
/// API, the CLI and metrics; the codes are part of the public interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The client presented no certificate.
    NoCert,
    /// The chain does not lead to a trust anchor of the route's bundle (unknown CA,
    /// self-signed, missing intermediate).
    UntrustedIssuer,
    /// A certificate of the chain is past its notAfter.
    Expired,
    /// A certificate of the chain is before its notBefore.
    NotYetValid,
    /// A certificate of the chain is listed in a CRL of the bundle.
    Revoked,
    /// A CRL needed to check the chain is missing, stale, or does not verify.
    CrlInvalid,
    /// A signature in the chain does not verify.
    BadSignature,
    /// The leaf has an extended key usage without clientAuth (e.g. a server certificate).
    EkuMismatch,
    /// A key usage forbids the use (leaf without digitalSignature, CA without keyCertSign).
    KeyUsage,
    /// A basic constraints violation: a CA used as a leaf, a non-CA issuing, a path too long.
    BasicConstraints,
    /// A name in the chain violates a CA's name constraints, or the constraints themselves
    /// are malformed or sit in an end-entity certificate.
    NameConstraints,
    /// A key or signature in the chain is below 112 bits of security (RSA < 2048, P-192,
    /// SHA-1 signatures) or uses DSA.
    WeakCrypto,
    /// The path has more intermediates than the bundle's `max_chain_depth`, or the client
    /// sent more certificates than the gateway accepts.
    ChainTooLong,
    /// The certificate verifies but none of its SANs is on the route's allow list.
    IdentityNotAllowed,
    /// The only SANs that could match an allow entry are wildcards, which never match.
    WildcardSan,
    /// The certificate or chain could not be parsed or breaks the strict X.509 profile
    /// (missing key identifiers, empty subject, a bad dNSName, unknown critical extension…).
    Malformed,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::NoCert,
        Reason::UntrustedIssuer,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Revoked,
        Reason::CrlInvalid,
        Reason::BadSignature,
        Reason::EkuMismatch,
        Reason::KeyUsage,
        Reason::BasicConstraints,
        Reason::NameConstraints,
        Reason::WeakCrypto,
        Reason::ChainTooLong,
        Reason::IdentityNotAllowed,
        Reason::WildcardSan,
        Reason::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoCert => "no_cert",
            Reason::UntrustedIssuer => "untrusted_issuer",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Revoked => "revoked",
            Reason::CrlInvalid => "crl_invalid",
            Reason::BadSignature => "bad_signature",
            Reason::EkuMismatch => "eku_mismatch",
            Reason::KeyUsage => "key_usage",
            Reason::BasicConstraints => "basic_constraints",
            Reason::NameConstraints => "name_constraints",
            Reason::WeakCrypto => "weak_crypto",
            Reason::ChainTooLong => "chain_too_long",
            Reason::IdentityNotAllowed => "identity_not_allowed",
            Reason::WildcardSan => "wildcard_san",
            Reason::Malformed => "malformed",
        }
    }

    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == code)
    }

    /// The `x-mtls-verdict` value for a request that passes only because of the mode.
    /// Static so the request path does not format strings.
    pub fn would_reject_header(self) -> &'static str {
        match self {
            Reason::NoCert => "would-reject; reason=no_cert",
            Reason::UntrustedIssuer => "would-reject; reason=untrusted_issuer",
            Reason::Expired => "would-reject; reason=expired",
            Reason::NotYetValid => "would-reject; reason=not_yet_valid",
            Reason::Revoked => "would-reject; reason=revoked",
            Reason::CrlInvalid => "would-reject; reason=crl_invalid",
            Reason::BadSignature => "would-reject; reason=bad_signature",
            Reason::EkuMismatch => "would-reject; reason=eku_mismatch",
            Reason::KeyUsage => "would-reject; reason=key_usage",
            Reason::BasicConstraints => "would-reject; reason=basic_constraints",
            Reason::NameConstraints => "would-reject; reason=name_constraints",
            Reason::WeakCrypto => "would-reject; reason=weak_crypto",
            Reason::ChainTooLong => "would-reject; reason=chain_too_long",
            Reason::IdentityNotAllowed => "would-reject; reason=identity_not_allowed",
            Reason::WildcardSan => "would-reject; reason=wildcard_san",
            Reason::Malformed => "would-reject; reason=malformed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_unique_code_and_matching_header() {
        let mut codes: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.as_str()), Some(r));
            assert_eq!(r.would_reject_header(), format!("would-reject; reason={}", r.as_str()));
        }
    }
}
