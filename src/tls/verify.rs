//! Chain verification against one trust bundle, mapped to phasegate's reasons. Live
//! traffic and `phasegate verify` both come through [`TrustAnchors::verify`].

use std::sync::Arc;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509Crl, X509StoreContext, X509VerifyResult, X509};

use super::memo::FingerprintMemo;
use super::peer::PeerCertificate;
use crate::policy::{ClientEvidence, Identity, Reason};

/// Which extended key usage the leaf must allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RequiredEku {
    #[default]
    ClientAuth,
    ServerAuth,
    Any,
}

/// Limits checked before any signature is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainLimits {
    /// Certificates the client may send, leaf included.
    pub max_presented: usize,
    /// Maximum path length, leaf to anchor, not counting the leaf (as OpenSSL counts).
    pub max_depth: u32,
}

impl Default for ChainLimits {
    fn default() -> Self {
        ChainLimits {
            max_presented: 8,
            max_depth: 5,
        }
    }
}

/// A verified chain; `valid_until` is the earliest notAfter in it, after which the cached
/// result must not be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainOk {
    pub valid_until: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainFailure {
    pub reason: Reason,
    /// What exactly failed, for operators; shared so recording it costs no copy.
    pub detail: Arc<str>,
    /// The chain is genuine although it failed (the leaf is expired or not yet valid, or
    /// misused): its identity can be believed, e.g. to match a dated exemption.
    pub authentic: bool,
}

impl ChainFailure {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        ChainFailure {
            reason,
            detail: detail.into().into(),
            authentic: false,
        }
    }

    fn authentic(mut self) -> Self {
        self.authentic = true;
        self
    }
}

pub type ChainOutcome = Result<ChainOk, ChainFailure>;

/// What a verification outcome tells the policy about the client.
pub fn evidence_of<'a>(outcome: Result<(), &ChainFailure>, peer: &'a PeerCertificate) -> ClientEvidence<'a> {
    match (outcome, &peer.identity) {
        (Ok(()), Ok(identity)) => ClientEvidence::ChainVerified(identity),
        (Err(f), Ok(identity)) => ClientEvidence::ChainFailed {
            reason: f.reason,
            authentic: f.authentic.then_some(identity),
        },
        (Err(f), Err(_)) => ClientEvidence::failed(f.reason),
        // verify() already fails every certificate whose identity did not parse
        (Ok(()), Err(_)) => ClientEvidence::failed(Reason::Malformed),
    }
}

/// A compiled trust bundle: anchors, optional intermediates for path building, CRLs.
pub struct TrustAnchors {
    store: X509Store,
    limits: ChainLimits,
    intermediates: Vec<X509>,
    anchors: Vec<X509>,
    has_crls: bool,
    /// The earliest nextUpdate of the CRLs: no pass is reused past it.
    crls_valid_until: i64,
    /// Chains that verified, by fingerprint, with the time their pass ends: a client that
    /// opens another connection with the same chain is not verified again.
    passed: FingerprintMemo<i64>,
}

/// Remembered passes per bundle; beyond this the memory starts over.
const PASSED_CAP: usize = 16 * 1024;

impl TrustAnchors {
    /// `at` pins the verification time (Unix seconds); `None` verifies at the current time.
    pub fn new(
        anchors: Vec<X509>,
        intermediates: Vec<X509>,
        crls: &[X509Crl],
        limits: ChainLimits,
        tolerate_stale_crls: bool,
        at: Option<i64>,
    ) -> Result<Self, ErrorStack> {
        let mut builder = X509StoreBuilder::new()?;
        for anchor in &anchors {
            builder.add_cert(anchor.clone())?;
        }
        for crl in crls {
            super::ffi::store_add_crl(&mut builder, crl)?;
        }
        // Every certificate in `ca` is an anchor, even an intermediate: trusting a
        // narrower CA than the root is a legitimate choice.
        let mut flags = X509VerifyFlags::PARTIAL_CHAIN;
        if !crls.is_empty() {
            flags |= X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL;
        }
        builder.set_flags(flags)?;
        if tolerate_stale_crls {
            super::ffi::tolerate_stale_crls(&mut builder);
        }
        if let Some(at) = at {
            let mut param = X509VerifyParam::new()?;
            param.set_time(at as _);
            param.set_flags(flags)?;
            builder.set_param(&param)?;
        }
        let crls_valid_until = crls
            .iter()
            .filter_map(|c| c.next_update().and_then(unix_time))
            .min()
            .unwrap_or(i64::MAX);
        Ok(TrustAnchors {
            store: builder.build(),
            limits,
            intermediates,
            anchors,
            has_crls: !crls.is_empty(),
            crls_valid_until,
            passed: FingerprintMemo::new(PASSED_CAP),
        })
    }

