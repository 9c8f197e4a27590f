//! Requests in flight, so that a graceful stop ends as soon as the last one is done instead
//! of always sleeping out the whole grace period.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The number of requests between their head being read and their context being dropped.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

/// Held by a request's context: the request counts as in flight while it lives.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Waits until no request is in flight, or until `deadline`; true when none is.
    pub fn wait_until_idle(&self, deadline: Instant) -> bool {
        loop {
            if self.count() == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10).min(deadline - now));
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_ends_when_the_last_guard_is_dropped_or_at_the_deadline() {
        let in_flight = Arc::new(InFlight::default());
        assert!(in_flight.wait_until_idle(Instant::now()));
        let guard = in_flight.enter();
        let second = in_flight.enter();
        assert_eq!(in_flight.count(), 2);
        drop(second);
        let started = Instant::now();
        assert!(!in_flight.wait_until_idle(started + Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(guard);
        });
        assert!(in_flight.wait_until_idle(Instant::now() + Duration::from_secs(5)));
        dropper.join().unwrap();
    }
}
