use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::{Decision, Mode, Reason, Verdict};

const REASONS: usize = Reason::ALL.len() + 1;
const SLOTS: usize = Mode::ALL.len() * REASONS * 2;

/// A route's counts: since start (from [`RouteCounters`]), per minute, or over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub requests: u64,
    /// Requests enforce would reject (exempt clients excluded).
    pub would_reject: u64,
    pub rejected: u64,
    /// Requests the route's shadow policy evaluated, and where it disagreed with the live one.
    pub shadow_requests: u64,
    pub shadow_newly_rejected: u64,
    pub shadow_newly_passed: u64,
}

impl Totals {
    /// The counts in storage order (requests, would_reject, rejected, shadow requests,
    /// newly rejected, newly passed): the column order of both stores' minute tables.
    pub fn as_columns(self) -> [i64; 6] {
        [
            self.requests,
            self.would_reject,
            self.rejected,
            self.shadow_requests,
            self.shadow_newly_rejected,
            self.shadow_newly_passed,
        ]
        .map(|n| n.min(i64::MAX as u64) as i64)
    }

    pub fn since(self, earlier: Totals) -> Totals {
        Totals {
            requests: self.requests.saturating_sub(earlier.requests),
            would_reject: self.would_reject.saturating_sub(earlier.would_reject),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            shadow_requests: self.shadow_requests.saturating_sub(earlier.shadow_requests),
            shadow_newly_rejected: self.shadow_newly_rejected.saturating_sub(earlier.shadow_newly_rejected),
            shadow_newly_passed: self.shadow_newly_passed.saturating_sub(earlier.shadow_newly_passed),
        }
    }

    pub fn add(&mut self, other: Totals) {
        self.requests += other.requests;
        self.would_reject += other.would_reject;
        self.rejected += other.rejected;
        self.shadow_requests += other.shadow_requests;
        self.shadow_newly_rejected += other.shadow_newly_rejected;
        self.shadow_newly_passed += other.shadow_newly_passed;
    }

    pub fn is_zero(self) -> bool {
        self == Totals::default()
    }
}

/// How a shadow policy's verdict differs from the live one for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowDiff {
    /// The candidate would reject a request the live policy lets through.
    NewlyRejected,
    /// The candidate would pass a request the live policy rejects.
    NewlyPassed,
}

/// Per-route request counters, shared by every snapshot that has the route (they are
/// keyed by route name, so they survive reloads). Relaxed atomics: they are statistics.
#[derive(Debug)]
pub struct RouteCounters {
    pub requests: AtomicU64,
    /// Requests enforce would reject (exempt clients excluded).
    pub would_reject: AtomicU64,
    pub rejected: AtomicU64,
    pub shadow_requests: AtomicU64,
    pub shadow_newly_rejected: AtomicU64,
    pub shadow_newly_passed: AtomicU64,
    /// By (mode applied, reason or none, exempt): the verdict follows from these.
    outcomes: [AtomicU64; SLOTS],
}

impl Default for RouteCounters {
    fn default() -> Self {
        RouteCounters {
            requests: AtomicU64::new(0),
            would_reject: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            shadow_requests: AtomicU64::new(0),
            shadow_newly_rejected: AtomicU64::new(0),
            shadow_newly_passed: AtomicU64::new(0),
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

    /// A request the route's shadow policy also evaluated.
    pub fn count_shadow(&self, diff: Option<ShadowDiff>) {
        self.shadow_requests.fetch_add(1, Ordering::Relaxed);
        match diff {
            Some(ShadowDiff::NewlyRejected) => self.shadow_newly_rejected.fetch_add(1, Ordering::Relaxed),
            Some(ShadowDiff::NewlyPassed) => self.shadow_newly_passed.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
    }

    pub fn totals(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            would_reject: self.would_reject.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            shadow_requests: self.shadow_requests.load(Ordering::Relaxed),
            shadow_newly_rejected: self.shadow_newly_rejected.load(Ordering::Relaxed),
            shadow_newly_passed: self.shadow_newly_passed.load(Ordering::Relaxed),
        }
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
        let t = c.totals();
        assert_eq!((t.requests, t.would_reject, t.rejected), (7, 4, 2));
    }
}
