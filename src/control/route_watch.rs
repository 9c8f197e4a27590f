//! Watching routes over time, once a second:
//! - automatic rollback: a route that enforces (or soft-fails) and rejects more than its
//!   configured share of requests over a window switches itself to audit, through the same
//!   override a manual rollback uses — so it stays until an operator clears it;
//! - exemptions that reach their date are announced in the log (the API shows them too).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use super::{ControlHandle, OverrideRequest};
use crate::policy::{AutoRollback, Mode, SharedSnapshot, Snapshot};
use crate::proxy::unix_now;

const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Counter totals of one route, one sample per check.
#[derive(Default)]
struct Samples(VecDeque<(i64, u64, u64)>);

impl Samples {
    /// Requests and rejections over the last `window` seconds.
    fn over(&mut self, now: i64, totals: (u64, u64), window: i64) -> (u64, u64) {
        self.0.push_back((now, totals.0, totals.1));
        while self.0.len() > 1 && self.0[1].0 <= now - window {
            self.0.pop_front();
        }
        let (_, r0, x0) = self.0[0];
        (totals.0.saturating_sub(r0), totals.1.saturating_sub(x0))
    }
}

fn announce_expired_exemptions(snapshot: &Snapshot, now: i64, announced: &mut HashSet<(String, String, i64)>) {
    for route in &snapshot.config.routes {
        for e in &route.mtls.exemptions {
            let key = (route.name.to_string(), e.who.to_string(), e.until);
            if !e.is_active(now) && announced.insert(key) {
                tracing::warn!(route.name = %route.name, client = %e.who, until = e.until, reason = %e.reason, "exemption expired: this client is now decided by the route's mode");
            }
        }
    }
}

/// Why a route should roll itself back now, if it should.
pub fn trips(limits: &AutoRollback, requests: u64, rejected: u64) -> Option<String> {
    if requests < limits.min_requests || requests == 0 {
        return None;
    }
    let ratio = rejected as f64 / requests as f64;
    (ratio > limits.max_reject_ratio).then(|| {
        format!(
            "rejected {:.1}% of {requests} requests in the last {}s (limit {:.1}%)",
            ratio * 100.0,
            limits.window_secs,
            limits.max_reject_ratio * 100.0
        )
    })
}

pub fn spawn_route_watch(handle: ControlHandle, snapshot: SharedSnapshot) {
    tokio::spawn(async move {
        let mut samples: HashMap<String, Samples> = HashMap::new();
        let mut announced: HashSet<(String, String, i64)> = HashSet::new();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tick.tick().await;
            let now = unix_now();
            let current = snapshot.load_full();
            announce_expired_exemptions(&current, now, &mut announced);
            // in a fleet, one instance decides for all, on the fleet's figures
            let fleet = handle.fleet();
            let fleet_totals = match fleet {
                None => None,
                Some(fleet) => match fleet.store().lead("auto-rollback").await {
                    Ok(true) => match fleet.store().route_totals().await {
                        Ok(totals) => Some(totals),
                        Err(_) => continue,
                    },
                    _ => {
                        samples.clear();
                        continue;
                    }
                },
            };
            let mut due = Vec::new();
            for (id, route) in current.config.routes.iter().enumerate() {
                let Some(limits) = route.auto_rollback else { continue };
                if !matches!(current.effective_mode(id), Mode::Enforce | Mode::SoftFail) {
                    samples.remove(&*route.name);
                    continue;
                }
                let (requests, rejected) = match &fleet_totals {
                    Some(totals) => totals.get(&*route.name).copied().unwrap_or_default(),
                    None => {
                        let t = current.counters(id).totals();
                        (t.requests, t.rejected)
                    }
                };
                let s = samples.entry(route.name.to_string()).or_default();
                let (r, x) = s.over(now, (requests, rejected), limits.window_secs as i64);
                if let Some(mut reason) = trips(&limits, r, x) {
                    if let Some(fleet) = fleet {
                        reason = format!("{reason} across the fleet; decided by instance {}", fleet.instance());
                    }
                    due.push((route.name.to_string(), reason));
                }
            }
            for (route, reason) in due {
                samples.remove(&route);
                tracing::warn!(route.name = %route, %reason, "automatic rollback to audit");
                if handle
                    .change_mode(&route, OverrideRequest::AutoRollback { reason })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_only_above_the_ratio_and_with_enough_requests() {
        let limits = AutoRollback {
            max_reject_ratio: 0.05,
            window_secs: 60,
            min_requests: 50,
        };
        assert_eq!(trips(&limits, 40, 40), None, "too few requests to judge");
        assert_eq!(trips(&limits, 100, 5), None, "exactly at the limit");
        let why = trips(&limits, 100, 6).unwrap();
        assert_eq!(why, "rejected 6.0% of 100 requests in the last 60s (limit 5.0%)");
    }

    #[test]
    fn samples_measure_only_the_window() {
        let mut s = Samples::default();
        assert_eq!(s.over(0, (100, 10), 60), (0, 0));
        assert_eq!(s.over(30, (150, 20), 60), (50, 10));
        assert_eq!(
            s.over(70, (180, 20), 60),
            (80, 10),
            "the window starts at the last sample before it"
        );
        assert_eq!(s.over(95, (200, 20), 60), (50, 0), "the sample at 0 left the window");
    }
}
