//! The strict X.509 profile: which of OpenSSL's strict (RFC 5280) errors a trust bundle may
//! relax, and phasegate's own checks after OpenSSL for what even strict OpenSSL lets
//! through. Purpose, signatures, validity and revocation are never relaxable.

use std::fmt;

use openssl::x509::X509Ref;
use serde::{Serialize, Serializer};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::policy::Reason;

/// A strict check that a trust bundle may relax (`trust_bundles.NAME.relax`), for a
/// legacy PKI whose certificates are genuine but do not follow the RFC 5280 profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StrictCheck {
    /// authorityKeyIdentifier on every certificate but a self-signed root,
    /// subjectKeyIdentifier on every CA, neither critical.
    KeyIdentifiers,
    /// basicConstraints is critical on every CA.
    CriticalBasicConstraints,
    /// No empty subject or issuer; a certificate with an empty subject has a critical SAN.
    EmptySubject,
    /// CAs carry keyUsage; keyCertSign only on CAs, pathLenConstraint only with it.
    KeyUsageProfile,
    /// dNSName SANs are host names (letters, digits, hyphens; no underscores).
    DnsNameSyntax,
    /// Every CRL carries a CRL number.
    CrlNumber,
}

impl StrictCheck {
    pub const ALL: [StrictCheck; 6] = [
        StrictCheck::KeyIdentifiers,
        StrictCheck::CriticalBasicConstraints,
        StrictCheck::EmptySubject,
        StrictCheck::KeyUsageProfile,
        StrictCheck::DnsNameSyntax,
        StrictCheck::CrlNumber,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StrictCheck::KeyIdentifiers => "key_identifiers",
            StrictCheck::CriticalBasicConstraints => "critical_basic_constraints",
            StrictCheck::EmptySubject => "empty_subject",
            StrictCheck::KeyUsageProfile => "key_usage_profile",
            StrictCheck::DnsNameSyntax => "dns_name_syntax",
            StrictCheck::CrlNumber => "crl_number",
        }
    }

    /// A check by its YAML name; `Err` says why the name is not one.
    pub fn parse(name: &str) -> Result<StrictCheck, String> {
        if let Some(check) = StrictCheck::ALL.into_iter().find(|c| c.as_str() == name) {
            return Ok(check);
        }
        let known = StrictCheck::ALL.map(StrictCheck::as_str).join(", ");
        if NEVER_RELAXED.contains(&name) {
            return Err(format!(
                "{name:?} cannot be relaxed: purpose, signatures, key strength, validity and revocation always hold (relaxable: {known})"
            ));
        }
        Err(format!("{name:?} is not a strict check (expected one of: {known})"))
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Names an operator might try to relax that phasegate never relaxes, so the error says so.
const NEVER_RELAXED: [&str; 9] = [
    "purpose",
    "eku",
    "signature",
    "signatures",
    "validity",
    "revocation",
    "weak_crypto",
    "key_strength",
    "name_constraints",
];

impl fmt::Display for StrictCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StrictCheck {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The strict checks a bundle relaxes; empty by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Relaxed(u8);

impl Relaxed {
    pub fn of(checks: &[StrictCheck]) -> Self {
        Relaxed(checks.iter().fold(0, |bits, c| bits | c.bit()))
    }

    pub fn allows(self, check: StrictCheck) -> bool {
        self.0 & check.bit() != 0
    }

    pub fn checks(self) -> impl Iterator<Item = StrictCheck> {
        StrictCheck::ALL.into_iter().filter(move |c| self.allows(*c))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Serialize for Relaxed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.checks())
    }
}

/// How one of OpenSSL's verify errors reads in phasegate's terms: the reason, and the
/// strict check it belongs to when a bundle may relax it.
pub(super) fn classify(error: i32) -> (Reason, Option<StrictCheck>) {
    use openssl_sys::*;
    // OpenSSL 3's strict-profile errors, not all bound by openssl-sys
    const SIGNATURE_ALGORITHM_MISMATCH: i32 = 77;
    const SIGNATURE_ALGORITHM_INCONSISTENCY: i32 = 78;
    const PATHLEN_INVALID_FOR_NON_CA: i32 = 80;
    const PATHLEN_WITHOUT_KU_KEY_CERT_SIGN: i32 = 81;
    const KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA: i32 = 82;
    const ISSUER_NAME_EMPTY: i32 = 83;
    const SUBJECT_NAME_EMPTY: i32 = 84;
    const MISSING_AUTHORITY_KEY_IDENTIFIER: i32 = 85;
    const MISSING_SUBJECT_KEY_IDENTIFIER: i32 = 86;
    const EMPTY_SUBJECT_ALT_NAME: i32 = 87;
    const EMPTY_SUBJECT_SAN_NOT_CRITICAL: i32 = 88;
    const CA_BCONS_NOT_CRITICAL: i32 = 89;
    const AUTHORITY_KEY_IDENTIFIER_CRITICAL: i32 = 90;
    const SUBJECT_KEY_IDENTIFIER_CRITICAL: i32 = 91;
    const CA_CERT_MISSING_KEY_USAGE: i32 = 92;
    const EXTENSIONS_REQUIRE_VERSION_3: i32 = 93;
    const EC_KEY_EXPLICIT_PARAMS: i32 = 94;
    const EE_KEY_TOO_SMALL: i32 = 66;
    const CA_KEY_TOO_SMALL: i32 = 67;
    const CA_MD_TOO_WEAK: i32 = 68;
    const UNSUPPORTED_SIGNATURE_ALGORITHM: i32 = 76;
    const PATH_LOOP: i32 = 55;
    let strict = |check| (Reason::Malformed, Some(check));
    match error {
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
        | X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        | X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        | X509_V_ERR_CERT_UNTRUSTED
        | X509_V_ERR_CERT_REJECTED
        | PATH_LOOP => (Reason::UntrustedIssuer, None),
        X509_V_ERR_CERT_HAS_EXPIRED => (Reason::Expired, None),
        X509_V_ERR_CERT_NOT_YET_VALID => (Reason::NotYetValid, None),
        X509_V_ERR_CERT_REVOKED => (Reason::Revoked, None),
        X509_V_ERR_UNABLE_TO_GET_CRL
        | X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE
        | X509_V_ERR_CRL_SIGNATURE_FAILURE
        | X509_V_ERR_CRL_NOT_YET_VALID
        | X509_V_ERR_CRL_HAS_EXPIRED
        | X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD
        | X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD
        | X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER
        | X509_V_ERR_KEYUSAGE_NO_CRL_SIGN
        | X509_V_ERR_DIFFERENT_CRL_SCOPE
        | X509_V_ERR_CRL_PATH_VALIDATION_ERROR
        | X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION => (Reason::CrlInvalid, None),
        X509_V_ERR_CERT_SIGNATURE_FAILURE
        | X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE
        | X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY
        | UNSUPPORTED_SIGNATURE_ALGORITHM => (Reason::BadSignature, None),
        EE_KEY_TOO_SMALL | CA_KEY_TOO_SMALL | CA_MD_TOO_WEAK => (Reason::WeakCrypto, None),
        X509_V_ERR_INVALID_PURPOSE => (Reason::EkuMismatch, None),
        X509_V_ERR_KEYUSAGE_NO_CERTSIGN | X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE => (Reason::KeyUsage, None),
        PATHLEN_WITHOUT_KU_KEY_CERT_SIGN | KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA | CA_CERT_MISSING_KEY_USAGE => {
            (Reason::KeyUsage, Some(StrictCheck::KeyUsageProfile))
        }
        X509_V_ERR_CERT_CHAIN_TOO_LONG => (Reason::ChainTooLong, None),
        X509_V_ERR_INVALID_CA
        | X509_V_ERR_INVALID_NON_CA
        | X509_V_ERR_PATH_LENGTH_EXCEEDED
        | PATHLEN_INVALID_FOR_NON_CA => (Reason::BasicConstraints, None),
        CA_BCONS_NOT_CRITICAL => (Reason::BasicConstraints, Some(StrictCheck::CriticalBasicConstraints)),
        MISSING_AUTHORITY_KEY_IDENTIFIER
        | MISSING_SUBJECT_KEY_IDENTIFIER
        | AUTHORITY_KEY_IDENTIFIER_CRITICAL
        | SUBJECT_KEY_IDENTIFIER_CRITICAL => strict(StrictCheck::KeyIdentifiers),
        ISSUER_NAME_EMPTY | SUBJECT_NAME_EMPTY | EMPTY_SUBJECT_ALT_NAME | EMPTY_SUBJECT_SAN_NOT_CRITICAL => {
            strict(StrictCheck::EmptySubject)
        }
        X509_V_ERR_PERMITTED_VIOLATION
        | X509_V_ERR_EXCLUDED_VIOLATION
        | X509_V_ERR_SUBTREE_MINMAX
        | X509_V_ERR_UNSUPPORTED_CONSTRAINT_TYPE
        | X509_V_ERR_UNSUPPORTED_CONSTRAINT_SYNTAX
        | X509_V_ERR_UNSUPPORTED_NAME_SYNTAX => (Reason::NameConstraints, None),
        // unknown critical extensions, invalid extensions, explicit EC parameters, v1
        // certificates with extensions, inconsistent signature algorithms: all malformed
        X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION
        | X509_V_ERR_INVALID_EXTENSION
        | X509_V_ERR_INVALID_POLICY_EXTENSION
        | EXTENSIONS_REQUIRE_VERSION_3
        | EC_KEY_EXPLICIT_PARAMS
        | SIGNATURE_ALGORITHM_MISMATCH
        | SIGNATURE_ALGORITHM_INCONSISTENCY => (Reason::Malformed, None),
        _ => (Reason::Malformed, None),
    }
}

/// A failure found by phasegate's own checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProfileViolation {
    pub reason: Reason,
    pub check: Option<StrictCheck>,
    pub message: String,
}

