//! A serde mirror of one policy file. Unknown keys are errors; meaning is checked in
//! `compile`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::policy::{CrlStale, Mode};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub trust_bundles: BTreeMap<String, RawTrustBundle>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub owners: Vec<RawOwner>,
}

/// Who to tell about a client: the first entry that matches it wins.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOwner {
    #[serde(rename = "match")]
    pub matcher: RawOwnerMatch,
    pub team: String,
    #[serde(default)]
    pub contact: Option<String>,
}

/// Exactly one of the fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOwnerMatch {
    pub uri: Option<String>,
    pub uri_prefix: Option<String>,
    pub dns: Option<String>,
    pub cidr: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub address: String,
    pub tls: RawListenerTls,
    /// How long a client may take to send its ClientHello (e.g. `10s`).
    #[serde(default)]
    pub handshake_timeout: Option<String>,
    /// How long a client may take to send a whole request head (e.g. `30s`).
    #[serde(default)]
    pub request_header_timeout: Option<String>,
    #[serde(default)]
    pub refusal_page: Option<RawRefusalPage>,
}

/// The operator's words on the page a refused browser shows; plain text, checked in `compile`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefusalPage {
    #[serde(default)]
    pub help_url: Option<String>,
    #[serde(default)]
    pub contact: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Vec<RawServerCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerCertificate {
    pub hosts: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustBundle {
    pub ca: PathBuf,
    #[serde(default)]
    pub intermediates: Option<PathBuf>,
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// Intermediates allowed between leaf and anchor (OpenSSL's verify_depth).
    #[serde(default)]
    pub max_chain_depth: Option<u32>,
    /// Strict profile checks this bundle relaxes (a legacy PKI).
    #[serde(default)]
    pub relax: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub upstream: RawUpstream,
    #[serde(default)]
    pub mtls: Option<RawMtls>,
    /// Overrides the listener's refusal page, field by field.
    #[serde(default)]
    pub refusal_page: Option<RawRefusalPage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: String,
    #[serde(default = "root_prefix")]
    pub path_prefix: String,
}

fn root_prefix() -> String {
    "/".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// One backend (`HOST:PORT`); or use `backends` / `dns` for a pool.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// A name re-resolved every `dns_refresh` (`HOST:PORT`).
    #[serde(default)]
    pub dns: Option<String>,
    #[serde(default)]
    pub dns_refresh: Option<String>,
    #[serde(default)]
    pub balance: Option<crate::upstream::Balance>,
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub passive_ejection: Option<RawPassiveEjection>,
    #[serde(default)]
    pub timeouts: Option<RawTimeouts>,
    /// Extra attempts for idempotent requests when connecting fails (default 1).
    #[serde(default)]
    pub retries: Option<u8>,
    #[serde(default)]
    pub tls: Option<RawUpstreamTls>,
    /// `http1` (default), `h2` (over TLS, ALPN h2), `h2c` (cleartext, prior knowledge),
    /// `auto` (over TLS: h2 preferred, HTTP/1.1 allowed).
    #[serde(default)]
    pub protocol: Option<crate::upstream::Protocol>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: String,
    #[serde(default)]
    pub weight: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// `tcp` (connect), `http` (GET `path`, 2xx expected) or `grpc` (the standard
    /// `grpc.health.v1.Health/Check`, SERVING expected), over the pool's protocol.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub path: Option<String>,
    /// For `grpc`: the service name to ask about (default: the server as a whole).
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub healthy_threshold: Option<usize>,
    #[serde(default)]
    pub unhealthy_threshold: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassiveEjection {
    pub max_failures: u32,
    #[serde(default)]
    pub ejection: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(default)]
    pub connect: Option<String>,
    /// Connect including the TLS handshake.
    #[serde(default)]
    pub connect_total: Option<String>,
    #[serde(default)]
    pub read: Option<String>,
    #[serde(default)]
    pub write: Option<String>,
    /// How long an upgraded (WebSocket) or streaming gRPC exchange may stay quiet.
    #[serde(default)]
    pub stream_idle: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMtls {
    pub mode: Mode,
    #[serde(default)]
    pub trust: Option<String>,
    #[serde(default)]
    pub allow: Vec<RawAllow>,
    /// Enforce for this percentage of clients, audit for the rest.
    #[serde(default)]
    pub enforce_percent: Option<u8>,
    #[serde(default)]
    pub exempt: Vec<RawExemption>,
    #[serde(default)]
    pub auto_rollback: Option<RawAutoRollback>,
    #[serde(default)]
    pub crl_stale: Option<CrlStale>,
    /// A candidate policy evaluated beside the live one, never deciding anything.
    #[serde(default)]
    pub shadow: Option<RawShadow>,
    /// How long before expiry a client certificate is listed for renewal (e.g. `14d`).
    #[serde(default)]
    pub renewal_window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub trust: String,
    #[serde(default)]
    pub allow: Vec<RawAllow>,
    #[serde(default)]
    pub crl_stale: Option<CrlStale>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExemption {
    /// `uri:…`, `dns:…`, `ip:…` or `email:…`
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default)]
    pub cidr: Option<String>,
    /// A date (`2027-01-31`, through the end of that day, UTC) or an RFC 3339 time.
    pub until: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoRollback {
    pub max_reject_ratio: f64,
    /// e.g. `60s`, `5m`
    #[serde(default = "default_window")]
    pub window: String,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_window() -> String {
    "60s".to_string()
}

fn default_min_requests() -> u64 {
    50
}

/// Exactly one of the fields; checked in `compile` so the message can say so.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    pub uri: Option<String>,
    pub uri_prefix: Option<String>,
    pub dns: Option<String>,
    pub ip: Option<String>,
    pub email: Option<String>,
}
