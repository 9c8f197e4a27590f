//! Chain verification against one trust bundle, mapped to phasegate's reasons. Live
//! traffic and `phasegate verify` both come through [`TrustAnchors::verify`].

use std::sync::Arc;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509Crl, X509Ref, X509StoreContext, X509};

use super::memo::FingerprintMemo;
use super::peer::PeerCertificate;
use super::strict::{self, Relaxed, StrictCheck};
use crate::policy::{ClientEvidence, Identity, Reason};

/// Which extended key usage the leaf must allow: the purpose every certificate of the path
/// is checked for (a CA restricted to server certificates does not vouch for clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RequiredEku {
    #[default]
    ClientAuth,
    ServerAuth,
    Any,
}

impl RequiredEku {
    fn purpose(self) -> std::os::raw::c_int {
        match self {
            RequiredEku::ClientAuth => openssl_sys::X509_PURPOSE_SSL_CLIENT,
            RequiredEku::ServerAuth => openssl_sys::X509_PURPOSE_SSL_SERVER,
            RequiredEku::Any => openssl_sys::X509_PURPOSE_ANY,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RequiredEku::ClientAuth => "clientAuth",
            RequiredEku::ServerAuth => "serverAuth",
            RequiredEku::Any => "any purpose",
        }
    }
}

/// Limits checked before any signature is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainLimits {
    /// Certificates the client may send, leaf included.
    pub max_presented: usize,
    /// Intermediate CAs allowed between the leaf and the trust anchor, counted as OpenSSL's
    /// `verify_depth` counts them: 0 accepts a leaf issued by the anchor itself.
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

/// How a bundle verifies, beyond its certificates and CRLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyOptions {
    pub limits: ChainLimits,
    /// Strict checks this bundle relaxes (a legacy PKI); nothing else is relaxable.
    pub relaxed: Relaxed,
    /// A CRL past its nextUpdate still revokes what it lists but fails nobody else.
    pub tolerate_stale_crls: bool,
    /// Pins the verification time (Unix seconds); `None` verifies at the current time.
    pub at: Option<i64>,
    /// `false` skips validity periods (offline checks of archived chains).
    pub check_time: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            limits: ChainLimits::default(),
            relaxed: Relaxed::default(),
            tolerate_stale_crls: false,
            at: None,
            check_time: true,
        }
    }
}

/// The security level verification demands of every key and signature of the path:
/// level 2 is 112 bits (RSA and DSA ≥ 2048 bits, ECC ≥ 224 bits, no SHA-1 signatures).
const AUTH_SECURITY_LEVEL: i32 = 2;

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

/// A compiled trust bundle: anchors, optional intermediates for path building, CRLs, and
/// the strict profile every path is held to.
pub struct TrustAnchors {
    store: X509Store,
    options: VerifyOptions,
    intermediates: Vec<X509>,
    anchors: Vec<X509>,
    has_crls: bool,
    /// Issuers (DER names) of CRLs without a CRL number: paths they cover fail the
    /// `crl_number` check.
    numberless_crl_issuers: Vec<Vec<u8>>,
    /// The earliest nextUpdate of the CRLs: no pass is reused past it.
    crls_valid_until: i64,
    /// Chains that verified, by fingerprint, with the time their pass ends: a client that
    /// opens another connection with the same chain is not verified again.
    passed: FingerprintMemo<i64>,
}

/// Remembered passes per bundle; beyond this the memory starts over.
const PASSED_CAP: usize = 16 * 1024;