impl ProfileViolation {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        ProfileViolation {
            reason,
            check: None,
            message: message.into(),
        }
    }

    fn relaxable(check: StrictCheck, reason: Reason, message: impl Into<String>) -> Self {
        ProfileViolation {
            reason,
            check: Some(check),
            message: message.into(),
        }
    }
}

/// What OpenSSL does not check even when strict, for one certificate of a verified path
/// (`depth` 0 is the leaf). The first violation not relaxed by the bundle is returned.
pub(super) fn check_certificate(cert: &X509Ref, depth: usize, relaxed: Relaxed) -> Result<(), ProfileViolation> {
    let relaxed_away = |v: &ProfileViolation| v.check.is_some_and(|c| relaxed.allows(c));
    let der = cert
        .to_der()
        .map_err(|e| ProfileViolation::new(Reason::Malformed, format!("cannot encode: {e}")))?;
    let (_, parsed) = X509Certificate::from_der(&der)
        .map_err(|e| ProfileViolation::new(Reason::Malformed, format!("does not parse as X.509: {e}")))?;
    if cert.public_key().is_ok_and(|k| k.id() == openssl::pkey::Id::DSA) {
        return Err(ProfileViolation::new(
            Reason::WeakCrypto,
            "has a DSA key, which is no longer approved for signatures (FIPS 186-5)",
        ));
    }
    for ext in parsed.extensions() {
        let violation = match ext.parsed_extension() {
            ParsedExtension::ParseError { error } => Some(ProfileViolation::new(
                Reason::Malformed,
                format!("extension {} does not parse: {error}", ext.oid),
            )),
            ParsedExtension::NameConstraints(nc) => {
                if depth == 0 && !parsed.is_ca() {
                    Some(ProfileViolation::new(
                        Reason::NameConstraints,
                        "is an end-entity certificate with name constraints (only CAs may carry them)",
                    ))
                } else {
                    let subtrees = nc.permitted_subtrees.iter().chain(&nc.excluded_subtrees).flatten();
                    subtrees.map(|s| &s.base).find_map(malformed_constraint).map(|why| {
                        ProfileViolation::new(
                            Reason::NameConstraints,
                            format!("has a malformed name constraint: {why}"),
                        )
                    })
                }
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                if ext.critical {
                    Some(ProfileViolation::new(
                        Reason::Malformed,
                        "marks authorityInfoAccess critical (RFC 5280: MUST be non-critical)",
                    ))
                } else if aia.accessdescs.is_empty() {
                    Some(ProfileViolation::new(
                        Reason::Malformed,
                        "has an empty authorityInfoAccess",
                    ))
                } else {
                    aia.accessdescs.iter().find_map(|d| match &d.access_location {
                        GeneralName::URI(u) if u.contains("://") => None,
                        other => Some(ProfileViolation::new(
                            Reason::Malformed,
                            format!("has an authorityInfoAccess location that is not a URI ({other})"),
                        )),
                    })
                }
            }
            ParsedExtension::CertificatePolicies(policies) if ext.critical => policies
                .iter()
                .flat_map(|p| p.policy_qualifiers.iter().flatten())
                .find_map(|q| {
                    let id = q.policy_qualifier_id.to_id_string();
                    (!KNOWN_POLICY_QUALIFIERS.contains(&id.as_str())).then(|| {
                        ProfileViolation::new(
                            Reason::Malformed,
                            format!("has a critical certificatePolicies with an unknown qualifier {id}"),
                        )
                    })
                }),
            ParsedExtension::SubjectAlternativeName(san) => san.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(d) if !is_host_name(d.strip_prefix("*.").unwrap_or(d)) => {
                    Some(ProfileViolation::relaxable(
                        StrictCheck::DnsNameSyntax,
                        Reason::Malformed,
                        format!("has a dNSName SAN {d:?} that is not a host name"),
                    ))
                }
                _ => None,
            }),
            _ => None,
        };
        if let Some(v) = violation.filter(|v| !relaxed_away(v)) {
            return Err(v);
        }
    }
    Ok(())
}

