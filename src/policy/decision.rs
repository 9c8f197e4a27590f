use std::net::IpAddr;

use serde::Serialize;

use super::staging::{percentile, Exemption};
use super::{AllowList, Identity, Mode, Reason};

/// What the TLS layer established about a client for one trust bundle.
#[derive(Clone, Copy, Debug)]
pub enum ClientEvidence<'a> {
    /// No certificate was presented (or none was asked for).
    NoCertificate,
    /// A certificate was presented and failed. `authentic` is its identity when the chain
    /// is nevertheless genuine (it failed only on time or usage), else `None`.
    ChainFailed {
        reason: Reason,
        authentic: Option<&'a Identity>,
    },
    /// The chain verifies against the bundle; the identity can be believed.
    ChainVerified(&'a Identity),
}

impl<'a> ClientEvidence<'a> {
    pub fn failed(reason: Reason) -> Self {
        ClientEvidence::ChainFailed {
            reason,
            authentic: None,
        }
    }

    /// The identity that can be believed, if any.
    pub fn authentic(&self) -> Option<&'a Identity> {
        match self {
            ClientEvidence::ChainVerified(id) => Some(id),
            ClientEvidence::ChainFailed { authentic, .. } => *authentic,
            ClientEvidence::NoCertificate => None,
        }
    }
}

/// The mTLS part of a route: whom it accepts and how enforcement is staged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MtlsPolicy {
    pub allow: AllowList,
    /// Enforce for this share of clients (by stable hash), audit for the rest.
    pub enforce_percent: Option<u8>,
    pub exemptions: Vec<Exemption>,
}

/// The outcome for one request. A denial is a verdict, not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The certificate verifies and its identity is allowed.
    Pass,
    /// The route is `off`: nothing was evaluated.
    NotEvaluated,
    /// Passed only because the route audits; would be rejected for this reason.
    WouldReject(Reason),
    /// `soft-fail` without a certificate: passed as unauthenticated.
    Unauthenticated,
    /// Rejected with 403.
    Reject(Reason),
    /// Would be rejected for this reason, but an exemption lets it pass.
    Exempt(Reason),
}

impl Verdict {
    /// Clean passes are counted but not recorded as would-be-rejected.
    pub fn is_clean_pass(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::NotEvaluated)
    }

    /// Would enforce reject this request? (What readiness measures; exempt clients
    /// would pass, so they do not count.)
    pub fn would_be_rejected(self) -> bool {
        matches!(
            self,
            Verdict::WouldReject(_) | Verdict::Unauthenticated | Verdict::Reject(_)
        )
    }

    pub fn lets_request_through(self) -> bool {
        !matches!(self, Verdict::Reject(_))
    }

    /// The reason enforce mode would give; `None` for a clean pass.
    pub fn reason(self) -> Option<Reason> {
        match self {
            Verdict::Pass | Verdict::NotEvaluated => None,
            Verdict::Unauthenticated => Some(Reason::NoCert),
            Verdict::WouldReject(r) | Verdict::Reject(r) | Verdict::Exempt(r) => Some(r),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::NotEvaluated => "not_evaluated",
            Verdict::WouldReject(_) => "would_reject",
            Verdict::Unauthenticated => "unauthenticated",
            Verdict::Reject(_) => "reject",
            Verdict::Exempt(_) => "exempt",
        }
    }

    /// The inverse of [`Verdict::label`] given the reason (for stored records).
    pub fn from_label(label: &str, reason: Option<Reason>) -> Option<Verdict> {
        Some(match (label, reason) {
            ("pass", _) => Verdict::Pass,
            ("not_evaluated", _) => Verdict::NotEvaluated,
            ("unauthenticated", _) => Verdict::Unauthenticated,
            ("would_reject", Some(r)) => Verdict::WouldReject(r),
            ("reject", Some(r)) => Verdict::Reject(r),
            ("exempt", Some(r)) => Verdict::Exempt(r),
            _ => return None,
        })
    }

    /// The `x-mtls-verdict` header sent to the backend. Only `pass` means the gateway
    /// authenticated the client.
    pub fn header_value(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::NotEvaluated | Verdict::Unauthenticated => "unauthenticated",
            Verdict::WouldReject(r) => r.would_reject_header(),
            Verdict::Exempt(_) => "exempt",
            Verdict::Reject(_) => "reject",
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// A verdict and the mode it was reached under (a staged route audits some clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub mode: Mode,
}

