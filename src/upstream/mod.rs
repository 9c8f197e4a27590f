//! Upstream pools: several backends per route, picked by round robin or least
//! connections (on `pingora-load-balancing`), with active health checks, passive ejection
//! after consecutive connection failures, timeouts and bounded retries.

mod grpc_health;
mod pool;

use std::net::SocketAddr;
use std::time::Duration;

pub use pool::{spawn_maintenance, BackendStats, BackendView, Chosen, Pool, PoolRegistry};

/// A route's pool as configured: plain data, compared across reloads to keep a pool (and
/// its health) when nothing about it changed.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSpec {
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub health: Option<HealthSpec>,
    pub passive: PassiveSpec,
    pub timeouts: Timeouts,
    /// Extra attempts for idempotent requests when connecting fails.
    pub retries: u8,
    /// How often DNS targets are resolved again.
    pub dns_refresh: Duration,
    /// What the gateway speaks to the backends (and their health checks).
    pub protocol: Protocol,
}

/// The HTTP version spoken to a pool's backends. Data of the upstream peer, as Pingora's
/// peer options are: one proxy path for all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 (over TLS or not).
    #[default]
    Http1,
    /// HTTP/2 over TLS, ALPN h2 only.
    H2,
    /// HTTP/2 in cleartext with prior knowledge (what gRPC servers inside a cluster speak).
    H2c,
    /// Over TLS, ALPN: h2 preferred, HTTP/1.1 allowed.
    Auto,
}

impl Protocol {
    /// (max, min) HTTP versions for Pingora's peer options.
    pub fn http_versions(self) -> (u8, u8) {
        match self {
            Protocol::Http1 => (1, 1),
            Protocol::H2 | Protocol::H2c => (2, 2),
            Protocol::Auto => (2, 1),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Address {
        addr: SocketAddr,
        weight: usize,
    },
    /// A name resolved periodically; `resolved` holds the addresses found at compile time.
    Dns {
        host: String,
        port: u16,
        weight: usize,
        resolved: Vec<SocketAddr>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    LeastConnections,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HealthSpec {
    pub check: HealthProbe,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: usize,
    pub unhealthy_threshold: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PassiveSpec {
    /// Consecutive connection failures that eject a backend; 0 turns ejection off.
    pub max_failures: u32,
    pub ejection: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Connect including the TLS handshake.
    pub connect_total: Duration,
    /// Each wait for the backend's response (headers, then every body read).
    pub read: Duration,
    pub write: Duration,
    /// Each wait on an upgraded (WebSocket) or streaming gRPC exchange, which may stay
    /// quiet far longer than a response takes; after it, the stream is closed cleanly.
    pub stream_idle: Duration,
}

/// What an active health check asks of a backend.
#[derive(Clone, Debug, PartialEq)]
pub enum HealthProbe {
    /// A TCP connect.
    Tcp,
    /// A GET of this path that must answer 2xx.
    Http { path: String },
    /// `grpc.health.v1.Health/Check` for this service ("" for the server) answering SERVING.
    Grpc { service: String },
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            connect_total: Duration::from_secs(10),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            stream_idle: Duration::from_secs(300),
        }
    }
}

impl PoolSpec {
    /// One backend, defaults everywhere else.
    pub fn single(addr: SocketAddr) -> Self {
        PoolSpec {
            targets: vec![Target::Address { addr, weight: 1 }],
            balance: Balance::RoundRobin,
            health: None,
            passive: PassiveSpec {
                max_failures: 3,
                ejection: Duration::from_secs(30),
            },
            timeouts: Timeouts::default(),
            retries: 1,
            dns_refresh: Duration::from_secs(30),
            protocol: Protocol::Http1,
        }
    }
}
