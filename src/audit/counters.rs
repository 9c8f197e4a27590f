use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::{Decision, Mode, Reason, Verdict};

const REASONS: usize = Reason::ALL.len() + 1;
const SLOTS: usize = Mode::ALL.len() * REASONS * 2;

/// Per-route request counters, shared by every snapshot that has the route (they are
/// keyed by route name, so they survive reloads). Relaxed atomics: they are statistics.
#[derive(Debug)]
pub struct RouteCounters {
    pub requests: AtomicU64,
    /// Requests enforce would reject (exempt clients excluded).
    pub would_reject: AtomicU64,
    pub rejected: AtomicU64,
    /// By (mode applied, reason or none, exempt): the verdict follows from these.
    outcomes: [AtomicU64; SLOTS],
}

impl Default for RouteCounters {
    fn default() -> Self {
        RouteCounters {
            requests: AtomicU64::new(0),
            would_reject: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn mode_index(mode: Mode) -> usize {
    Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0)
}

fn reason_index(reason: Option<Reason>) -> usize {
    reason
        .and_then(|r| Reason::ALL.iter().position(|x| *x == r))
        .map_or(0, |i| i + 1)
}

/// The verdict a (mode, reason, exempt) slot stands for.
fn verdict_of(mode: Mode, reason: Option<Reason>, exempt: bool) -> Verdict {
    match (reason, exempt) {
        (Some(r), true) => Verdict::Exempt(r),
        (None, _) if mode == Mode::Off => Verdict::NotEvaluated,
        (None, _) => Verdict::Pass,
        (Some(r), false) => match mode {
            Mode::Audit | Mode::Off => Verdict::WouldReject(r),
            Mode::SoftFail if r == Reason::NoCert => Verdict::Unauthenticated,
            _ => Verdict::Reject(r),
        },
    }
}

impl RouteCounters {
    pub fn count(&self, decision: Decision) {
        let verdict = decision.verdict;
        self.requests.fetch_add(1, Ordering::Relaxed);
        if verdict.would_be_rejected() {
            self.would_reject.fetch_add(1, Ordering::Relaxed);
        }
        if !verdict.lets_request_through() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        let exempt = matches!(verdict, Verdict::Exempt(_));
        let slot = (mode_index(decision.mode) * REASONS + reason_index(verdict.reason())) * 2 + usize::from(exempt);
        self.outcomes[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.would_reject.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// Non-zero counts by (mode applied, verdict): the labels of `phasegate_requests_total`.
    pub fn outcomes(&self) -> Vec<(Mode, Verdict, u64)> {
        let mut v = Vec::new();
        for (m, mode) in Mode::ALL.iter().enumerate() {
            for r in 0..REASONS {
                let reason = (r > 0).then(|| Reason::ALL[r - 1]);
                for exempt in [false, true] {
                    let n = self.outcomes[(m * REASONS + r) * 2 + usize::from(exempt)].load(Ordering::Relaxed);
                    if n > 0 {
                        v.push((*mode, verdict_of(*mode, reason, exempt), n));
                    }
                }
            }
        }
        v
    }
}

/// Handshakes completed on the listeners, and how many asked for / got a client certificate.
#[derive(Debug, Default)]
pub struct HandshakeCounters {
    pub completed: AtomicU64,
    pub client_cert_requested: AtomicU64,
    pub client_cert_presented: AtomicU64,
}

impl HandshakeCounters {
    pub fn count(&self, requested: bool, presented: bool) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if requested {
            self.client_cert_requested.fetch_add(1, Ordering::Relaxed);
        }
        if presented {
            self.client_cert_presented.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn totals(&self) -> HandshakeTotals {
        HandshakeTotals {
            completed: self.completed.load(Ordering::Relaxed),
            client_cert_requested: self.client_cert_requested.load(Ordering::Relaxed),
            client_cert_presented: self.client_cert_presented.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HandshakeTotals {
    pub completed: u64,
    pub client_cert_requested: u64,
    pub client_cert_presented: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_keep_mode_verdict_and_reason() {
        let c = RouteCounters::default();
        let d = |mode, verdict| Decision { mode, verdict };
        c.count(d(Mode::Enforce, Verdict::Reject(Reason::Expired)));
        c.count(d(Mode::Enforce, Verdict::Reject(Reason::Expired)));
        c.count(d(Mode::Audit, Verdict::WouldReject(Reason::NoCert)));
        c.count(d(Mode::SoftFail, Verdict::Unauthenticated));
        c.count(d(Mode::Enforce, Verdict::Exempt(Reason::NoCert)));
        c.count(d(Mode::Enforce, Verdict::Pass));
        c.count(d(Mode::Off, Verdict::NotEvaluated));
        let mut got = c.outcomes();
        got.sort_by_key(|(m, v, _)| (format!("{m}"), format!("{v:?}")));
        assert_eq!(
            got,
            vec![
                (Mode::Audit, Verdict::WouldReject(Reason::NoCert), 1),
                (Mode::Enforce, Verdict::Exempt(Reason::NoCert), 1),
                (Mode::Enforce, Verdict::Pass, 1),
                (Mode::Enforce, Verdict::Reject(Reason::Expired), 2),
                (Mode::Off, Verdict::NotEvaluated, 1),
                (Mode::SoftFail, Verdict::Unauthenticated, 1),
            ]
        );
        assert_eq!(c.totals(), (7, 4, 2));
    }
}
