//! Verified client certificates seen on a route inside its renewal window: whom to remind
//! while the gateway can still name them. Once a certificate has expired a browser no longer
//! offers it, and its holder becomes an anonymous `no_cert` visit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::store::{summary, CertificateSummary};
use crate::policy::Identity;
use crate::tls::PeerCertificate;

/// Whether a certificate is due for renewal: it expires within `window` seconds, and it
/// lives longer than the window — short-lived certificates are renewed by machinery, and
/// listing every one of them would drown the people who have to act.
pub fn renewal_due(identity: &Identity, window: i64, now: i64) -> bool {
    identity.not_after - now < window && identity.not_after - identity.not_before > window
}

/// One certificate due for renewal, as seen on one route.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Renewal {
    pub client: String,
    pub certificate: CertificateSummary,
    pub first_seen: i64,
    pub last_seen: i64,
}

#[derive(Clone, Default)]
struct RouteRenewals {
    by_fingerprint: HashMap<String, Renewal>,
    /// Changed since the last [`RenewalStore::take_dirty`], for the durable store.
    dirty: HashSet<String>,
}

/// Per route, by certificate fingerprint (the same holder's next certificate is another
/// entry); bounded per route like the rejection records.
#[derive(Clone)]
pub struct RenewalStore {
    routes: HashMap<Arc<str>, RouteRenewals>,
    cap_per_route: usize,
}

impl Default for RenewalStore {
    fn default() -> Self {
        RenewalStore {
            routes: HashMap::new(),
            cap_per_route: super::RECORDS_PER_ROUTE,
        }
    }
}

impl RenewalStore {
    pub fn seen(&mut self, route: &Arc<str>, peer: &PeerCertificate, at: i64) {
        let Some(certificate) = summary(peer) else { return };
        let client = match &peer.identity {
            Ok(id) => id.display_name(),
            Err(_) => return,
        };
        let r = self.routes.entry(route.clone()).or_default();
        let key = certificate.sha256.clone();
        let full = r.by_fingerprint.len() >= self.cap_per_route;
        match r.by_fingerprint.get_mut(&key) {
            Some(known) => known.last_seen = known.last_seen.max(at),
            None if full => return,
            None => {
                r.by_fingerprint.insert(
                    key.clone(),
                    Renewal {
                        client,
                        certificate,
                        first_seen: at,
                        last_seen: at,
                    },
                );
            }
        }
        r.dirty.insert(key);
    }

    /// Puts back an entry read from the durable store (at startup).
    pub fn restore(&mut self, route: &str, renewal: Renewal) {
        let r = self.routes.entry(route.into()).or_default();
        if r.by_fingerprint.len() < self.cap_per_route {
            r.by_fingerprint.insert(renewal.certificate.sha256.clone(), renewal);
        }
    }

    /// Entries changed since the last call, with their route.
    pub fn take_dirty(&mut self) -> Vec<(Arc<str>, Renewal)> {
        let mut out = Vec::new();
        for (name, r) in &mut self.routes {
            for key in r.dirty.drain() {
                if let Some(renewal) = r.by_fingerprint.get(&key) {
                    out.push((name.clone(), renewal.clone()));
                }
            }
        }
        out
    }

    /// Forgets certificates not seen since `before` (retention).
    pub fn forget_older_than(&mut self, before: i64) {
        for r in self.routes.values_mut() {
            r.by_fingerprint.retain(|_, c| c.last_seen >= before);
        }
    }

    /// The route's certificates due for renewal, soonest expiry first.
    pub fn of_route(&self, route: &str) -> Vec<Renewal> {
        let mut v: Vec<Renewal> = self
            .routes
            .get(route)
            .map(|r| r.by_fingerprint.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| (a.certificate.not_after, &a.client).cmp(&(b.certificate.not_after, &b.client)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devpki::{CertificateAuthority, LeafSpec};

    const DAY: i64 = 86_400;

    fn peer(ca: &CertificateAuthority, uri: &str, lifetime_days: i64, days_left: i64) -> PeerCertificate {
        let now = time::OffsetDateTime::now_utc();
        let spec = LeafSpec::client(uri).valid(
            now - time::Duration::days(lifetime_days - days_left),
            now + time::Duration::days(days_left),
        );
        PeerCertificate::from_pem(ca.issue(&spec).unwrap().cert_pem.as_bytes()).unwrap()
    }

    #[test]
    fn only_long_lived_certificates_inside_the_window_are_due() {
        let ca = CertificateAuthority::root("ca").unwrap();
        let now = crate::proxy::unix_now();
        let due = |lifetime, left| {
            let p = peer(&ca, "spiffe://t/a", lifetime, left);
            renewal_due(p.identity.as_ref().unwrap(), 14 * DAY, now)
        };
        assert!(due(365, 10));
        assert!(due(365, -2), "an expired certificate is still due");
        assert!(!due(365, 20), "outside the window");
        assert!(!due(7, 3), "short-lived: renewed by machinery");
    }

    #[test]
    fn a_certificate_is_one_entry_per_route_soonest_expiry_first() {
        let ca = CertificateAuthority::root("ca").unwrap();
        let (a, b) = (peer(&ca, "spiffe://t/a", 365, 9), peer(&ca, "spiffe://t/b", 365, 3));
        let route: Arc<str> = "portal".into();
        let mut store = RenewalStore::default();
        store.seen(&route, &a, 100);
        store.seen(&route, &a, 150);
        store.seen(&route, &b, 120);
        store.seen(&"wiki".into(), &a, 130);
        let v = store.of_route("portal");
        let names: Vec<&str> = v.iter().map(|r| r.client.as_str()).collect();
        assert_eq!(names, ["uri:spiffe://t/b", "uri:spiffe://t/a"]);
        assert_eq!((v[1].first_seen, v[1].last_seen), (100, 150));
        assert_eq!(store.take_dirty().len(), 3);
        assert!(store.take_dirty().is_empty());
        store.forget_older_than(125);
        assert_eq!(store.of_route("portal").len(), 1);
    }
}
