//! Recording what the gateway decided: per-route counters on the request path, and
//! would-be-rejected clients handed to one aggregator task through a bounded queue, so
//! recording never blocks a request.

mod certs;
mod counters;
pub mod persist;
mod renewals;
mod series;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use certs::{expires_soon, ExpiringCertificates, SeenCertificate, WATCH_DAYS};
pub use counters::{HandshakeCounters, HandshakeTotals, RouteCounters, ShadowDiff, Totals};
pub use renewals::{renewal_due, Renewal, RenewalStore};
pub use series::{Bucket, RouteSeries, SeriesByRoute, WindowTotals, MINUTES};
pub use store::{
    CertificateSummary, ClientRecord, RejectionEvent, RejectionStore, RouteRejectionsView, SeenBy, RECENT_SOURCES,
};
use tokio::sync::mpsc;

/// Events queued for the aggregator; beyond this, events are dropped and counted.
const QUEUE: usize = 65_536;
/// Distinct (client, reason) records kept per route.
pub const RECORDS_PER_ROUTE: usize = 10_000;

/// How often route counters are turned into per-minute series and changes are flushed to
/// the durable store: the most a `kill -9` can lose.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often history past the retention is deleted.
const PRUNE_EVERY: i64 = 600;

/// What the request path and the handshake hand to the aggregator.
pub enum AuditEvent {
    Rejection(RejectionEvent),
    /// A request where the route's shadow policy disagrees with the live one.
    Shadow(ShadowDiff, RejectionEvent),
    /// A client certificate that expires soon was presented.
    CertificateSeen(Arc<crate::tls::PeerCertificate>, i64),
    /// A verified certificate inside its route's renewal window was used on the route.
    RenewalDue(Arc<str>, Arc<crate::tls::PeerCertificate>, i64),
    /// Flush everything queued before this now; answered once it is on disk.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The aggregated picture; written only by the aggregator task, read by the admin API.
#[derive(Default)]
pub struct AuditState {
    /// Clients enforce would reject.
    pub rejections: RejectionStore,
    /// Clients enforce would reject but for an exemption: they pass, and nobody needs telling.
    pub exempt: RejectionStore,
    /// Clients the shadow policy would reject that the live policy lets through.
    pub shadow_rejected: RejectionStore,
    /// Clients the shadow policy would let through that the live policy rejects.
    pub shadow_passed: RejectionStore,
    pub series: SeriesByRoute,
    pub expiring: ExpiringCertificates,
    /// Per route, verified certificates due for renewal.
    pub renewals: RenewalStore,
}

/// Which recorded clients to list: those enforce would reject (the default everywhere),
/// those an exemption lets through, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerdictFilter {
    #[default]
    WouldReject,
    Exempt,
    All,
}

