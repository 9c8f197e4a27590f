use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use futures::FutureExt;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::{Backend, Backends};
use serde::Serialize;

use super::{Balance, HealthProbe, PoolSpec, Target};
use crate::policy::UpstreamTls;

/// What the gateway knows about one backend, kept across DNS refreshes and reloads.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub in_flight: AtomicUsize,
    pub consecutive_failures: AtomicU32,
    /// Unix seconds until which passive ejection keeps the backend out; 0 when not ejected.
    pub ejected_until: AtomicI64,
    pub requests: AtomicU64,
    pub connect_failures: AtomicU64,
}

/// A backend picked for one attempt.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
}

#[derive(Debug, Serialize)]
pub struct BackendView {
    pub address: SocketAddr,
    pub weight: usize,
    /// Passing active health checks (always true without them).
    pub healthy: bool,
    pub ejected_until: Option<i64>,
    pub in_flight: usize,
    pub requests: u64,
    pub connect_failures: u64,
}

type StatsByAddr = Arc<Mutex<HashMap<SocketAddr, Arc<BackendStats>>>>;

fn stats_for(stats: &StatsByAddr, addr: SocketAddr) -> Arc<BackendStats> {
    stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(addr)
        .or_default()
        .clone()
}

/// Static addresses and DNS names. The first discovery returns what was resolved when
/// the config was compiled (so a pool serves from its first request); later ones resolve
/// the names again.
struct Discovery {
    targets: Vec<Target>,
    stats: StatsByAddr,
    first: AtomicUsize,
}

impl Discovery {
    fn backend(&self, addr: SocketAddr, weight: usize) -> Backend {
        let mut b = Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
            weight,
            ext: Default::default(),
        };
        b.ext.insert(stats_for(&self.stats, addr));
        b
    }
}

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let first = self.first.fetch_add(1, Ordering::Relaxed) == 0;
        let mut set = BTreeSet::new();
        for t in &self.targets {
            match t {
                Target::Address { addr, weight } => {
                    set.insert(self.backend(*addr, *weight));
                }
                Target::Dns {
                    host,
                    port,
                    weight,
                    resolved,
                } => {
                    let found: Vec<SocketAddr> = if first {
                        resolved.clone()
                    } else {
                        match tokio::net::lookup_host((host.as_str(), *port)).await {
                            Ok(addrs) => addrs.collect(),
                            // keep serving the last answer rather than emptying the pool
                            Err(e) => {
                                tracing::warn!(host = %host, error = %e, "DNS refresh failed; keeping the previous addresses");
                                return Err(pingora::Error::because(
                                    pingora::ErrorType::InternalError,
                                    "DNS refresh",
                                    e,
                                ));
                            }
                        }
                    };
                    for addr in found {
                        set.insert(self.backend(addr, *weight));
                    }
                }
            }
        }
        Ok((set, HashMap::new()))
    }
}

/// One backend as a pick reads it.
struct Slot {
    addr: SocketAddr,
    weight: usize,
    healthy: bool,
    stats: Arc<BackendStats>,
}

impl Slot {
    /// In-flight requests per unit of weight, for least connections.
    fn load(&self) -> usize {
        self.stats.in_flight.load(Ordering::Relaxed) * 1000 / self.weight.max(1)
    }
}

/// The pool's backends as requests pick them. Membership, weights and health change only
/// when discovery or a health check runs, and the table is rebuilt after each, so a pick
/// reads one snapshot and asks pingora-load-balancing nothing (no hashing, no copy of a
/// `Backend`, no allocation).
#[derive(Default)]
struct Table {
    slots: Box<[Slot]>,
    /// Round robin's order: each slot's index as many times as its weight.
    weighted: Box<[u32]>,
}