/// id-qt-cps and id-qt-unotice (RFC 5280 4.2.1.4).
const KNOWN_POLICY_QUALIFIERS: [&str; 2] = ["1.3.6.1.5.5.7.2.1", "1.3.6.1.5.5.7.2.2"];

/// Why a name constraint's base name is malformed, if it is.
fn malformed_constraint(base: &GeneralName) -> Option<String> {
    match base {
        GeneralName::DNSName(d) => {
            let host = d.strip_prefix('.').unwrap_or(d);
            (!host.is_empty() && !is_host_name(host)).then(|| format!("dNSName {d:?} is not a domain"))
        }
        GeneralName::URI(u) => {
            let host = u.strip_prefix('.').unwrap_or(u);
            (!is_host_name(host)).then(|| format!("URI {u:?} is not a host or domain (RFC 5280 4.2.1.10)"))
        }
        GeneralName::RFC822Name(e) => {
            let domain = e.rsplit_once('@').map_or(*e, |(_, d)| d);
            let domain = domain.strip_prefix('.').unwrap_or(domain);
            (!is_host_name(domain)).then(|| format!("rfc822Name {e:?} is not a mailbox or domain"))
        }
        GeneralName::IPAddress(bytes) => {
            let (address, mask) = match bytes.len() {
                8 => bytes.split_at(4),
                32 => bytes.split_at(16),
                n => return Some(format!("iPAddress of {n} bytes (expected 8 or 32: address and mask)")),
            };
            let contiguous = mask
                .iter()
                .fold((true, false), |(ok, seen_zero), b| {
                    let ones = b.leading_ones();
                    let ok = ok && b.count_ones() == ones && !(seen_zero && *b != 0);
                    (ok, seen_zero || ones < 8)
                })
                .0;
            let host_bits_clear = address.iter().zip(mask).all(|(a, m)| a & !m == 0);
            (!contiguous || !host_bits_clear).then(|| format!("iPAddress {bytes:02x?} has a mask that is not a prefix"))
        }
        _ => None,
    }
}

