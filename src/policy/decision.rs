use serde::Serialize;

use super::{AllowList, Identity, Mode, Reason};

/// What the TLS layer established about a client for one trust bundle.
#[derive(Clone, Copy, Debug)]
pub enum ClientEvidence<'a> {
    /// No certificate was presented (or none was asked for).
    NoCertificate,
    /// A certificate was presented and failed before identity could be trusted.
    ChainFailed(Reason),
    /// The chain verifies against the bundle; the identity can be believed.
    ChainVerified(&'a Identity),
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
}

impl Verdict {
    /// Clean passes are counted but not recorded as would-be-rejected.
    pub fn is_clean_pass(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::NotEvaluated)
    }

    pub fn lets_request_through(self) -> bool {
        !matches!(self, Verdict::Reject(_))
    }

    /// The reason enforce mode would give; `None` for a clean pass.
    pub fn reason(self) -> Option<Reason> {
        match self {
            Verdict::Pass | Verdict::NotEvaluated => None,
            Verdict::Unauthenticated => Some(Reason::NoCert),
            Verdict::WouldReject(r) | Verdict::Reject(r) => Some(r),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::NotEvaluated => "not_evaluated",
            Verdict::WouldReject(_) => "would_reject",
            Verdict::Unauthenticated => "unauthenticated",
            Verdict::Reject(_) => "reject",
        }
    }

    /// The `x-mtls-verdict` header sent to the backend. Only `pass` means the gateway
    /// authenticated the client.
    pub fn header_value(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::NotEvaluated | Verdict::Unauthenticated => "unauthenticated",
            Verdict::WouldReject(r) => r.would_reject_header(),
            Verdict::Reject(_) => "reject",
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// The mode table of the README, as code. `evidence` is only asked for when the mode
/// evaluates anything, so `off` routes cost no verification.
pub fn decide<'a>(mode: Mode, allow: &AllowList, evidence: impl FnOnce() -> ClientEvidence<'a>) -> Verdict {
    if mode == Mode::Off {
        return Verdict::NotEvaluated;
    }
    let outcome = match evidence() {
        ClientEvidence::NoCertificate => Err(Reason::NoCert),
        ClientEvidence::ChainFailed(reason) => Err(reason),
        ClientEvidence::ChainVerified(identity) => allow.check(identity),
    };
    match (mode, outcome) {
        (_, Ok(())) => Verdict::Pass,
        (Mode::Audit, Err(reason)) => Verdict::WouldReject(reason),
        (Mode::SoftFail, Err(Reason::NoCert)) => Verdict::Unauthenticated,
        (_, Err(reason)) => Verdict::Reject(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AllowEntry;

    fn allow_checkout() -> AllowList {
        AllowList(vec![AllowEntry::Uri("spiffe://corp/checkout".into())])
    }

    fn checkout() -> Identity {
        Identity {
            uris: vec!["spiffe://corp/checkout".into()],
            ..Identity::default()
        }
    }

    #[test]
    fn the_mode_table_holds_for_every_kind_of_client() {
        let ok = checkout();
        let other = Identity {
            uris: vec!["spiffe://corp/other".into()],
            ..Identity::default()
        };
        use ClientEvidence::*;
        use Verdict::*;
        let cases: [(Mode, ClientEvidence, Verdict); 16] = [
            (Mode::Off, NoCertificate, NotEvaluated),
            (Mode::Off, ChainFailed(Reason::Expired), NotEvaluated),
            (Mode::Off, ChainVerified(&other), NotEvaluated),
            (Mode::Off, ChainVerified(&ok), NotEvaluated),
            (Mode::Audit, NoCertificate, WouldReject(Reason::NoCert)),
            (Mode::Audit, ChainFailed(Reason::Expired), WouldReject(Reason::Expired)),
            (
                Mode::Audit,
                ChainVerified(&other),
                WouldReject(Reason::IdentityNotAllowed),
            ),
            (Mode::Audit, ChainVerified(&ok), Pass),
            (Mode::SoftFail, NoCertificate, Unauthenticated),
            (Mode::SoftFail, ChainFailed(Reason::Revoked), Reject(Reason::Revoked)),
            (
                Mode::SoftFail,
                ChainVerified(&other),
                Reject(Reason::IdentityNotAllowed),
            ),
            (Mode::SoftFail, ChainVerified(&ok), Pass),
            (Mode::Enforce, NoCertificate, Reject(Reason::NoCert)),
            (
                Mode::Enforce,
                ChainFailed(Reason::UntrustedIssuer),
                Reject(Reason::UntrustedIssuer),
            ),
            (Mode::Enforce, ChainVerified(&other), Reject(Reason::IdentityNotAllowed)),
            (Mode::Enforce, ChainVerified(&ok), Pass),
        ];
        for (mode, evidence, expected) in cases {
            assert_eq!(
                decide(mode, &allow_checkout(), || evidence),
                expected,
                "{mode} with {evidence:?}"
            );
        }
    }

    #[test]
    fn off_routes_never_ask_for_evidence() {
        let v = decide(Mode::Off, &AllowList::default(), || {
            panic!("evidence computed for an off route")
        });
        assert_eq!(v, Verdict::NotEvaluated);
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
}