    pub fn anchors(&self) -> &[X509] {
        &self.anchors
    }

    pub fn intermediates(&self) -> &[X509] {
        &self.intermediates
    }

    pub fn checks_revocation(&self) -> bool {
        self.has_crls
    }

    /// Verifies the presented chain, then the leaf's own constraints. The first failure
    /// found gives the reason; chain trust comes before leaf usage so that an unknown
    /// certificate is reported as untrusted rather than as misused.
    pub fn verify(&self, peer: &PeerCertificate, eku: RequiredEku) -> ChainOutcome {
        let key = chain_fingerprint(peer, eku);
        let now = unix_now();
        if let Some(valid_until) = key.and_then(|k| self.passed.get(&k)).filter(|until| *until >= now) {
            return Ok(ChainOk { valid_until });
        }
        let outcome = self.verify_uncached(peer, eku);
        if let (Ok(ok), Some(key)) = (&outcome, key) {
            self.passed.remember(key, ok.valid_until);
        }
        outcome
    }

    fn verify_uncached(&self, peer: &PeerCertificate, eku: RequiredEku) -> ChainOutcome {
        let limits = self.limits;
        let identity = match &peer.identity {
            Ok(id) => id,
            Err(detail) => return Err(ChainFailure::new(Reason::Malformed, detail.as_str())),
        };
        let presented = peer.chain.len() + 1;
        if presented > limits.max_presented {
            return Err(ChainFailure::new(
                Reason::Malformed,
                format!("client sent {presented} certificates (limit {})", limits.max_presented),
            ));
        }
        let valid_until = self.verify_path(peer, limits.max_depth)?;
        check_leaf(identity, eku)?;
        Ok(ChainOk {
            valid_until: valid_until.min(self.crls_valid_until),
        })
    }

    fn verify_path(&self, peer: &PeerCertificate, max_depth: u32) -> Result<i64, ChainFailure> {
        let internal = |e: ErrorStack| ChainFailure::new(Reason::Malformed, format!("cannot verify: {e}"));
        let mut untrusted = Stack::new().map_err(internal)?;
        for cert in peer.chain.iter().chain(&self.intermediates) {
            untrusted.push(cert.clone()).map_err(internal)?;
        }
        let mut ctx = X509StoreContext::new().map_err(internal)?;
        ctx.init(&self.store, &peer.leaf, &untrusted, |ctx| {
            if ctx.verify_cert()? {
                let chain = ctx.chain().map(|c| c.iter().collect::<Vec<_>>()).unwrap_or_default();
                let valid_until = chain
                    .iter()
                    .filter_map(|c| unix_time(c.not_after()))
                    .min()
                    .unwrap_or(i64::MAX);
                if chain.len() > max_depth as usize + 1 {
                    return Ok(Err(ChainFailure::new(
                        Reason::BasicConstraints,
                        format!(
                            "chain of {} certificates is deeper than the limit of {}",
                            chain.len(),
                            max_depth + 1
                        ),
                    )));
                }
                Ok(Ok(valid_until))
            } else {
                let depth = ctx.error_depth();
                let subject = ctx
                    .current_cert()
                    .map(super::describe)
                    .unwrap_or_else(|| "certificate".to_string());
                let error = ctx.error();
                let reason = reason_for(error);
                let failure = ChainFailure::new(reason, format!("{} (depth {depth}, {subject})", error.error_string()));
                // OpenSSL checks a certificate's validity period after its chain, trust,
                // revocation and signature: a leaf that fails only on time is genuine.
                let time_only = depth == 0 && matches!(reason, Reason::Expired | Reason::NotYetValid);
                Ok(Err(if time_only { failure.authentic() } else { failure }))
            }
        })
        .map_err(internal)?
    }
}