/// The mode table of the README, as code, with staged enforcement on top. `evidence` is
/// only asked for when the mode evaluates anything, so `off` routes cost no verification.
pub fn decide<'a>(
    mode: Mode,
    policy: &MtlsPolicy,
    now: i64,
    addr: Option<IpAddr>,
    evidence: impl FnOnce() -> ClientEvidence<'a>,
) -> Decision {
    if mode == Mode::Off {
        return Decision {
            verdict: Verdict::NotEvaluated,
            mode,
        };
    }
    let evidence = evidence();
    let reason = match evidence {
        ClientEvidence::NoCertificate => Reason::NoCert,
        ClientEvidence::ChainFailed { reason, .. } => reason,
        ClientEvidence::ChainVerified(identity) => match policy.allow.check(identity) {
            Ok(()) => {
                return Decision {
                    verdict: Verdict::Pass,
                    mode,
                }
            }
            Err(reason) => reason,
        },
    };
    let authentic = evidence.authentic();
    let mode = staged_mode(mode, policy, authentic, addr);
    let exempt = reason != Reason::Revoked
        && policy
            .exemptions
            .iter()
            .any(|e| e.is_active(now) && e.covers(authentic, addr));
    let verdict = match (mode, reason) {
        _ if exempt => Verdict::Exempt(reason),
        (Mode::Audit, r) => Verdict::WouldReject(r),
        (Mode::SoftFail, Reason::NoCert) => Verdict::Unauthenticated,
        (_, r) => Verdict::Reject(r),
    };
    Decision { verdict, mode }
}

