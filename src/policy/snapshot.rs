//! The compiled configuration and the one immutable [`Snapshot`] every request reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde::Serialize;

use super::{AllowList, Mode, MtlsPolicy, RouteId, RouteTable};
use crate::audit::RouteCounters;
use crate::tls::TrustAnchors;

/// Index of a trust bundle in its compiled config.
pub type BundleId = usize;

/// Everything the YAML says, with files loaded and checked. Produced by
/// `config::compile`, never modified afterwards.
pub struct CompiledConfig {
    /// SHA-256 over the names and contents of the policy files.
    pub content_hash: String,
    /// The policy files.
    pub files: Vec<PathBuf>,
    /// Every file read to build this config (policy files, PEMs, CRLs): what to watch.
    pub inputs: Vec<PathBuf>,
    pub listeners: Vec<Listener>,
    pub bundles: Vec<TrustBundle>,
    pub routes: Vec<Route>,
    pub by_name: HashMap<Arc<str>, RouteId>,
    pub table: RouteTable,
    pub owners: Vec<super::Owner>,
    /// The CA names each host's handshakes ask clients for, prebuilt.
    pub certificate_requests: crate::tls::CertificateRequests,
    /// What compiled but will fail clients (a stale CRL, a CA without a CRL), with file:line.
    pub warnings: Vec<crate::config::Diagnostic>,
}

pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// Non-empty; the first is served when SNI names no configured host.
    pub certificates: Vec<Arc<ServerCertificate>>,
    /// A client that has not sent its ClientHello by then is dropped.
    pub handshake_timeout: std::time::Duration,
    /// A request head not complete by then (from the connection's start, or on a kept-alive
    /// connection from the end of the keep-alive wait) closes the connection.
    pub request_header_timeout: std::time::Duration,
    /// What a browser refused on this listener reads; routes may override it.
    pub refusal_page: super::RefusalPage,
}

/// A certificate the gateway presents: leaf first, then its chain.
pub struct ServerCertificate {
    pub hosts: Vec<String>,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    pub source: PathBuf,
    pub not_after: i64,
}

/// What a route does when a CRL of its bundle is past its nextUpdate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrlStale {
    /// Every certificate the stale CRL should vouch for fails with `crl_invalid`.
    #[default]
    FailClosed,
    /// The stale CRL still revokes what it lists; other certificates pass.
    FailOpen,
}

pub struct TrustBundle {
    pub name: String,
    /// Bundles used by `crl_stale: fail-open` routes are compiled a second time, leniently.
    pub crl_stale: CrlStale,
    /// When each CRL of the bundle must be replaced (Unix seconds), by issuer.
    pub crl_next_updates: Vec<(String, i64)>,
    pub anchors: TrustAnchors,
    /// The files it was built from, for the admin page's certificate view.
    pub sources: Vec<PathBuf>,
    /// Bytes the anchors' names take in a CertificateRequest (DER plus length prefix).
    pub ca_name_bytes: usize,
    /// Where the bundle is defined: (policy file index, YAML path), for warnings.
    pub defined_at: (usize, String),
}

/// The most CA names a TLS CertificateRequest can carry: the list is a 16-bit length.
/// Beyond it the gateway sends no names rather than failing every handshake.
pub const MAX_CA_NAMES_BYTES: usize = 65_535;

/// The trust bundles that these routes evaluate, each once: the CA names a handshake
/// reaching them asks for.
pub fn bundles_of(routes: &[Route], ids: impl Iterator<Item = RouteId>) -> Vec<BundleId> {
    let mut used: Vec<BundleId> = ids.filter_map(|r| routes[r].trust).collect();
    used.sort_unstable();
    used.dedup();
    used
}

/// Bytes the CA names of these bundles take in a CertificateRequest.
pub fn ca_names_bytes(bundles: &[TrustBundle], used: &[BundleId]) -> usize {
    used.iter().map(|&b| bundles[b].ca_name_bytes).sum()
}

pub struct Route {
    pub name: Arc<str>,
    pub host: String,
    pub path_prefix: String,
    /// The mode the YAML gives; a runtime override may replace it.
    pub mode: Mode,
    pub trust: Option<BundleId>,
    pub crl_stale: CrlStale,
    pub mtls: MtlsPolicy,
    pub auto_rollback: Option<AutoRollback>,
    /// A candidate policy rehearsed on live traffic; it never changes a decision.
    pub shadow: Option<ShadowPolicy>,
    pub upstream: Upstream,
    /// Overrides the listener's `refusal_page`, field by field.
    pub refusal_page: super::RefusalPage,
    /// Seconds before expiry from which a verified client certificate is listed for renewal.
    pub renewal_window: i64,
}

/// The next trust configuration of a route, evaluated as enforce would.
#[derive(Debug)]
pub struct ShadowPolicy {
    pub trust: BundleId,
    pub allow: AllowList,
}

/// When an enforcing route rejects too much, it switches itself to audit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AutoRollback {
    pub max_reject_ratio: f64,
    pub window_secs: u64,
    pub min_requests: u64,
}

pub struct Upstream {
    pub pool: crate::upstream::PoolSpec,
    pub tls: Option<UpstreamTls>,
}

/// Proxy → backend TLS. Verification of the backend is always on: `sni` is required and
/// the backend certificate must chain to `ca` and match `sni`.
pub struct UpstreamTls {
    pub sni: String,
    pub ca: Arc<Box<[X509]>>,
    pub client_cert: Option<Arc<pingora::utils::tls::CertKey>>,
    pub client_cert_not_after: Option<i64>,
    pub sources: Vec<PathBuf>,
    /// Fingerprint of `ca`. Pingora's upstream pool does not key connections by CA, so
    /// this goes into the peer's group key: a connection verified under one CA is never
    /// reused for a route (or a reloaded config) that trusts another.
    pub trust_key: u64,
}

