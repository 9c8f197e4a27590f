//! Would-be-rejected clients, aggregated per (route, client, reason). Written by the
//! recorder's single aggregator task; read by the admin API.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::policy::{Mode, Reason, Verdict};
use crate::tls::PeerCertificate;

/// How many distinct source addresses a record remembers.
pub const RECENT_SOURCES: usize = 5;

/// One request that was not a clean pass, as the request path hands it over.
pub struct RejectionEvent {
    pub route: Arc<str>,
    pub mode: Mode,
    pub verdict: Verdict,
    pub detail: Option<Arc<str>>,
    pub peer: Option<Arc<PeerCertificate>>,
    pub source: Option<IpAddr>,
    /// Unix seconds.
    pub at: i64,
    /// `package.Service/Method` of a gRPC request.
    pub grpc_method: Option<Arc<str>>,
}

/// A client as operators see it. Certificates are named by their identity (so a service
/// that rotates its certificate stays one client); clients without one by source address.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ClientRecord {
    pub client: String,
    pub reason: Reason,
    pub detail: Option<String>,
    /// The verdict of the last request (e.g. `would_reject` in audit, `reject` in enforce).
    pub last_verdict: Verdict,
    pub last_mode: Mode,
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub certificate: Option<CertificateSummary>,
    pub sources: Vec<IpAddr>,
    /// The gRPC method (`package.Service/Method`) of the client's last gRPC request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_method: Option<String>,
    /// In a fleet: which instances saw this client, and how often each (`count` is the sum).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seen_by: Vec<SeenBy>,
}

impl ClientRecord {
    /// The issuer of the client's certificate, empty without one.
    pub fn issuer(&self) -> String {
        self.certificate.as_ref().map(|c| c.issuer.clone()).unwrap_or_default()
    }

    pub fn key(&self) -> RecordKey {
        (self.client.clone(), self.issuer(), self.reason)
    }
}

/// One instance's share of a client record in a fleet.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SeenBy {
    pub instance: String,
    pub count: u64,
    pub last_seen: i64,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CertificateSummary {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub sha256: String,
    pub not_after: i64,
}

/// Client name, issuer and reason: the same name from another issuer is another client
/// (perhaps an impostor).
pub type RecordKey = (String, String, Reason);

#[derive(Clone, Default)]
struct RouteRejections {
    records: HashMap<RecordKey, ClientRecord>,
    /// Changed since the last [`RejectionStore::take_dirty`], for the durable store.
    dirty: HashSet<RecordKey>,
    dropped: u64,
}

/// The route's recorded clients, for the API.
#[derive(Clone, Debug, Serialize)]
pub struct RouteRejectionsView {
    pub route: String,
    /// Which clients these are (see [`super::VerdictFilter`]).
    pub verdict: &'static str,
    pub clients: Vec<ClientRecord>,
    /// Clients not recorded because the route's cap was reached.
    pub dropped: u64,
    /// Events lost, across all routes, because the recording queue was full.
    pub queue_dropped: u64,
}

#[derive(Clone)]
pub struct RejectionStore {
    routes: HashMap<Arc<str>, RouteRejections>,
    cap_per_route: usize,
}

impl Default for RejectionStore {
    fn default() -> Self {
        RejectionStore::new(super::RECORDS_PER_ROUTE)
    }
}

impl RejectionStore {
    pub fn new(cap_per_route: usize) -> Self {
        RejectionStore {
            routes: HashMap::new(),
            cap_per_route,
        }
    }

