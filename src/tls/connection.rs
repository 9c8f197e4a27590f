//! What one client connection established in its handshake, and the per-connection cache
//! of chain verdicts so that a keep-alive or HTTP/2 connection verifies once per bundle.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;

use super::peer::PeerCertificate;
use super::verify::{evidence_of, ChainOutcome, RequiredEku};
use crate::policy::{BundleId, ClientEvidence, Snapshot};

/// Stored in pingora's `SslDigest.extension`; read by every request on the connection.
pub struct ConnectionTls {
    /// Normalized SNI, if the client sent one.
    pub sni: Option<Box<str>>,
    /// Whether the handshake asked for a client certificate.
    pub client_cert_requested: bool,
    pub peer: Option<Arc<PeerCertificate>>,
    verdicts: ArcSwapOption<VerdictCache>,
    /// The listener's `request_header_timeout`, fixed at the handshake.
    pub request_header_timeout: std::time::Duration,
    /// Request heads read on this connection so far: the head deadline watches it.
    heads_read: std::sync::atomic::AtomicU64,
    /// Routes this connection already reported the certificate's renewal for.
    renewals_noted: std::sync::Mutex<Vec<Arc<str>>>,
}

/// Chain outcomes for one config generation, one slot per trust bundle, each computed on
/// first use. A reload brings a new generation and so a fresh cache.
struct VerdictCache {
    generation: u64,
    slots: Box<[OnceLock<ChainOutcome>]>,
}

/// The evidence for one request, with the failure detail for the audit record.
pub struct Evidence<'a> {
    pub evidence: ClientEvidence<'a>,
    pub detail: Option<Arc<str>>,
}

impl ConnectionTls {
    pub fn new(sni: Option<Box<str>>, client_cert_requested: bool, peer: Option<PeerCertificate>) -> Self {
        ConnectionTls {
            sni,
            client_cert_requested,
            peer: peer.map(Arc::new),
            verdicts: ArcSwapOption::empty(),
            request_header_timeout: std::time::Duration::from_secs(30),
            heads_read: std::sync::atomic::AtomicU64::new(0),
            renewals_noted: std::sync::Mutex::default(),
        }
    }

    pub fn with_request_header_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.request_header_timeout = timeout;
        self
    }

    /// A request head was read on this connection.
    pub fn head_read(&self) {
        self.heads_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn heads_read(&self) -> u64 {
        self.heads_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True the first time a request on this connection notes `route` for renewal: one
    /// report per connection and route, not per request. Only requests whose certificate is
    /// inside its renewal window get here, so a clean pass takes no lock.
    pub fn first_renewal_note(&self, route: &Arc<str>) -> bool {
        let mut noted = self.renewals_noted.lock().unwrap_or_else(|e| e.into_inner());
        if noted.iter().any(|r| r == route) {
            return false;
        }
        noted.push(route.clone());
        true
    }

    /// The evidence for routes that trust `bundle`, verified at most once per connection,
    /// generation and bundle. A cached pass is not reused past the chain's earliest
    /// notAfter, so a long-lived connection cannot outlive its certificate.
    pub fn evidence(&self, snapshot: &Snapshot, bundle: BundleId, now: i64) -> Evidence<'_> {
        let Some(peer) = self.peer.as_deref() else {
            return Evidence {
                evidence: ClientEvidence::NoCertificate,
                detail: None,
            };
        };
        let verify = || {
            snapshot.config.bundles[bundle]
                .anchors
                .verify(peer, RequiredEku::ClientAuth)
        };
        let cache = self.cache_for(snapshot);
        let fresh;
        let outcome = match cache.slots.get(bundle).map(|slot| slot.get_or_init(verify)) {
            Some(Ok(ok)) if ok.valid_until >= now => Ok(()),
            Some(Err(failure)) => Err(failure),
            _ => {
                fresh = verify();
                fresh.as_ref().map(|_| ())
            }
        };
        Evidence {
            evidence: evidence_of(outcome, peer),
            detail: outcome.err().map(|f| f.detail.clone()),
        }
    }

    fn cache_for(&self, snapshot: &Snapshot) -> Arc<VerdictCache> {
        if let Some(cache) = &*self.verdicts.load() {
            if cache.generation == snapshot.generation {
                return cache.clone();
            }
        }
        let fresh = Arc::new(VerdictCache {
            generation: snapshot.generation,
            slots: (0..snapshot.config.bundles.len()).map(|_| OnceLock::new()).collect(),
        });
        self.verdicts.store(Some(fresh.clone()));
        fresh
    }
}