impl Table {
    fn build(backends: &Backends) -> Table {
        let slots: Box<[Slot]> = backends
            .get_backend()
            .iter()
            .filter_map(|b| {
                Some(Slot {
                    addr: *b.addr.as_inet()?,
                    weight: b.weight,
                    healthy: backends.ready(b),
                    stats: b.ext.get::<Arc<BackendStats>>()?.clone(),
                })
            })
            .collect();
        Table::of(slots)
    }

    fn of(slots: Box<[Slot]>) -> Table {
        let weighted = slots
            .iter()
            .enumerate()
            .flat_map(|(i, s)| std::iter::repeat_n(i as u32, s.weight))
            .collect();
        Table { slots, weighted }
    }

    /// The weighted pick of this turn, or when it cannot serve, the first after it that can.
    fn round_robin(&self, turn: usize, usable: impl Fn(&Slot) -> bool) -> Option<&Slot> {
        let n = self.slots.len();
        let first = *self.weighted.get(turn % self.weighted.len().max(1))? as usize;
        (0..n).map(|i| &self.slots[(first + i) % n]).find(|s| usable(s))
    }

    /// The least loaded usable backend; ties go in turn.
    fn least_connections(&self, turn: usize, usable: impl Fn(&Slot) -> bool) -> Option<&Slot> {
        let n = self.slots.len();
        (0..n)
            .map(|i| &self.slots[(turn + i) % n])
            .filter(|s| usable(s))
            .min_by_key(|s| s.load())
    }
}

/// A route's backends at run time. Shared by every snapshot whose route has the same spec.
pub struct Pool {
    pub spec: PoolSpec,
    /// Discovery and health checks (pingora-load-balancing); requests read `table`.
    backends: Backends,
    table: ArcSwap<Table>,
    turn: AtomicUsize,
    stats: StatsByAddr,
    last_health_check: Mutex<Option<Instant>>,
    last_dns: Mutex<Instant>,
}

impl Pool {
    pub fn new(spec: PoolSpec, tls: Option<&UpstreamTls>) -> Pool {
        let stats: StatsByAddr = Arc::default();
        let discovery = Discovery {
            targets: spec.targets.clone(),
            stats: stats.clone(),
            first: AtomicUsize::new(0),
        };
        let mut backends = Backends::new(Box::new(discovery));
        if let Some(h) = &spec.health {
            backends.set_health_check(health_check(&spec, h, tls));
        }
        // the first discovery answers from memory: the pool is complete before any request
        if let Some(Err(e)) = backends.update(|_| ()).now_or_never() {
            tracing::error!(error = %e, "cannot build upstream pool");
        }
        let table = ArcSwap::from_pointee(Table::build(&backends));
        Pool {
            spec,
            backends,
            table,
            turn: AtomicUsize::new(0),
            stats,
            last_health_check: Mutex::new(None),
            last_dns: Mutex::new(Instant::now()),
        }
    }

    /// The next backend to try: healthy, not ejected, not tried yet for this request.
    pub fn select(&self, now: i64, tried: &[SocketAddr]) -> Option<Chosen> {
        let table = self.table.load();
        let usable =
            |s: &Slot| s.healthy && s.stats.ejected_until.load(Ordering::Relaxed) <= now && !tried.contains(&s.addr);
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let slot = match self.spec.balance {
            Balance::RoundRobin => table.round_robin(turn, usable),
            Balance::LeastConnections => table.least_connections(turn, usable),
        }?;
        Some(Chosen {
            addr: slot.addr,
            stats: slot.stats.clone(),
        })
    }

    /// A connection attempt failed: after `max_failures` in a row the backend is ejected.
    pub fn connect_failed(&self, chosen: &Chosen, now: i64) {
        chosen.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        let n = chosen.stats.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let p = self.spec.passive;
        if p.max_failures > 0 && n >= p.max_failures {
            chosen
                .stats
                .ejected_until
                .store(now + p.ejection.as_secs() as i64, Ordering::Relaxed);
            chosen.stats.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(backend = %chosen.addr, failures = n, ejected_for = ?p.ejection, "upstream backend ejected");
        }
    }

