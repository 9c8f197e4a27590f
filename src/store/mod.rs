//! Where the state that a fleet of gateways shares lives: runtime overrides (with their
//! versioned change log), the audit inventory and per-minute series of every instance, the
//! instances themselves, and who leads fleet-wide decisions. One interface, two
//! implementations, chosen once at start: [`local::LocalStore`] for a single instance (its
//! embedded SQLite history and state directory are the whole truth) and
//! [`postgres::PgStore`] for a fleet. Nothing above this module knows which one runs.

pub mod local;
pub mod postgres;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::audit::SeenBy;
use crate::audit::{Bucket, ClientRecord, SeenCertificate};
use crate::policy::Override;

/// One change of one route's override, as the fleet's log keeps it. `value: None` clears.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideChange {
    /// Position in the fleet's log; 0 until the store has taken it.
    #[serde(default)]
    pub version: u64,
    pub route: String,
    pub value: Option<Override>,
    /// The instance the change was made on.
    pub instance: String,
    /// Unix seconds.
    pub at: i64,
}

/// A gateway process as the fleet sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub version: String,
    /// Unix seconds at which the process started.
    pub started_at: i64,
    pub generation: u64,
    pub content_hash: String,
    /// Unix seconds of its last heartbeat.
    pub last_seen: i64,
}

/// How the shared part is doing: a named state, shown on the page and in metrics, never
/// a silent fallback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StoreHealth {
    /// One instance: nothing to reach.
    Local,
    Reachable,
    /// Unix seconds since when the store could not be reached, and the last error.
    Unreachable {
        since: i64,
        error: String,
    },
}

/// What one instance publishes once a second: the absolute values of what changed, keyed
/// so that publishing the same rows twice changes nothing (a batch that failed is simply
/// published again later).
#[derive(Clone, Debug, Default)]
pub struct InstanceBatch {
    pub records: Vec<(Arc<str>, ClientRecord)>,
    /// Per route and minute, this instance's totals for that minute.
    pub minutes: Vec<(Arc<str>, Bucket)>,
    pub certificates: Vec<SeenCertificate>,
    /// Per route, this process's counter totals (requests, rejected) for fleet-wide
    /// automatic rollback, tagged with the process start so restarts add up.
    pub route_totals: Vec<(Arc<str>, u64, u64)>,
}

impl InstanceBatch {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.minutes.is_empty()
            && self.certificates.is_empty()
            && self.route_totals.is_empty()
    }
}

/// The fleet-wide picture of audit data, read back from the store.
#[derive(Default)]
pub struct FleetPicture {
    pub records: Vec<(String, ClientRecord)>,
    pub minutes: Vec<(String, Bucket)>,
    pub certificates: Vec<SeenCertificate>,
}

/// Fleet-wide counter totals of a route: (requests, rejected), summed over instances.
pub type RouteTotals = std::collections::HashMap<String, (u64, u64)>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Not connected, or a call timed out: the instance goes on with what it knows.
    #[error("fleet store unreachable: {0}")]
    Unreachable(String),
    /// The store answered with an error.
    #[error("fleet store: {0}")]
    Query(String),
    /// The store's URL or TLS settings are wrong.
    #[error("fleet store configuration: {0}")]
    Config(String),
}

/// The shared state's interface. Every call may fail; callers never put one on the
/// request path, and the way back (rollbacks) never waits for one.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Starts what the store runs in the background (connections); called once, on the
    /// control plane's runtime.
    fn start(self: Arc<Self>) {}
    /// `local` or `postgresql://user@host/db` (never a password).
    fn describe(&self) -> String;
    fn health(&self) -> StoreHealth;
    /// Whether other instances share this store (then reads and decisions are fleet-wide).
    fn is_fleet(&self) -> bool;
    /// Writes this instance's rows.
    async fn publish(&self, instance: &InstanceInfo, batch: &InstanceBatch) -> Result<(), StoreError>;
    /// Appends to the override log (and sets the route's current override) in one step;
    /// other instances are told. Returns the change's version.
    async fn append_override(&self, change: &OverrideChange) -> Result<u64, StoreError>;
    /// The log after `version`, in order.
    async fn overrides_since(&self, version: u64) -> Result<Vec<OverrideChange>, StoreError>;
    /// Every route's current override, and the log version they reflect.
    async fn current_overrides(&self) -> Result<(u64, Vec<OverrideChange>), StoreError>;
    /// Waits until the log may have grown (a notification, a reconnect, or `max`).
    async fn wait_for_changes(&self, max: std::time::Duration);
    async fn heartbeat(&self, me: &InstanceInfo) -> Result<(), StoreError>;
    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError>;
    /// Audit data of every instance: clients seen since `since`, per-minute counts since
    /// `minutes_since` (the series keeps a day), aggregated.
    async fn picture(&self, since: i64, minutes_since: i64) -> Result<FleetPicture, StoreError>;
    /// Per route, fleet-wide counter totals.
    async fn route_totals(&self) -> Result<RouteTotals, StoreError>;
    /// Whether this instance leads `task` (one instance at a time fleet-wide).
    async fn lead(&self, task: &str) -> Result<bool, StoreError>;
    /// Deletes history older than `before` (Unix seconds).
    async fn prune(&self, before: i64) -> Result<(), StoreError>;
}

pub type SharedStore = Arc<dyn Store>;

/// Where the shared state lives, as the command line gives it.
#[derive(Clone, Debug, Default)]
pub struct StoreSettings {
    /// `postgresql://…` for a fleet; `None` for one instance.
    pub url: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
}

/// The store the settings name; an unusable URL is an error before anything starts.
pub fn open(settings: &StoreSettings) -> Result<SharedStore, StoreError> {
    match &settings.url {
        None => Ok(Arc::new(local::LocalStore::default())),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let target = postgres::PgTarget::parse(url, settings.password_file.as_deref())?;
            Ok(postgres::PgStore::new(target))
        }
        Some(other) => Err(StoreError::Config(format!(
            "{:?} is not a store (expected postgresql://user@host:port/db)",
            other.split('@').next_back().unwrap_or(other)
        ))),
    }
}