/// SHA-256 over the leaf, the presented chain and the usage asked for; `None` if a
/// certificate cannot be hashed (then nothing is remembered).
fn chain_fingerprint(peer: &PeerCertificate, eku: RequiredEku) -> Option<[u8; 32]> {
    let mut h = openssl::sha::Sha256::new();
    h.update(&peer.leaf_sha256?);
    for cert in &peer.chain {
        h.update(&cert.digest(openssl::hash::MessageDigest::sha256()).ok()?);
    }
    h.update(&[eku as u8]);
    Some(h.finish())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks on the leaf that OpenSSL's chain verification leaves to the application.
fn check_leaf(id: &Identity, eku: RequiredEku) -> Result<(), ChainFailure> {
    if id.is_ca {
        return Err(ChainFailure::new(
            Reason::BasicConstraints,
            "leaf is a CA certificate (basicConstraints cA=TRUE)",
        )
        .authentic());
    }
    if let Some(usage) = id.eku {
        let ok = usage.any
            || match eku {
                RequiredEku::ClientAuth => usage.client_auth,
                RequiredEku::ServerAuth => usage.server_auth,
                RequiredEku::Any => true,
            };
        if !ok {
            let wanted = match eku {
                RequiredEku::ClientAuth => "clientAuth",
                _ => "serverAuth",
            };
            return Err(ChainFailure::new(
                Reason::EkuMismatch,
                format!("extended key usage {} lacks {wanted}", describe_eku(usage)),
            )
            .authentic());
        }
    }
    if let Some(ku) = id.key_usage {
        if !ku.digital_signature {
            return Err(ChainFailure::new(
                Reason::KeyUsage,
                "key usage lacks digitalSignature, which TLS client authentication needs",
            )
            .authentic());
        }
    }
    Ok(())
}

fn describe_eku(usage: crate::policy::ExtendedKeyUsage) -> String {
    let mut names = Vec::new();
    if usage.server_auth {
        names.push("serverAuth");
    }
    if usage.client_auth {
        names.push("clientAuth");
    }
    if names.is_empty() {
        names.push("(other purposes only)");
    }
    names.join(",")
}

/// OpenSSL's verify errors, grouped into phasegate's reasons.
fn reason_for(error: X509VerifyResult) -> Reason {
    use openssl_sys::*;
    match error.as_raw() {
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
        | X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        | X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        | X509_V_ERR_CERT_UNTRUSTED
        | X509_V_ERR_CERT_REJECTED => Reason::UntrustedIssuer,
        X509_V_ERR_CERT_HAS_EXPIRED => Reason::Expired,
        X509_V_ERR_CERT_NOT_YET_VALID => Reason::NotYetValid,
        X509_V_ERR_CERT_REVOKED => Reason::Revoked,
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
        | X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION => Reason::CrlInvalid,
        X509_V_ERR_CERT_SIGNATURE_FAILURE
        | X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE
        | X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY => Reason::BadSignature,
        X509_V_ERR_INVALID_PURPOSE => Reason::EkuMismatch,
        X509_V_ERR_KEYUSAGE_NO_CERTSIGN | X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE => Reason::KeyUsage,
        X509_V_ERR_INVALID_CA | X509_V_ERR_PATH_LENGTH_EXCEEDED | X509_V_ERR_CERT_CHAIN_TOO_LONG => {
            Reason::BasicConstraints
        }
        X509_V_ERR_PERMITTED_VIOLATION
        | X509_V_ERR_EXCLUDED_VIOLATION
        | X509_V_ERR_SUBTREE_MINMAX
        | X509_V_ERR_UNSUPPORTED_CONSTRAINT_TYPE
        | X509_V_ERR_UNSUPPORTED_CONSTRAINT_SYNTAX
        | X509_V_ERR_UNSUPPORTED_NAME_SYNTAX => Reason::NameConstraints,
        _ => Reason::Malformed,
    }
}

/// Unix seconds of an ASN.1 time.
pub fn unix_time(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(t).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}