impl CompiledConfig {
    pub fn route_by_name(&self, name: &str) -> Option<(RouteId, &Route)> {
        let id = *self.by_name.get(name)?;
        Some((id, &self.routes[id]))
    }

    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The listener a connection arrived on, by its local address; by port when the
    /// listener binds a wildcard address.
    pub fn listener_at(&self, local: Option<SocketAddr>) -> Option<&Listener> {
        let local = local?;
        self.listeners
            .iter()
            .find(|l| l.address == local)
            .or_else(|| self.listeners.iter().find(|l| l.address.port() == local.port()))
    }
}

/// Why a route runs another mode than its YAML says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideKind {
    /// An operator rolled the route back to its previous mode.
    Rollback,
    /// An operator set the mode directly.
    SetMode,
    /// The gateway rolled the route back on its own (reject ratio above the limit).
    AutoRollback,
}

/// A runtime mode for one route that outlives reloads until an operator clears it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Override {
    pub mode: Mode,
    pub kind: OverrideKind,
    /// The YAML mode when the override was set, to flag a YAML change under it.
    pub yaml_mode_when_set: Mode,
    /// Unix seconds.
    pub since: i64,
    pub reason: Option<String>,
}

/// Runtime overrides by route name (names survive reloads; indices do not).
pub type Overrides = BTreeMap<String, Override>;

/// The unit of atomic change: one compiled config plus the overrides in force. A reload
/// or a rollback builds a new one and swaps it in whole, so a request never sees new
/// trust with old routes or a half-applied change.
pub struct Snapshot {
    /// Increases with every applied config; overrides do not change it.
    pub generation: u64,
    /// Unix seconds at which this generation's config was applied.
    pub loaded_at: i64,
    pub config: Arc<CompiledConfig>,
    pub overrides: Arc<Overrides>,
    effective: Box<[Mode]>,
    /// Per route, what outlives this snapshot: counters and the upstream pool.
    runtime: Box<[RouteRuntime]>,
    cert_hosts: HashSet<Box<str>>,
    any_route_wants_cert: bool,
}

impl Snapshot {
    pub fn new(
        generation: u64,
        loaded_at: i64,
        config: Arc<CompiledConfig>,
        overrides: Arc<Overrides>,
        runtime: Box<[RouteRuntime]>,
    ) -> Self {
        debug_assert_eq!(runtime.len(), config.routes.len(), "one runtime per route");
        let effective: Box<[Mode]> = config
            .routes
            .iter()
            .map(|r| overrides.get(&*r.name).map_or(r.mode, |o| o.mode))
            .collect();
        let mut cert_hosts = HashSet::new();
        for (route, mode) in config.routes.iter().zip(effective.iter()) {
            // a shadow policy needs the certificate too, even on a route that is off
            if mode.wants_client_cert() || route.shadow.is_some() {
                cert_hosts.insert(route.host.as_str().into());
            }
        }
        let any_route_wants_cert = !cert_hosts.is_empty();
        Snapshot {
            generation,
            loaded_at,
            config,
            overrides,
            effective,
            runtime,
            cert_hosts,
            any_route_wants_cert,
        }
    }

    /// The same config under other overrides (a rollback: no recompilation).
    pub fn with_overrides(&self, overrides: Arc<Overrides>) -> Self {
        Snapshot::new(
            self.generation,
            self.loaded_at,
            self.config.clone(),
            overrides,
            self.runtime.clone(),
        )
    }

    /// A snapshot with counters and pools of its own, for tools and tests that run
    /// outside a gateway (`phasegate verify`, benches).
    pub fn detached(config: Arc<CompiledConfig>) -> Self {
        let runtime = config
            .routes
            .iter()
            .map(|r| RouteRuntime {
                counters: Arc::default(),
                pool: Arc::new(crate::upstream::Pool::new(
                    r.upstream.pool.clone(),
                    r.upstream.tls.as_ref(),
                )),
            })
            .collect();
        Snapshot::new(1, 0, config, Arc::new(Overrides::new()), runtime)
    }

    pub fn counters(&self, route: RouteId) -> &RouteCounters {
        &self.runtime[route].counters
    }

    pub fn pool(&self, route: RouteId) -> &Arc<crate::upstream::Pool> {
        &self.runtime[route].pool
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<crate::upstream::Pool>> {
        self.runtime.iter().map(|r| &r.pool)
    }

    pub fn effective_mode(&self, route: RouteId) -> Mode {
        self.effective[route]
    }

    /// Whether a handshake for this SNI should ask for a client certificate: yes when any
    /// route on the host evaluates certificates. Without SNI the request may go to any
    /// host, so the question is whether any route at all does.
    pub fn wants_client_cert(&self, sni: Option<&str>) -> bool {
        match sni {
            Some(host) => self.cert_hosts.contains(host),
            None => self.any_route_wants_cert,
        }
    }
}

/// What a route keeps across snapshots (found by route name when a snapshot is built).
#[derive(Clone)]
pub struct RouteRuntime {
    pub counters: Arc<RouteCounters>,
    pub pool: Arc<crate::upstream::Pool>,
}

/// Where the current snapshot lives. Many readers; the control plane is its only writer.
pub type SharedSnapshot = Arc<arc_swap::ArcSwap<Snapshot>>;