    pub fn connected(&self, chosen: &Chosen) {
        chosen.stats.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Health checks and DNS refreshes that are due.
    pub async fn maintain(&self) {
        if let Some(h) = &self.spec.health {
            let due = {
                let mut last = self.last_health_check.lock().unwrap_or_else(|e| e.into_inner());
                let due = last.is_none_or(|t| t.elapsed() >= h.interval);
                if due {
                    *last = Some(Instant::now());
                }
                due
            };
            if due {
                self.backends.run_health_check(true).await;
                self.table.store(Arc::new(Table::build(&self.backends)));
            }
        }
        let has_dns = self.spec.targets.iter().any(|t| matches!(t, Target::Dns { .. }));
        let refresh = has_dns && {
            let mut last = self.last_dns.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.elapsed() >= self.spec.dns_refresh;
            if due {
                *last = Instant::now();
            }
            due
        };
        if refresh && self.backends.update(|_| ()).await.is_ok() {
            self.table.store(Arc::new(Table::build(&self.backends)));
        }
    }

    pub fn view(&self, now: i64) -> Vec<BackendView> {
        let backends = &self.backends;
        backends
            .get_backend()
            .iter()
            .filter_map(|b| {
                let addr = *b.addr.as_inet()?;
                let stats = stats_for(&self.stats, addr);
                let ejected = stats.ejected_until.load(Ordering::Relaxed);
                Some(BackendView {
                    address: addr,
                    weight: b.weight,
                    healthy: backends.ready(b),
                    ejected_until: (ejected > now).then_some(ejected),
                    in_flight: stats.in_flight.load(Ordering::Relaxed),
                    requests: stats.requests.load(Ordering::Relaxed),
                    connect_failures: stats.connect_failures.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

fn health_check(
    spec: &PoolSpec,
    h: &super::HealthSpec,
    tls: Option<&UpstreamTls>,
) -> Box<dyn pingora_load_balancing::health_check::HealthCheck + Send + Sync + 'static> {
    let host = tls.map_or("localhost", |t| t.sni.as_str());
    // HTTP and gRPC checks connect, verify and authenticate exactly like the traffic does
    let peer = |peer: &mut pingora::upstreams::peer::HttpPeer| {
        peer.options.connection_timeout = Some(h.timeout);
        peer.options.read_timeout = Some(h.timeout);
        let (max, min) = spec.protocol.http_versions();
        peer.options.set_http_version(max, min);
        if let Some(t) = tls {
            peer.options.ca = Some(t.ca.clone());
            peer.client_cert_key = t.client_cert.clone();
            peer.group_key = t.trust_key;
        }
    };
    match &h.check {
        HealthProbe::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.consecutive_success = h.healthy_threshold;
            check.consecutive_failure = h.unhealthy_threshold;
            check.peer_template.options.connection_timeout = Some(h.timeout);
            check
        }
        HealthProbe::Http { path } => {
            let mut check = HttpHealthCheck::new(host, tls.is_some());
            check.consecutive_success = h.healthy_threshold;
            check.consecutive_failure = h.unhealthy_threshold;
            peer(&mut check.peer_template);
            if let Ok(uri) = http::Uri::try_from(path.as_str()) {
                check.req.set_uri(uri);
            }
            check.validator = Some(Box::new(|resp| {
                if resp.status.is_success() {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::Custom("unhealthy"),
                        format!("status {}", resp.status),
                    )
                }
            }));
            Box::new(check)
        }
        HealthProbe::Grpc { service } => {
            let sni = tls.map(|t| t.sni.clone()).unwrap_or_default();
            let mut template = pingora::upstreams::peer::HttpPeer::new("0.0.0.0:1", tls.is_some(), sni);
            peer(&mut template);
            let mut check = super::grpc_health::GrpcHealthCheck::new(template, host, service);
            check.consecutive_success = h.healthy_threshold;
            check.consecutive_failure = h.unhealthy_threshold;
            Box::new(check)
        }
    }
}

/// Keeps pools (and so their health and counters) across reloads when a route's pool is
/// configured the same; the control plane is its only user.
#[derive(Default)]
pub struct PoolRegistry {
    pools: Mutex<HashMap<Arc<str>, RegisteredPool>>,
}

/// A pool as last built for a route: its spec, the fingerprint of its TLS settings, and
/// the pool while a snapshot still uses it.
type RegisteredPool = (PoolSpec, Option<u64>, Weak<Pool>);

impl PoolRegistry {
    pub fn pool(&self, route: &Arc<str>, spec: &PoolSpec, tls: Option<&UpstreamTls>) -> Arc<Pool> {
        let tls_key = tls.map(|t| t.trust_key ^ t.client_cert_not_after.unwrap_or(0) as u64);
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, k, weak)) = pools.get(route) {
            if s == spec && *k == tls_key {
                if let Some(p) = weak.upgrade() {
                    return p;
                }
            }
        }
        let pool = Arc::new(Pool::new(spec.clone(), tls));
        pools.insert(route.clone(), (spec.clone(), tls_key, Arc::downgrade(&pool)));
        pools.retain(|_, (_, _, w)| w.strong_count() > 0);
        pool
    }
}

/// How long the maintenance loop sleeps between rounds.
pub const MAINTAIN_EVERY: Duration = Duration::from_millis(500);

/// Runs due health checks and DNS refreshes of every pool in the live snapshot.
pub fn spawn_maintenance(snapshot: crate::policy::SharedSnapshot) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAINTAIN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let current = snapshot.load_full();
            let mut pools: Vec<&Arc<Pool>> = current.pools().collect();
            pools.sort_by_key(|p| Arc::as_ptr(p));
            pools.dedup_by_key(|p| Arc::as_ptr(p));
            futures::future::join_all(pools.iter().map(|p| p.maintain())).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(weights: &[usize]) -> Table {
        let slots: Box<[Slot]> = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Slot {
                addr: SocketAddr::from(([127, 0, 0, 1], 8000 + i as u16)),
                weight,
                healthy: true,
                stats: Arc::default(),
            })
            .collect();
        Table::of(slots)
    }