    pub fn add(&mut self, e: RejectionEvent) {
        let Some(reason) = e.verdict.reason() else { return };
        let client = client_name(&e);
        let issuer = e
            .peer
            .as_ref()
            .and_then(|p| p.identity.as_ref().ok())
            .map(|id| id.issuer.clone())
            .unwrap_or_default();
        let route = self.routes.entry(e.route.clone()).or_default();
        let key = (client, issuer, reason);
        let cap = self.cap_per_route;
        let len = route.records.len();
        match route.records.get_mut(&key) {
            Some(r) => {
                r.count += 1;
                r.last_seen = r.last_seen.max(e.at);
                r.last_verdict = e.verdict;
                r.last_mode = e.mode;
                if let Some(d) = &e.detail {
                    if r.detail.as_deref() != Some(&**d) {
                        r.detail = Some(d.to_string());
                    }
                }
                if let Some(peer) = &e.peer {
                    // The newest certificate of a rotating client is the one to look at.
                    if r.certificate.as_ref().map(|c| &c.sha256) != peer.identity.as_ref().ok().map(|i| &i.sha256) {
                        r.certificate = summary(peer);
                    }
                }
                if let Some(ip) = e.source {
                    remember(&mut r.sources, ip);
                }
                if let Some(m) = &e.grpc_method {
                    if r.grpc_method.as_deref() != Some(&**m) {
                        r.grpc_method = Some(m.to_string());
                    }
                }
            }
            None if len >= cap => {
                route.dropped += 1;
                return;
            }
            None => {
                let detail = e
                    .detail
                    .as_deref()
                    .map(str::to_string)
                    .or_else(|| identity_detail(reason, &e));
                let record = ClientRecord {
                    client: key.0.clone(),
                    reason,
                    detail,
                    last_verdict: e.verdict,
                    last_mode: e.mode,
                    count: 1,
                    first_seen: e.at,
                    last_seen: e.at,
                    certificate: e.peer.as_deref().and_then(summary),
                    sources: e.source.into_iter().collect(),
                    grpc_method: e.grpc_method.as_deref().map(str::to_string),
                    seen_by: Vec::new(),
                };
                route.records.insert(key.clone(), record);
            }
        }
        route.dirty.insert(key);
    }

    /// Puts back a record read from the durable store (at startup).
    pub fn restore(&mut self, route: &str, record: ClientRecord) {
        let key = record.key();
        let route = self.routes.entry(route.into()).or_default();
        if route.records.len() < self.cap_per_route {
            route.records.insert(key, record);
        }
    }

    /// Records changed since the last call, with their route.
    pub fn take_dirty(&mut self) -> Vec<(Arc<str>, ClientRecord)> {
        let mut out = Vec::new();
        for (name, route) in &mut self.routes {
            for key in route.dirty.drain() {
                if let Some(r) = route.records.get(&key) {
                    out.push((name.clone(), r.clone()));
                }
            }
        }
        out
    }

    /// Forgets clients not seen since `before` (retention).
    pub fn forget_older_than(&mut self, before: i64) {
        for route in self.routes.values_mut() {
            route.records.retain(|_, r| r.last_seen >= before);
        }
    }