impl VerdictFilter {
    pub fn parse(text: &str) -> Option<VerdictFilter> {
        Some(match text {
            "would_reject" => VerdictFilter::WouldReject,
            "exempt" => VerdictFilter::Exempt,
            "all" => VerdictFilter::All,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VerdictFilter::WouldReject => "would_reject",
            VerdictFilter::Exempt => "exempt",
            VerdictFilter::All => "all",
        }
    }
}

impl AuditState {
    /// Where a client with this verdict is kept: exempt ones apart, so that each record
    /// counts requests of one kind and "who would break" holds only those who would.
    pub fn records_for(&mut self, verdict: crate::policy::Verdict) -> &mut RejectionStore {
        match verdict {
            crate::policy::Verdict::Exempt(_) => &mut self.exempt,
            _ => &mut self.rejections,
        }
    }
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
    counters: Arc<Mutex<HashMap<Arc<str>, Arc<RouteCounters>>>>,
    handshakes: Arc<HandshakeCounters>,
    state: Arc<Mutex<AuditState>>,
    store_status: Arc<Mutex<persist::StoreStatus>>,
    /// In a fleet: the picture of every instance, read back from the fleet store; what the
    /// admin API shows instead of this instance's own while the store answers.
    fleet_view: Arc<arc_swap::ArcSwapOption<AuditState>>,
    /// Set when a batch for the fleet store could not be queued: publish everything next.
    fleet_resync: Arc<std::sync::atomic::AtomicBool>,
}

/// Where and how long history is kept.
struct Durable {
    writer: std::sync::mpsc::SyncSender<persist::FlushBatch>,
    /// A batch the writer could not take yet (it is busy or the disk is slow).
    pending: persist::FlushBatch,
    retention_secs: i64,
    last_prune: i64,
}

/// The receiving end, run by [`Aggregator::run`] on the control plane's runtime.
pub struct Aggregator {
    rx: mpsc::Receiver<AuditEvent>,
    state: Arc<Mutex<AuditState>>,
    counters: Arc<Mutex<HashMap<Arc<str>, Arc<RouteCounters>>>>,
    clock: fn() -> i64,
    durable: Option<Durable>,
    /// In a fleet: where each second's absolute values go, to be published.
    fleet: Option<(
        mpsc::Sender<crate::store::InstanceBatch>,
        Arc<std::sync::atomic::AtomicBool>,
    )>,
}

impl Recorder {
    pub fn new() -> (Recorder, Aggregator) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let state = Arc::new(Mutex::new(AuditState::default()));
        let counters: Arc<Mutex<HashMap<Arc<str>, Arc<RouteCounters>>>> = Arc::default();
        (
            Recorder {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                counters: counters.clone(),
                handshakes: Arc::default(),
                state: state.clone(),
                store_status: Arc::default(),
                fleet_view: Arc::default(),
                fleet_resync: Arc::default(),
            },
            Aggregator {
                rx,
                state,
                counters,
                clock: crate::proxy::unix_now,
                durable: None,
                fleet: None,
            },
        )
    }

    /// A recorder whose history lives in `path` (SQLite), kept `retention_secs`: what
    /// was recorded before a restart is loaded back first.
    pub fn durable(path: &std::path::Path, retention_secs: i64) -> Result<(Recorder, Aggregator), persist::StoreError> {
        let store = persist::AuditStore::open(path)?;
        let now = crate::proxy::unix_now();
        let loaded = store.load(now - retention_secs, now - MINUTES * 60)?;
        let (recorder, mut aggregator) = Recorder::new();
        {
            let mut state = recorder.state.lock().unwrap_or_else(|e| e.into_inner());
            for (route, record) in loaded.records {
                state.records_for(record.last_verdict).restore(&route, record);
            }
            for (route, b) in loaded.minutes {
                state
                    .series
                    .entry(route.as_str().into())
                    .or_default()
                    .add(b.minute, b.counts);
            }
            for c in loaded.certificates {
                state.expiring.restore(c);
            }
            for (route, r) in loaded.renewals {
                state.renewals.restore(&route, r);
            }
        }
        *recorder.store_status.lock().unwrap_or_else(|e| e.into_inner()) = persist::StoreStatus {
            path: Some(path.to_path_buf()),
            ..Default::default()
        };
        let writer = persist::spawn_writer(store, recorder.store_status.clone())
            .map_err(|e| persist::StoreError::io(path, e))?;
        aggregator.durable = Some(Durable {
            writer,
            pending: persist::FlushBatch::default(),
            retention_secs,
            last_prune: now,
        });
        Ok((recorder, aggregator))
    }

    pub fn note_store_error(&self, error: &str) {
        let mut s = self.store_status.lock().unwrap_or_else(|e| e.into_inner());
        s.errors += 1;
        s.last_error = Some(error.to_string());
    }