    fn port(slot: Option<&Slot>) -> Option<u16> {
        slot.map(|s| s.addr.port() - 8000)
    }

    #[test]
    fn round_robin_follows_weights_and_skips_what_cannot_serve() {
        let t = table(&[1, 2]);
        let picks: Vec<_> = (0..6).map(|turn| port(t.round_robin(turn, |_| true))).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(1), Some(0), Some(1), Some(1)]);
        assert_eq!(port(t.round_robin(0, |s| s.addr.port() != 8000)), Some(1));
        assert_eq!(port(t.round_robin(1, |s| s.addr.port() != 8001)), Some(0));
        assert_eq!(port(t.round_robin(0, |_| false)), None);
        assert_eq!(port(Table::default().round_robin(0, |_| true)), None);
    }

    #[test]
    fn least_connections_weighs_in_flight_requests_and_takes_ties_in_turn() {
        let t = table(&[1, 1, 2]);
        assert_eq!(port(t.least_connections(1, |_| true)), Some(1));
        t.slots[1].stats.in_flight.store(1, Ordering::Relaxed);
        t.slots[2].stats.in_flight.store(1, Ordering::Relaxed);
        assert_eq!(port(t.least_connections(1, |_| true)), Some(0));
        t.slots[0].stats.in_flight.store(1, Ordering::Relaxed);
        // one in flight on weight 2 is half the load of one on weight 1
        assert_eq!(port(t.least_connections(0, |_| true)), Some(2));
        assert_eq!(port(t.least_connections(0, |s| s.addr.port() != 8002)), Some(0));
        assert_eq!(port(Table::default().least_connections(0, |_| true)), None);
    }
}
