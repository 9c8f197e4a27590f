//! Per-route request counts per minute, for the last 24 hours: what the admin page's charts
//! and windows (1 h, 24 h) are made of. Sparse: a quiet route costs nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use super::Totals;

/// Minutes kept.
pub const MINUTES: i64 = 24 * 60;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Unix seconds at the start of the minute.
    pub minute: i64,
    #[serde(flatten)]
    pub counts: Totals,
}

/// Sums over a window.
pub type WindowTotals = Totals;

#[derive(Default)]
pub struct RouteSeries {
    buckets: VecDeque<Bucket>,
    /// Counter totals at the last sample, to turn totals into deltas.
    last_totals: Totals,
}

impl RouteSeries {
    /// Adds what the counters gained since the last sample to the minute of `now`, and
    /// returns that gain (for the durable store) unless it is nothing.
    pub fn sample(&mut self, totals: Totals, now: i64) -> Option<Bucket> {
        let delta = totals.since(self.last_totals);
        self.last_totals = totals;
        self.add(now, delta);
        (!delta.is_zero()).then(|| Bucket {
            minute: now - now.rem_euclid(60),
            counts: delta,
        })
    }

    /// Adds counts to a minute (also used when history is loaded from disk).
    pub fn add(&mut self, at: i64, counts: Totals) {
        if counts.is_zero() {
            return;
        }
        let minute = at - at.rem_euclid(60);
        match self.buckets.iter_mut().rev().find(|b| b.minute == minute) {
            Some(b) => b.counts.add(counts),
            None => {
                let pos = self
                    .buckets
                    .iter()
                    .rposition(|b| b.minute < minute)
                    .map_or(0, |p| p + 1);
                self.buckets.insert(pos, Bucket { minute, counts });
            }
        }
        while self.buckets.front().is_some_and(|b| b.minute <= minute - MINUTES * 60) {
            self.buckets.pop_front();
        }
    }

    /// Counts since `since` (Unix seconds), plus what the counters gained after the last
    /// sample, so a window includes the last few seconds too.
    pub fn window(&self, since: i64, current_totals: Totals) -> WindowTotals {
        let mut t = Totals::default();
        for b in self.buckets.iter().filter(|b| b.minute + 60 > since) {
            t.add(b.counts);
        }
        t.add(current_totals.since(self.last_totals));
        t
    }

    /// The counts of the minute that contains `at`.
    pub fn bucket_at(&self, at: i64) -> Option<Bucket> {
        let minute = at - at.rem_euclid(60);
        self.buckets.iter().rev().find(|b| b.minute == minute).copied()
    }

    /// A series made of buckets read back from elsewhere (a fleet store); `last_totals` are
    /// this process's counters now, so a window adds only what they gain from here on.
    pub fn from_buckets(buckets: impl IntoIterator<Item = Bucket>, last_totals: Totals) -> Self {
        let mut s = RouteSeries {
            buckets: VecDeque::new(),
            last_totals,
        };
        for b in buckets {
            s.add(b.minute, b.counts);
        }
        s
    }

    pub fn buckets_since(&self, since: i64) -> Vec<Bucket> {
        self.buckets.iter().filter(|b| b.minute + 60 > since).copied().collect()
    }
}

/// All routes' series, by route name.
pub type SeriesByRoute = HashMap<Arc<str>, RouteSeries>;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(requests: u64, would_reject: u64, rejected: u64) -> Totals {
        Totals {
            requests,
            would_reject,
            rejected,
            ..Totals::default()
        }
    }

    #[test]
    fn samples_become_per_minute_deltas_and_old_minutes_fall_off() {
        let base = 60_000_000; // a minute boundary
        let mut s = RouteSeries::default();
        s.sample(t(10, 2, 1), base + 10);
        s.sample(t(15, 2, 1), base + 40);
        s.sample(t(20, 5, 1), base + 70);
        let b = s.buckets_since(0);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].minute, b[0].counts.requests, b[0].counts.would_reject),
            (base, 15, 2)
        );
        assert_eq!(
            (b[1].minute, b[1].counts.requests, b[1].counts.would_reject),
            (base + 60, 5, 3)
        );
        assert_eq!(s.window(0, t(23, 5, 1)).requests, 23, "unsampled requests count too");
        s.sample(t(21, 5, 1), base + 70 + MINUTES * 60);
        assert_eq!(s.buckets_since(0).len(), 1);
    }

    #[test]
    fn windows_only_count_recent_minutes() {
        let mut s = RouteSeries::default();
        s.add(0, t(5, 1, 0));
        s.add(7200, t(3, 3, 3));
        assert_eq!(s.window(7200 - 3600, Totals::default()).requests, 3);
        assert_eq!(s.window(0, Totals::default()).requests, 8);
    }
}
