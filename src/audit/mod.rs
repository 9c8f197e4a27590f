//! Recording what the gateway decided: per-route counters on the request path, and
//! would-be-rejected clients handed to one aggregator task through a bounded queue, so
//! recording never blocks a request.

mod counters;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use counters::{HandshakeCounters, HandshakeTotals, RouteCounters};
pub use store::{CertificateSummary, ClientRecord, RejectionEvent, RejectionStore, RouteRejectionsView};
use tokio::sync::mpsc;

/// Events queued for the aggregator; beyond this, events are dropped and counted.
const QUEUE: usize = 65_536;
/// Distinct (client, reason) records kept per route.
pub const RECORDS_PER_ROUTE: usize = 10_000;

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<RejectionEvent>,
    dropped: Arc<AtomicU64>,
    counters: Arc<Mutex<HashMap<Arc<str>, Arc<RouteCounters>>>>,
    handshakes: Arc<HandshakeCounters>,
    store: Arc<Mutex<RejectionStore>>,
}

/// The receiving end, run by [`Aggregator::run`] on the control plane's runtime.
pub struct Aggregator {
    rx: mpsc::Receiver<RejectionEvent>,
    store: Arc<Mutex<RejectionStore>>,
}

impl Recorder {
    pub fn new() -> (Recorder, Aggregator) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let store = Arc::new(Mutex::new(RejectionStore::new(RECORDS_PER_ROUTE)));
        (
            Recorder {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                counters: Arc::default(),
                handshakes: Arc::default(),
                store: store.clone(),
            },
            Aggregator { rx, store },
        )
    }

    /// Hands an event to the aggregator, or counts it as dropped if the queue is full.
    pub fn record(&self, event: RejectionEvent) {
        if let Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) = self.tx.try_send(event)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters of a route, created on first use. Called when a snapshot is built,
    /// not per request.
    pub fn counters(&self, route: &Arc<str>) -> Arc<RouteCounters> {
        let mut all = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(route.clone()).or_default().clone()
    }

    pub fn handshakes(&self) -> &Arc<HandshakeCounters> {
        &self.handshakes
    }

    pub fn queue_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn rejections(&self, route: &str) -> RouteRejectionsView {
        let mut view = self.store.lock().unwrap_or_else(|e| e.into_inner()).view(route);
        view.queue_dropped = self.queue_dropped();
        view
    }
}

impl Aggregator {
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(256);
        while self.rx.recv_many(&mut batch, 256).await > 0 {
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            for event in batch.drain(..) {
                store.add(event);
            }
        }
    }
}
