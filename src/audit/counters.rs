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