    /// Distinct clients of a route seen since `since` (Unix seconds).
    pub fn distinct_clients(&self, route: &str, since: i64) -> usize {
        let Some(r) = self.routes.get(route) else { return 0 };
        let mut names: Vec<&str> = r
            .records
            .values()
            .filter(|rec| rec.last_seen >= since)
            .map(|rec| rec.client.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }

    /// Every record of every route, for a full resync of a fleet store.
    pub fn all(&self) -> Vec<(Arc<str>, ClientRecord)> {
        self.routes
            .iter()
            .flat_map(|(route, r)| r.records.values().map(move |c| (route.clone(), c.clone())))
            .collect()
    }

    pub fn view(&self, route: &str) -> RouteRejectionsView {
        let (clients, dropped) = match self.routes.get(route) {
            Some(r) => {
                let mut clients: Vec<ClientRecord> = r.records.values().cloned().collect();
                clients.sort_by(|a, b| b.count.cmp(&a.count).then(a.client.cmp(&b.client)));
                (clients, r.dropped)
            }
            None => (Vec::new(), 0),
        };
        RouteRejectionsView {
            route: route.to_string(),
            verdict: super::VerdictFilter::default().as_str(),
            clients,
            dropped,
            queue_dropped: 0,
        }
    }
}

/// Allow-list failures carry no detail from verification; say which SANs were offered.
fn identity_detail(reason: Reason, e: &RejectionEvent) -> Option<String> {
    if !matches!(reason, Reason::IdentityNotAllowed | Reason::WildcardSan) {
        return None;
    }
    let id = e.peer.as_ref()?.identity.as_ref().ok()?;
    let sans: Vec<String> = id.sans().collect();
    Some(if sans.is_empty() {
        "certificate has no SANs".to_string()
    } else {
        format!("not on the allow list: {}", sans.join(", "))
    })
}

/// Most recent first, at most [`RECENT_SOURCES`].
fn remember(sources: &mut Vec<IpAddr>, ip: IpAddr) {
    if let Some(pos) = sources.iter().position(|s| *s == ip) {
        sources.remove(pos);
    } else if sources.len() >= RECENT_SOURCES {
        sources.pop();
    }
    sources.insert(0, ip);
}

fn client_name(e: &RejectionEvent) -> String {
    match (&e.peer, e.source) {
        (Some(peer), _) => match &peer.identity {
            Ok(id) => id.display_name(),
            Err(_) => format!(
                "sha256:{}",
                peer.leaf
                    .digest(openssl::hash::MessageDigest::sha256())
                    .map(|d| crate::tls::hex(&d))
                    .unwrap_or_default()
            ),
        },
        (None, Some(ip)) => format!("addr:{ip}"),
        (None, None) => "addr:unknown".to_string(),
    }
}

pub(super) fn summary(peer: &PeerCertificate) -> Option<CertificateSummary> {
    let id = peer.identity.as_ref().ok()?;
    Some(CertificateSummary {
        uris: id.uris.clone(),
        dns: id.dns.clone(),
        subject: id.subject.clone(),
        issuer: id.issuer.clone(),
        serial: id.serial.clone(),
        sha256: id.sha256.clone(),
        not_after: id.not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(route: &Arc<str>, ip: [u8; 4], at: i64) -> RejectionEvent {
        RejectionEvent {
            route: route.clone(),
            mode: Mode::Audit,
            verdict: Verdict::WouldReject(Reason::NoCert),
            detail: None,
            peer: None,
            source: Some(IpAddr::from(ip)),
            at,
            grpc_method: None,
        }
    }

    #[test]
    fn records_aggregate_per_client_and_reason_with_first_and_last_seen() {
        let route: Arc<str> = "r".into();
        let mut store = RejectionStore::new(10);
        store.add(event(&route, [10, 0, 0, 1], 100));
        store.add(event(&route, [10, 0, 0, 1], 105));
        store.add(event(&route, [10, 0, 0, 2], 103));
        let view = store.view("r");
        assert_eq!(view.clients.len(), 2);
        let first = &view.clients[0];
        assert_eq!(
            (first.client.as_str(), first.count, first.first_seen, first.last_seen),
            ("addr:10.0.0.1", 2, 100, 105)
        );
    }

    #[test]
    fn memory_is_bounded_per_route_and_what_is_dropped_is_counted() {
        let route: Arc<str> = "r".into();
        let mut store = RejectionStore::new(3);
        for i in 0..10u8 {
            store.add(event(&route, [10, 0, 0, i], 1));
        }
        // known clients still count after the cap is reached
        store.add(event(&route, [10, 0, 0, 0], 2));
        let view = store.view("r");
        assert_eq!(view.clients.len(), 3);
        assert_eq!(view.dropped, 7);
        assert_eq!(view.clients.iter().map(|c| c.count).sum::<u64>(), 4);
    }

    #[test]
    fn a_record_keeps_the_five_most_recent_source_addresses() {
        let ca = crate::devpki::CertificateAuthority::root("ca").unwrap();
        let cert = ca.issue(&crate::devpki::LeafSpec::client("spiffe://t/a")).unwrap();
        let peer = Arc::new(PeerCertificate::from_pem(cert.cert_pem.as_bytes()).unwrap());
        let route: Arc<str> = "r".into();
        let mut store = RejectionStore::new(10);
        for i in 0..8u8 {
            store.add(RejectionEvent {
                peer: Some(peer.clone()),
                verdict: Verdict::WouldReject(Reason::UntrustedIssuer),
                ..event(&route, [10, 0, 1, i], i64::from(i))
            });
        }
        let view = store.view("r");
        assert_eq!(view.clients.len(), 1);
        let record = &view.clients[0];
        assert_eq!(record.client, "uri:spiffe://t/a");
        assert_eq!(record.count, 8);
        let newest_first: Vec<IpAddr> = (3..8u8).rev().map(|i| IpAddr::from([10, 0, 1, i])).collect();
        assert_eq!(record.sources, newest_first);
        assert_eq!(record.certificate.as_ref().unwrap().uris, ["spiffe://t/a"]);
    }
}