/// A DNS host name: labels of letters, digits and inner hyphens, 1 to 63 characters, at
/// most 253 in all (RFC 1123). Underscores and empty labels are not host names.
pub fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_round_trip_and_the_core_is_never_relaxable() {
        for check in StrictCheck::ALL {
            assert_eq!(StrictCheck::parse(check.as_str()), Ok(check));
        }
        for core in ["purpose", "signature", "validity", "revocation", "weak_crypto"] {
            let e = StrictCheck::parse(core).unwrap_err();
            assert!(e.contains("cannot be relaxed"), "{e}");
        }
        assert!(StrictCheck::parse("key_ids").unwrap_err().contains("key_identifiers"));
        let relaxed = Relaxed::of(&[StrictCheck::KeyIdentifiers, StrictCheck::CrlNumber]);
        assert!(relaxed.allows(StrictCheck::KeyIdentifiers) && !relaxed.allows(StrictCheck::EmptySubject));
        assert_eq!(
            serde_json::to_string(&relaxed).unwrap(),
            r#"["key_identifiers","crl_number"]"#
        );
    }

    #[test]
    fn host_names_follow_rfc_1123() {
        for ok in ["a", "api.example", "x-1.prod.svc", "EXAMPLE.com", "a.b."] {
            assert!(is_host_name(ok), "{ok}");
        }
        for bad in [
            "",
            "_srv.example",
            "a..b",
            "-a.example",
            "a-.example",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn ip_constraints_need_a_prefix_mask() {
        let ip = |b: &[u8]| malformed_constraint(&GeneralName::IPAddress(b));
        assert_eq!(ip(&[10, 0, 0, 0, 255, 0, 0, 0]), None);
        assert_eq!(ip(&[10, 1, 0, 0, 255, 255, 240, 0]), None);
        assert!(ip(&[10, 0, 0, 0, 255, 0, 255, 0]).is_some(), "holes in the mask");
        assert!(ip(&[10, 0, 0, 1, 255, 255, 255, 0]).is_some(), "host bits set");
        assert!(ip(&[10, 0, 0, 0, 255]).is_some(), "wrong length");
    }
}