    pub fn store_status(&self) -> persist::StoreStatus {
        self.store_status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Hands an event to the aggregator, or counts it as dropped if the queue is full.
    pub fn record(&self, event: RejectionEvent) {
        self.send(AuditEvent::Rejection(event));
    }

    /// Hands a shadow disagreement to the aggregator (kept apart from live records).
    pub fn record_shadow(&self, diff: ShadowDiff, event: RejectionEvent) {
        self.send(AuditEvent::Shadow(diff, event));
    }

    /// Notes a client certificate presented in a handshake, if it expires soon.
    pub fn certificate_seen(&self, peer: &Arc<crate::tls::PeerCertificate>, now: i64) {
        if expires_soon(peer, now) {
            self.send(AuditEvent::CertificateSeen(peer.clone(), now));
        }
    }

    /// Notes a verified certificate inside `route`'s renewal window.
    pub fn renewal_due(&self, route: Arc<str>, peer: Arc<crate::tls::PeerCertificate>, now: i64) {
        self.send(AuditEvent::RenewalDue(route, peer, now));
    }

    fn send(&self, event: AuditEvent) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads the picture to show: the fleet's while a fleet store answers, else this
    /// instance's own.
    pub fn read<T>(&self, f: impl FnOnce(&AuditState) -> T) -> T {
        match self.fleet_view.load_full() {
            Some(fleet) => f(&fleet),
            None => self.read_local(f),
        }
    }

    /// Reads this instance's own picture.
    pub fn read_local<T>(&self, f: impl FnOnce(&AuditState) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Shows the fleet's picture from now on (`None`: this instance's own again).
    pub fn set_fleet_view(&self, view: Option<AuditState>) {
        self.fleet_view.store(view.map(Arc::new));
    }

    pub fn shows_fleet(&self) -> bool {
        self.fleet_view.load().is_some()
    }

    /// Whether a batch for the fleet store was lost, so everything must be published again;
    /// clears the mark.
    pub fn take_fleet_resync(&self) -> bool {
        self.fleet_resync.swap(false, Ordering::Relaxed)
    }

    /// Everything this instance knows, as one batch for a fleet store.
    pub fn full_batch(&self) -> crate::store::InstanceBatch {
        let now = crate::proxy::unix_now();
        let totals = self.route_totals();
        self.read_local(|s| crate::store::InstanceBatch {
            records: s.rejections.all().into_iter().chain(s.exempt.all()).collect(),
            minutes: s
                .series
                .iter()
                .flat_map(|(route, series)| {
                    series
                        .buckets_since(now - MINUTES * 60)
                        .into_iter()
                        .map(move |b| (route.clone(), b))
                })
                .collect(),
            certificates: s.expiring.all(),
            route_totals: totals,
        })
    }

    /// Per route, this process's counter totals (requests, rejected).
    fn route_totals(&self) -> Vec<(Arc<str>, u64, u64)> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(route, c)| {
                let t = c.totals();
                (route.clone(), t.requests, t.rejected)
            })
            .collect()
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

    /// Folds in everything recorded so far and writes it to the durable store, waiting at
    /// most `timeout` (at a graceful stop, so the last second is not lost). True when done.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let (done, written) = std::sync::mpsc::channel();
        // behind every event already queued, so those are included
        if self.tx.blocking_send(AuditEvent::Flush(done)).is_err() {
            return false;
        }
        written.recv_timeout(timeout).is_ok()
    }

    /// The route's recorded clients of `which` kind.
    pub fn rejections(&self, route: &str, which: VerdictFilter) -> RouteRejectionsView {
        let mut view = self.read(|s| match which {
            VerdictFilter::WouldReject => s.rejections.view(route),
            VerdictFilter::Exempt => s.exempt.view(route),
            VerdictFilter::All => {
                let mut view = s.rejections.view(route);
                let exempt = s.exempt.view(route);
                view.clients.extend(exempt.clients);
                view.dropped += exempt.dropped;
                view
            }
        });
        view.verdict = which.as_str();
        view.queue_dropped = self.queue_dropped();
        view
    }
}

