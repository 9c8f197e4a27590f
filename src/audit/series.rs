//! Per-route request counts per minute, for the last 24 hours: what the admin page's charts
//! and windows (1 h, 24 h) are made of. Sparse: a quiet route costs nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

/// Minutes kept.
pub const MINUTES: i64 = 24 * 60;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Unix seconds at the start of the minute.
    pub minute: i64,
    pub requests: u64,
    pub would_reject: u64,
    pub rejected: u64,
}

/// Sums over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowTotals {
    pub requests: u64,
    pub would_reject: u64,
    pub rejected: u64,
}

#[derive(Default)]
pub struct RouteSeries {
    buckets: VecDeque<Bucket>,
    /// Counter totals at the last sample, to turn totals into deltas.
    last_totals: (u64, u64, u64),
}

impl RouteSeries {
    /// Adds what the counters gained since the last sample to the minute of `now`, and
    /// returns that gain (for the durable store) unless it is nothing.
    pub fn sample(&mut self, totals: (u64, u64, u64), now: i64) -> Option<Bucket> {
        let (r, w, x) = totals;
        let (lr, lw, lx) = self.last_totals;
        let delta = (r.saturating_sub(lr), w.saturating_sub(lw), x.saturating_sub(lx));
        self.last_totals = totals;
        self.add(now, delta.0, delta.1, delta.2);
        (delta != (0, 0, 0)).then(|| Bucket {
            minute: now - now.rem_euclid(60),
            requests: delta.0,
            would_reject: delta.1,
            rejected: delta.2,
        })
    }

    /// Adds counts to a minute (also used when history is loaded from disk).
    pub fn add(&mut self, at: i64, requests: u64, would_reject: u64, rejected: u64) {
        if requests == 0 && would_reject == 0 && rejected == 0 {
            return;
        }
        let minute = at - at.rem_euclid(60);
        match self.buckets.iter_mut().rev().find(|b| b.minute == minute) {
            Some(b) => {
                b.requests += requests;
                b.would_reject += would_reject;
                b.rejected += rejected;
            }
            None => {
                let pos = self
                    .buckets
                    .iter()
                    .rposition(|b| b.minute < minute)
                    .map_or(0, |p| p + 1);
                self.buckets.insert(
                    pos,
                    Bucket {
                        minute,
                        requests,
                        would_reject,
                        rejected,
                    },
                );
            }
        }
        while self.buckets.front().is_some_and(|b| b.minute <= minute - MINUTES * 60) {
            self.buckets.pop_front();
        }
    }

    /// Counts since `since` (Unix seconds), plus what the counters gained after the last
    /// sample, so a window includes the last few seconds too.
    pub fn window(&self, since: i64, current_totals: (u64, u64, u64)) -> WindowTotals {
        let mut t = self
            .buckets
            .iter()
            .filter(|b| b.minute + 60 > since)
            .fold(WindowTotals::default(), |mut t, b| {
                t.requests += b.requests;
                t.would_reject += b.would_reject;
                t.rejected += b.rejected;
                t
            });
        t.requests += current_totals.0.saturating_sub(self.last_totals.0);
        t.would_reject += current_totals.1.saturating_sub(self.last_totals.1);
        t.rejected += current_totals.2.saturating_sub(self.last_totals.2);
        t
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

    #[test]
    fn samples_become_per_minute_deltas_and_old_minutes_fall_off() {
        let base = 60_000_000; // a minute boundary
        let mut s = RouteSeries::default();
        s.sample((10, 2, 1), base + 10);
        s.sample((15, 2, 1), base + 40);
        s.sample((20, 5, 1), base + 70);
        let b = s.buckets_since(0);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].minute, b[0].requests, b[0].would_reject), (base, 15, 2));
        assert_eq!((b[1].minute, b[1].requests, b[1].would_reject), (base + 60, 5, 3));
        assert_eq!(s.window(0, (23, 5, 1)).requests, 23, "unsampled requests count too");
        s.sample((21, 5, 1), base + 70 + MINUTES * 60);
        assert_eq!(s.buckets_since(0).len(), 1);
    }

    #[test]
    fn windows_only_count_recent_minutes() {
        let mut s = RouteSeries::default();
        s.add(0, 5, 1, 0);
        s.add(7200, 3, 3, 3);
        assert_eq!(s.window(7200 - 3600, (0, 0, 0)).requests, 3);
        assert_eq!(s.window(0, (0, 0, 0)).requests, 8);
    }
}
