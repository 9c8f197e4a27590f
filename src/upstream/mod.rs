//! Upstream pools: several backends per route, picked by round robin or least
//! connections (on `pingora-load-balancing`), with active health checks, passive ejection
//! after consecutive connection failures, timeouts and bounded retries.

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
    /// `None`: a TCP connect; `Some(path)`: an HTTP GET that must answer 2xx.
    pub http_path: Option<String>,
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
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            connect_total: Duration::from_secs(10),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
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
        }
    }
}