impl Aggregator {
    /// Hands each second's changes, as absolute values, to a fleet store's publisher too.
    pub fn publish_to(&mut self, recorder: &Recorder, tx: mpsc::Sender<crate::store::InstanceBatch>) {
        self.fleet = Some((tx, recorder.fleet_resync.clone()));
    }

    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(256);
        let mut flushes = Vec::new();
        let mut sample = tokio::time::interval(FLUSH_EVERY);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        return;
                    }
                    let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    for event in batch.drain(..) {
                        match event {
                            AuditEvent::Rejection(e) => state.records_for(e.verdict).add(e),
                            AuditEvent::Shadow(ShadowDiff::NewlyRejected, e) => state.shadow_rejected.add(e),
                            AuditEvent::Shadow(ShadowDiff::NewlyPassed, e) => state.shadow_passed.add(e),
                            AuditEvent::CertificateSeen(peer, at) => state.expiring.seen(&peer, at),
                            AuditEvent::RenewalDue(route, peer, at) => state.renewals.seen(&route, &peer, at),
                            AuditEvent::Flush(done) => flushes.push(done),
                        }
                    }
                    drop(state);
                    if !flushes.is_empty() {
                        self.sample_and_flush(std::mem::take(&mut flushes));
                    }
                }
                _ = sample.tick() => self.sample_and_flush(Vec::new()),
            }
        }
    }

    /// Turns counter totals into per-minute buckets and hands what changed to the
    /// durable store; each of `done` is answered once that is written.
    fn sample_and_flush(&mut self, done: Vec<std::sync::mpsc::Sender<()>>) {
        let now = (self.clock)();
        let counters: Vec<(Arc<str>, Arc<RouteCounters>)> = self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut batch = persist::FlushBatch::default();
        let mut fleet = crate::store::InstanceBatch::default();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for (route, c) in counters {
                let totals = c.totals();
                let series = state.series.entry(route.clone()).or_default();
                if let Some(delta) = series.sample(totals, now) {
                    if self.fleet.is_some() {
                        // the fleet store keeps this instance's absolute count per minute
                        if let Some(minute) = series.bucket_at(delta.minute) {
                            fleet.minutes.push((route.clone(), minute));
                        }
                    }
                    batch.minutes.push((route.clone(), delta));
                }
                if self.fleet.is_some() {
                    fleet.route_totals.push((route, totals.requests, totals.rejected));
                }
            }
            if self.durable.is_some() || self.fleet.is_some() {
                batch.records = state.rejections.take_dirty();
                batch.records.append(&mut state.exempt.take_dirty());
                batch.certificates = state.expiring.take_dirty();
                batch.renewals = state.renewals.take_dirty();
                if self.fleet.is_some() {
                    fleet.records = batch.records.clone();
                    fleet.certificates = batch.certificates.clone();
                }
            }
            if let Some(durable) = &mut self.durable {
                if now - durable.last_prune >= PRUNE_EVERY {
                    durable.last_prune = now;
                    let before = now - durable.retention_secs;
                    batch.prune_before = Some(before);
                    state.rejections.forget_older_than(before);
                    state.exempt.forget_older_than(before);
                    state.expiring.forget_older_than(before);
                    state.renewals.forget_older_than(before);
                }
            }
        }
        if let Some((tx, resync)) = &self.fleet {
            if !fleet.is_empty() && tx.try_send(fleet).is_err() {
                resync.store(true, Ordering::Relaxed);
            }
        }
        if let Some(durable) = &mut self.durable {
            batch.merge(std::mem::take(&mut durable.pending));
            if batch.is_empty() {
                done.iter().for_each(|d| _ = d.send(()));
                return;
            }
            batch.done.extend(done);
            if let Err(
                std::sync::mpsc::TrySendError::Full(batch) | std::sync::mpsc::TrySendError::Disconnected(batch),
            ) = durable.writer.try_send(batch)
            {
                durable.pending = batch;
            }
        } else {
            // in memory only: nothing to write
            done.iter().for_each(|d| _ = d.send(()));
        }
    }
}
