//! Client certificates seen in handshakes that expire within 30 days (or already have):
//! who needs a new certificate before a route can enforce.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::tls::PeerCertificate;

/// How far ahead expiry is watched.
pub const WATCH_DAYS: i64 = 30;
const CAP: usize = 50_000;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SeenCertificate {
    pub client: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub sha256: String,
    pub not_after: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub handshakes: u64,
}

#[derive(Default)]
pub struct ExpiringCertificates {
    by_fingerprint: HashMap<String, SeenCertificate>,
    /// Changed since the last [`ExpiringCertificates::take_dirty`].
    dirty: HashSet<String>,
    pub dropped: u64,
}

/// Whether a certificate is worth remembering: it expires within [`WATCH_DAYS`].
pub fn expires_soon(peer: &PeerCertificate, now: i64) -> bool {
    peer.identity
        .as_ref()
        .is_ok_and(|id| id.not_after < now + WATCH_DAYS * 86_400)
}

impl ExpiringCertificates {
    pub fn seen(&mut self, peer: &PeerCertificate, at: i64) {
        let Ok(id) = &peer.identity else { return };
        if let Some(c) = self.by_fingerprint.get_mut(&id.sha256) {
            c.last_seen = c.last_seen.max(at);
            c.handshakes += 1;
            self.dirty.insert(id.sha256.clone());
            return;
        }
        if self.by_fingerprint.len() >= CAP {
            self.dropped += 1;
            return;
        }
        self.by_fingerprint.insert(
            id.sha256.clone(),
            SeenCertificate {
                client: id.display_name(),
                subject: id.subject.clone(),
                issuer: id.issuer.clone(),
                serial: id.serial.clone(),
                sha256: id.sha256.clone(),
                not_after: id.not_after,
                first_seen: at,
                last_seen: at,
                handshakes: 1,
            },
        );
        self.dirty.insert(id.sha256.clone());
    }

    /// Every certificate remembered, for a full resync of a fleet store.
    pub fn all(&self) -> Vec<SeenCertificate> {
        self.by_fingerprint.values().cloned().collect()
    }

    pub fn restore(&mut self, c: SeenCertificate) {
        if self.by_fingerprint.len() < CAP {
            self.by_fingerprint.insert(c.sha256.clone(), c);
        }
    }

    pub fn take_dirty(&mut self) -> Vec<SeenCertificate> {
        let keys: Vec<String> = self.dirty.drain().collect();
        keys.iter()
            .filter_map(|k| self.by_fingerprint.get(k).cloned())
            .collect()
    }

    /// Certificates expiring before `until`, soonest first.
    pub fn expiring_before(&self, until: i64) -> Vec<SeenCertificate> {
        let mut v: Vec<_> = self
            .by_fingerprint
            .values()
            .filter(|c| c.not_after < until)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.not_after.cmp(&b.not_after).then(a.client.cmp(&b.client)));
        v
    }

    /// Forgets certificates not seen since `before` (retention).
    pub fn forget_older_than(&mut self, before: i64) {
        self.by_fingerprint.retain(|_, c| c.last_seen >= before);
    }
}