impl TrustAnchors {
    pub fn new(
        anchors: Vec<X509>,
        intermediates: Vec<X509>,
        crls: &[X509Crl],
        options: VerifyOptions,
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
        let mut flags = X509VerifyFlags::PARTIAL_CHAIN | X509VerifyFlags::X509_STRICT;
        if !crls.is_empty() {
            flags |= X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL;
        }
        if !options.check_time {
            flags |= X509VerifyFlags::NO_CHECK_TIME;
        }
        let mut param = X509VerifyParam::new()?;
        param.set_flags(flags)?;
        param.set_auth_level(AUTH_SECURITY_LEVEL);
        param.set_depth(options.limits.max_depth as _);
        if let Some(at) = options.at {
            param.set_time(at as _);
        }
        builder.set_param(&param)?;
        let crls_valid_until = crls
            .iter()
            .filter_map(|c| c.next_update().and_then(unix_time))
            .min()
            .unwrap_or(i64::MAX);
        let numberless_crl_issuers = crls
            .iter()
            .filter(|c| !crl_has_number(c))
            .filter_map(|c| c.issuer_name().to_der().ok())
            .collect();
        Ok(TrustAnchors {
            store: builder.build(),
            options,
            intermediates,
            anchors,
            has_crls: !crls.is_empty(),
            numberless_crl_issuers,
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

    /// The strict checks this bundle relaxes.
    pub fn relaxed(&self) -> Relaxed {
        self.options.relaxed
    }

    /// Intermediates allowed between a leaf and an anchor.
    pub fn max_depth(&self) -> u32 {
        self.options.limits.max_depth
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
        let limits = self.options.limits;
        let identity = match &peer.identity {
            Ok(id) => id,
            Err(detail) => return Err(ChainFailure::new(Reason::Malformed, detail.as_str())),
        };
        let presented = peer.chain.len() + 1;
        if presented > limits.max_presented {
            return Err(ChainFailure::new(
                Reason::ChainTooLong,
                format!("client sent {presented} certificates (limit {})", limits.max_presented),
            ));
        }
        let verified = self.verify_path(peer, eku)?;
        match verified.deferred {
            Some(time) if matches!(time.reason, Reason::Expired | Reason::NotYetValid) => Err(time),
            deferred => {
                check_leaf(identity, eku)?;
                // OpenSSL's purpose check failed on the leaf for a reason check_leaf does
                // not name (e.g. a Netscape certificate type)
                deferred.map_or(
                    Ok(ChainOk {
                        valid_until: verified.valid_until.min(self.crls_valid_until),
                    }),
                    Err,
                )
            }
        }
    }

    /// OpenSSL's verification (strict, for the purpose, at the bundle's security level),
    /// then phasegate's own profile checks on the verified path. Failures of the leaf alone
    /// that say nothing against the chain (its validity period, its purpose) are deferred
    /// to the end, so that a failure reported as genuine had every signature checked.
    fn verify_path(&self, peer: &PeerCertificate, eku: RequiredEku) -> Result<VerifiedPath, ChainFailure> {
        let internal = |e: ErrorStack| ChainFailure::new(Reason::Malformed, format!("cannot verify: {e}"));
        let mut untrusted = Stack::new().map_err(internal)?;
        for cert in peer.chain.iter().chain(&self.intermediates) {
            untrusted.push(cert.clone()).map_err(internal)?;
        }
        let options = self.options;
        let mut deferred_leaf_error: Option<i32> = None;
        let mut hook = |error: i32, depth: u32| -> bool {
            use openssl_sys::*;
            if options.tolerate_stale_crls && matches!(error, X509_V_ERR_CRL_HAS_EXPIRED | X509_V_ERR_CRL_NOT_YET_VALID)
            {
                return true;
            }
            if let (_, Some(check)) = strict::classify(error) {
                if options.relaxed.allows(check) {
                    return true;
                }
            }
            let leaf_only = matches!(
                error,
                X509_V_ERR_CERT_HAS_EXPIRED | X509_V_ERR_CERT_NOT_YET_VALID | X509_V_ERR_INVALID_PURPOSE
            );
            if depth == 0 && leaf_only {
                deferred_leaf_error.get_or_insert(error);
                return true;
            }
            false
        };
        let mut ctx = X509StoreContext::new().map_err(internal)?;
        let outcome = ctx
            .init(&self.store, &peer.leaf, &untrusted, |ctx| {
                if !super::ffi::verify_cert_with_hook(ctx, eku.purpose(), &mut hook)? {
                    return Ok(Err(failure_at(
                        ctx.error().as_raw(),
                        ctx.error_depth(),
                        ctx.current_cert(),
                        eku,
                    )));
                }
                let chain: Vec<X509> = ctx
                    .chain()
                    .map(|c| c.iter().map(|x| x.to_owned()).collect())
                    .unwrap_or_default();
                Ok(Ok(chain))
            })
            .map_err(internal)?;
        let chain = outcome?;
        let max_len = options.limits.max_depth as usize + 2;
        if chain.len() > max_len {
            return Err(ChainFailure::new(
                Reason::ChainTooLong,
                format!(
                    "path of {} certificates has {} intermediates (limit {})",
                    chain.len(),
                    chain.len().saturating_sub(2),
                    options.limits.max_depth
                ),
            ));
        }
        self.check_profile(&chain)?;
        let valid_until = chain
            .iter()
            .filter_map(|c| unix_time(c.not_after()))
            .min()
            .unwrap_or(i64::MAX);
        let leaf = chain.first().map(|c| &**c);
        let deferred = deferred_leaf_error.map(|error| failure_at(error, 0, leaf, eku).authentic());
        Ok(VerifiedPath { valid_until, deferred })
    }

    /// phasegate's own checks on a path OpenSSL accepted.
    fn check_profile(&self, chain: &[X509]) -> Result<(), ChainFailure> {
        let relaxed = self.options.relaxed;
        for (depth, cert) in chain.iter().enumerate() {
            if let Err(v) = strict::check_certificate(cert, depth, relaxed) {
                return Err(ChainFailure::new(
                    v.reason,
                    profile_detail(&v.message, v.check, depth, cert),
                ));
            }
            if !relaxed.allows(StrictCheck::CrlNumber) && !self.numberless_crl_issuers.is_empty() {
                let issuer = cert.issuer_name().to_der().unwrap_or_default();
                if self.numberless_crl_issuers.contains(&issuer) {
                    let message = format!(
                        "is covered by a CRL of {} without a CRL number (RFC 5280 5.2.3)",
                        super::describe_name(cert.issuer_name())
                    );
                    return Err(ChainFailure::new(
                        Reason::CrlInvalid,
                        profile_detail(&message, Some(StrictCheck::CrlNumber), depth, cert),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What OpenSSL accepted, with a failure of the leaf alone kept for last.
struct VerifiedPath {
    valid_until: i64,
    deferred: Option<ChainFailure>,
}

/// The failure for an OpenSSL verify error on the certificate at `depth`.
fn failure_at(error: i32, depth: u32, cert: Option<&X509Ref>, eku: RequiredEku) -> ChainFailure {
    let (reason, check) = strict::classify(error);
    let subject = cert.map(super::describe).unwrap_or_else(|| "certificate".to_string());
    let text = super::ffi::verify_error_string(error);
    let mut detail = format!("{text} (depth {depth}, {subject})");
    if error == openssl_sys::X509_V_ERR_INVALID_PURPOSE && depth > 0 {
        detail = format!(
            "CA at depth {depth} ({subject}) may not vouch for {} certificates: its extended key usage or certificate type excludes that purpose",
            eku.name()
        );
    }
    if let Some(check) = check {
        detail.push_str(&format!(
            "; strict profile check {check}, which a trust bundle can relax (trust_bundles.NAME.relax)"
        ));
    }
    ChainFailure::new(reason, detail)
}

fn profile_detail(message: &str, check: Option<StrictCheck>, depth: usize, cert: &X509Ref) -> String {
    let mut detail = format!("certificate at depth {depth} ({}) {message}", super::describe(cert));
    if let Some(check) = check {
        detail.push_str(&format!(
            "; strict profile check {check}, which a trust bundle can relax (trust_bundles.NAME.relax)"
        ));
    }
    detail
}

/// Whether a CRL carries the cRLNumber extension.
fn crl_has_number(crl: &X509Crl) -> bool {
    use x509_parser::prelude::FromDer;
    let Ok(der) = crl.to_der() else { return false };
    x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
        .map(|(_, parsed)| parsed.crl_number().is_some())
        .unwrap_or(false)
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
            return Err(ChainFailure::new(
                Reason::EkuMismatch,
                format!("extended key usage {} lacks {}", describe_eku(usage), eku.name()),
            )
            .authentic());
        }
    }
    if let (Some(ku), RequiredEku::ClientAuth) = (id.key_usage, eku) {
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

/// Unix seconds of an ASN.1 time.
pub fn unix_time(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(t).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}
