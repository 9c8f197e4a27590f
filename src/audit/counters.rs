use std::sync::atomic::{AtomicU64, Ordering};

/// Per-route request counters, shared by every snapshot that has the route (they are
/// keyed by route name, so they survive reloads). Relaxed atomics: they are statistics.
#[derive(Debug, Default)]
pub struct RouteCounters {
    pub requests: AtomicU64,
    /// Requests that were not a clean pass: would-reject, unauthenticated, rejected.
    pub would_reject: AtomicU64,
    pub rejected: AtomicU64,
}

impl RouteCounters {
    pub fn count(&self, clean: bool, rejected: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !clean {
            self.would_reject.fetch_add(1, Ordering::Relaxed);
        }
        if rejected {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.would_reject.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }
}
