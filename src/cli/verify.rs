//! `phasegate verify`: offline verification of a certificate through the same code as
//! live traffic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::x509::{X509Crl, X509};
use serde::Serialize;

use crate::policy::{decide, AllowEntry, AllowList, Mode, MtlsPolicy, Reason, Snapshot, Verdict};
use crate::tls::{
    evidence_of, read_crls, ChainLimits, ConnectionTls, PeerCertificate, Relaxed, RequiredEku, StrictCheck,
    TrustAnchors, VerifyOptions,
};

/// The JSON printed by `phasegate verify --format json`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub verdict: &'static str,
    pub reason: Option<Reason>,
    pub detail: String,
    pub identity: Option<String>,
}

impl VerifyReport {
    pub fn accepted(&self) -> bool {
        self.verdict == "accept"
    }

    fn from_verdict(verdict: Verdict, detail: Option<&str>, peer: &PeerCertificate) -> Self {
        let identity = peer.identity.as_ref().ok().map(|i| i.display_name());
        match verdict.reason() {
            None => VerifyReport {
                verdict: "accept",
                reason: None,
                detail: "chain verifies and the identity is allowed".to_string(),
                identity,
            },
            Some(reason) => VerifyReport {
                verdict: "reject",
                reason: Some(reason),
                detail: detail
                    .map(str::to_string)
                    .unwrap_or_else(|| default_detail(reason, peer)),
                identity,
            },
        }
    }

    pub fn text(&self) -> String {
        match self.reason {
            None => format!("accept: {} ({})", self.identity.as_deref().unwrap_or("?"), self.detail),
            Some(r) => format!("reject: {r}: {}", self.detail),
        }
    }
}

fn default_detail(reason: Reason, peer: &PeerCertificate) -> String {
    let sans: Vec<String> = peer.identity.as_ref().map(|i| i.sans().collect()).unwrap_or_default();
    match reason {
        Reason::IdentityNotAllowed => format!("no SAN on the allow list (certificate has: {})", join_or_none(&sans)),
        Reason::WildcardSan => format!(
            "wildcard SANs never match an allow entry (certificate has: {})",
            join_or_none(&sans)
        ),
        other => other.as_str().to_string(),
    }
}

fn join_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "no SANs".to_string()
    } else {
        items.join(", ")
    }
}

/// Verifies as route `route` of the config in `dir` would, in enforce mode, now.
pub fn against_route(dir: &Path, route: &str, cert_pem: &[u8]) -> Result<VerifyReport, String> {
    let config = crate::config::load(dir).map_err(|d| format!("invalid configuration:\n{d}"))?;
    let config = Arc::new(config);
    let (_, r) = config
        .route_by_name(route)
        .ok_or_else(|| format!("no route named {route:?}"))?;
    let Some(bundle) = r.trust else {
        return Err(format!(
            "route {route:?} has no trust bundle: it does not evaluate certificates"
        ));
    };
    let peer = PeerCertificate::from_pem(cert_pem)?;
    let snapshot = Snapshot::detached(config.clone());
    // Exactly what a connection presenting this chain would go through.
    let connection = ConnectionTls::new(None, true, Some(peer));
    let evidence = connection.evidence(&snapshot, bundle, crate::proxy::unix_now());
    let detail = evidence.detail.clone();
    let now = crate::proxy::unix_now();
    let verdict = decide(Mode::Enforce, &r.mtls, now, None, || evidence.evidence).verdict;
    match connection.peer.as_deref() {
        Some(peer) => Ok(VerifyReport::from_verdict(verdict, detail.as_deref(), peer)),
        None => Err("certificate was not captured".to_string()),
    }
}

/// Options of `phasegate verify` without a config.
pub struct Standalone {
    pub trust_anchors: PathBuf,
    pub intermediates: Option<PathBuf>,
    pub crls: Vec<PathBuf>,
    /// Unix seconds; `None` for now.
    pub at: Option<i64>,
    pub allow: Vec<AllowEntry>,
    pub require_eku: RequiredEku,
    pub max_depth: Option<u32>,
    /// `false` skips validity periods (archived chains).
    pub check_time: bool,
    /// Strict profile checks to relax, as a trust bundle's `relax` would.
    pub relax: Vec<StrictCheck>,
}

pub fn standalone(opts: &Standalone, cert_pem: &[u8]) -> Result<VerifyReport, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let certs = |p: &Path| -> Result<Vec<X509>, String> {
        let certs =
            X509::stack_from_pem(&read(p)?).map_err(|e| format!("{}: not PEM certificates: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate found", p.display()));
        }
        Ok(certs)
    };
    let anchors = certs(&opts.trust_anchors)?;
    let intermediates = match &opts.intermediates {
        Some(p) => certs(p)?,
        None => Vec::new(),
    };
    let mut crls: Vec<X509Crl> = Vec::new();
    for path in &opts.crls {
        let entries = read_crls(&read(path)?).map_err(|e| format!("{} {e}", path.display()))?;
        crls.extend(entries.into_iter().map(|e| e.crl));
    }
    let mut limits = ChainLimits::default();
    if let Some(depth) = opts.max_depth {
        limits.max_depth = depth;
    }
    let options = VerifyOptions {
        limits,
        relaxed: Relaxed::of(&opts.relax),
        at: opts.at,
        check_time: opts.check_time,
        ..VerifyOptions::default()
    };
    let anchors = TrustAnchors::new(anchors, intermediates, &crls, options)
        .map_err(|e| format!("cannot build trust store: {e}"))?;
    let peer = PeerCertificate::from_pem(cert_pem)?;
    let outcome = anchors.verify(&peer, opts.require_eku);
    let detail = outcome.as_ref().err().map(|f| f.detail.clone());
    let policy = MtlsPolicy {
        allow: AllowList(opts.allow.clone()),
        ..MtlsPolicy::default()
    };
    let evidence = evidence_of(outcome.as_ref().map(|_| ()), &peer);
    let verdict = decide(
        Mode::Enforce,
        &policy,
        opts.at.unwrap_or_else(crate::proxy::unix_now),
        None,
        || evidence,
    )
    .verdict;
    Ok(VerifyReport::from_verdict(verdict, detail.as_deref(), &peer))
}