/// With `enforce_percent`, clients outside the percentage are audited. Clients are placed
/// by authentic identity, else by source address: an unverifiable certificate cannot
/// choose its bucket.
fn staged_mode(mode: Mode, policy: &MtlsPolicy, authentic: Option<&Identity>, addr: Option<IpAddr>) -> Mode {
    let Some(percent) = policy.enforce_percent else {
        return mode;
    };
    if !matches!(mode, Mode::SoftFail | Mode::Enforce) {
        return mode;
    }
    let p = match (authentic, addr) {
        (Some(id), _) => percentile(id.display_name().as_bytes()),
        (None, Some(IpAddr::V4(a))) => percentile(&a.octets()),
        (None, Some(IpAddr::V6(a))) => percentile(&a.octets()),
        (None, None) => 0,
    };
    if p < percent {
        mode
    } else {
        Mode::Audit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::staging::ExemptClient;
    use crate::policy::AllowEntry;

    fn allow_checkout() -> MtlsPolicy {
        MtlsPolicy {
            allow: AllowList(vec![AllowEntry::Uri("spiffe://corp/checkout".into())]),
            ..Default::default()
        }
    }

    fn id(uri: &str) -> Identity {
        Identity {
            uris: vec![uri.into()],
            ..Identity::default()
        }
    }

    fn verdict(mode: Mode, policy: &MtlsPolicy, e: ClientEvidence) -> Verdict {
        decide(mode, policy, 0, None, || e).verdict
    }

    #[test]
    fn the_mode_table_holds_for_every_kind_of_client() {
        let ok = id("spiffe://corp/checkout");
        let other = id("spiffe://corp/other");
        use ClientEvidence::*;
        use Verdict::*;
        let expired = ClientEvidence::failed(Reason::Expired);
        let cases: [(Mode, ClientEvidence, Verdict); 16] = [
            (Mode::Off, NoCertificate, NotEvaluated),
            (Mode::Off, expired, NotEvaluated),
            (Mode::Off, ChainVerified(&other), NotEvaluated),
            (Mode::Off, ChainVerified(&ok), NotEvaluated),
            (Mode::Audit, NoCertificate, WouldReject(Reason::NoCert)),
            (Mode::Audit, expired, WouldReject(Reason::Expired)),
            (
                Mode::Audit,
                ChainVerified(&other),
                WouldReject(Reason::IdentityNotAllowed),
            ),
            (Mode::Audit, ChainVerified(&ok), Pass),
            (Mode::SoftFail, NoCertificate, Unauthenticated),
            (
                Mode::SoftFail,
                ClientEvidence::failed(Reason::Revoked),
                Reject(Reason::Revoked),
            ),
            (
                Mode::SoftFail,
                ChainVerified(&other),
                Reject(Reason::IdentityNotAllowed),
            ),
            (Mode::SoftFail, ChainVerified(&ok), Pass),
            (Mode::Enforce, NoCertificate, Reject(Reason::NoCert)),
            (
                Mode::Enforce,
                ClientEvidence::failed(Reason::UntrustedIssuer),
                Reject(Reason::UntrustedIssuer),
            ),
            (Mode::Enforce, ChainVerified(&other), Reject(Reason::IdentityNotAllowed)),
            (Mode::Enforce, ChainVerified(&ok), Pass),
        ];
        for (mode, evidence, expected) in cases {
            assert_eq!(
                verdict(mode, &allow_checkout(), evidence),
                expected,
                "{mode} with {evidence:?}"
            );
        }
    }

    #[test]
    fn off_routes_never_ask_for_evidence() {
        let d = decide(Mode::Off, &MtlsPolicy::default(), 0, None, || {
            panic!("evidence computed for an off route")
        });
        assert_eq!(d.verdict, Verdict::NotEvaluated);
    }

    #[test]
    fn only_a_real_pass_tells_the_backend_pass() {
        assert_eq!(Verdict::Pass.header_value(), "pass");
        assert_eq!(Verdict::NotEvaluated.header_value(), "unauthenticated");
        assert_eq!(Verdict::Unauthenticated.header_value(), "unauthenticated");
        assert_eq!(
            Verdict::WouldReject(Reason::NoCert).header_value(),
            "would-reject; reason=no_cert"
        );
    }

    fn exempting(who: ExemptClient, until: i64) -> MtlsPolicy {
        MtlsPolicy {
            exemptions: vec![Exemption {
                who,
                until,
                reason: "legacy batch job".into(),
            }],
            ..allow_checkout()
        }
    }

    #[test]
    fn exemptions_apply_before_their_date_and_not_after() {
        let batch = id("spiffe://corp/legacy-batch");
        let policy = exempting(
            ExemptClient::Identity(AllowEntry::Uri("spiffe://corp/legacy-batch".into())),
            1_000,
        );
        let e = || ClientEvidence::ChainVerified(&batch);
        assert_eq!(
            decide(Mode::Enforce, &policy, 999, None, e).verdict,
            Verdict::Exempt(Reason::IdentityNotAllowed)
        );
        assert_eq!(
            decide(Mode::Enforce, &policy, 1_000, None, e).verdict,
            Verdict::Reject(Reason::IdentityNotAllowed)
        );
    }

    #[test]
    fn identity_exemptions_need_an_authentic_certificate_and_never_cover_revocation() {
        let batch = id("spiffe://corp/legacy-batch");
        let policy = exempting(
            ExemptClient::Identity(AllowEntry::Uri("spiffe://corp/legacy-batch".into())),
            i64::MAX,
        );
        let forged = ClientEvidence::ChainFailed {
            reason: Reason::UntrustedIssuer,
            authentic: None,
        };
        assert_eq!(
            verdict(Mode::Enforce, &policy, forged),
            Verdict::Reject(Reason::UntrustedIssuer)
        );
        let expired = ClientEvidence::ChainFailed {
            reason: Reason::Expired,
            authentic: Some(&batch),
        };
        assert_eq!(
            verdict(Mode::Enforce, &policy, expired),
            Verdict::Exempt(Reason::Expired)
        );
        let net = exempting(ExemptClient::Cidr("10.1.2.0/24".parse().unwrap()), i64::MAX);
        let addr = Some("10.1.2.9".parse().unwrap());
        let d = decide(Mode::Enforce, &net, 0, addr, || ClientEvidence::NoCertificate);
        assert_eq!(d.verdict, Verdict::Exempt(Reason::NoCert));
        let d = decide(Mode::Enforce, &net, 0, addr, || ClientEvidence::failed(Reason::Revoked));
        assert_eq!(d.verdict, Verdict::Reject(Reason::Revoked));
        let d = decide(Mode::Enforce, &net, 0, Some("10.1.3.9".parse().unwrap()), || {
            ClientEvidence::NoCertificate
        });
        assert_eq!(d.verdict, Verdict::Reject(Reason::NoCert));
    }

    #[test]
    fn enforce_percent_is_sticky_and_close_to_n_percent_over_10000_clients() {
        let policy = MtlsPolicy {
            enforce_percent: Some(30),
            ..allow_checkout()
        };
        let identities: Vec<Identity> = (0..10_000)
            .map(|i| id(&format!("spiffe://corp/ns/prod/sa/svc-{i}")))
            .collect();
        let enforced = |i: &Identity| {
            decide(Mode::Enforce, &policy, 0, None, || ClientEvidence::ChainVerified(i)).mode == Mode::Enforce
        };
        let first: Vec<bool> = identities.iter().map(enforced).collect();
        let second: Vec<bool> = identities.iter().map(enforced).collect();
        assert_eq!(first, second, "the same clients each time");
        let n = first.iter().filter(|e| **e).count();
        assert!((2_800..=3_200).contains(&n), "{n} of 10,000 enforced at 30%");
        // an allowed client passes whatever its bucket
        let ok = id("spiffe://corp/checkout");
        assert_eq!(
            verdict(Mode::Enforce, &policy, ClientEvidence::ChainVerified(&ok)),
            Verdict::Pass
        );
    }
}
