//! The fleet's store on PostgreSQL (tokio-postgres, TLS through the project's OpenSSL).
//! Connections are kept by one background task: a query connection, and a dedicated
//! connection that LISTENs for override changes and whose messages it polls itself.
//! Nothing waits for a connection: a call made while the store is unreachable fails at
//! once with [`StoreError::Unreachable`], and the task reconnects in the background.

mod rows;
mod target;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client};

pub use target::PgTarget;

use super::{FleetPicture, InstanceBatch, InstanceInfo, OverrideChange, RouteTotals, Store, StoreError, StoreHealth};

/// Schema migrations, applied in order at start by the first instance (under an advisory
/// lock) and recorded in `phasegate_migrations`.
const MIGRATIONS: [(i32, &str); 2] = [
    (1, include_str!("migrations/0001_fleet.sql")),
    (2, include_str!("migrations/0002_ordered_overrides.sql")),
];
/// The advisory lock that serializes migrations across instances.
const MIGRATION_LOCK: i64 = 0x7068_6173_6567_0001;
/// The advisory lock held while a change enters the override log: one writer at a time, so
/// versions are taken in commit order and a reader past version N never misses one below N.
const LOG_LOCK: i64 = 0x7068_6173_6567_0002;
/// The channel override changes are announced on.
const CHANNEL: &str = "phasegate_overrides";
/// How long one call may take before the store counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the task waits before trying to reconnect.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

pub struct PgStore {
    target: PgTarget,
    client: ArcSwapOption<Client>,
    health: Mutex<StoreHealth>,
    /// Rung on every notification and every (re)connect.
    changes: Arc<Notify>,
    /// Tasks this instance leads on the current connection (advisory locks held by it).
    leading: Mutex<HashSet<String>>,
}

impl PgStore {
    /// A store that will keep connections to `target` once started.
    pub fn new(target: PgTarget) -> Arc<PgStore> {
        Arc::new(PgStore {
            target,
            client: ArcSwapOption::empty(),
            health: Mutex::new(StoreHealth::Unreachable {
                since: crate::proxy::unix_now(),
                error: "not connected yet".to_string(),
            }),
            changes: Arc::new(Notify::new()),
            leading: Mutex::new(HashSet::new()),
        })
    }

    async fn keep_connected(self: Arc<Self>) {
        loop {
            match self.connect_once().await {
                Ok(listener_done) => {
                    self.set_health(StoreHealth::Reachable);
                    self.changes.notify_waiters();
                    tracing::info!(store = %self.target, "fleet store connected");
                    let _ = listener_done.await;
                    self.lost("the connection closed");
                }
                Err(StoreError::Unreachable(why)) => self.lost(&why),
                Err(e) => self.lost(&e.to_string()),
            }
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }

    /// Connects both connections, applies migrations, and LISTENs; the returned future
    /// ends when either connection is gone.
    async fn connect_once(&self) -> Result<tokio::task::JoinHandle<()>, StoreError> {
        let unreachable = |e: tokio_postgres::Error| StoreError::Unreachable(e.to_string());
        let (client, connection) = timed(self.target.connect()).await??;
        let (listen_client, mut listen_connection) = timed(self.target.connect()).await??;
        let query_done = tokio::spawn(async move {
            let _ = connection.await;
        });
        let changes = self.changes.clone();
        let listener = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| listen_connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => changes.notify_waiters(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        migrate(&client).await?;
        timed(listen_client.batch_execute(&format!("LISTEN {CHANNEL}")))
            .await?
            .map_err(unreachable)?;
        self.leading.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.client.store(Some(Arc::new(client)));
        Ok(tokio::spawn(async move {
            // the listen client must live as long as its connection is polled
            let _keep = listen_client;
            tokio::select! {
                _ = query_done => {}
                _ = listener => {}
            }
        }))
    }

    fn lost(&self, error: &str) {
        self.client.store(None);
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*health, StoreHealth::Unreachable { .. }) {
            tracing::warn!(store = %self.target, error, "fleet store unreachable; serving on with what this instance knows");
            *health = StoreHealth::Unreachable {
                since: crate::proxy::unix_now(),
                error: error.to_string(),
            };
        } else if let StoreHealth::Unreachable { error: e, .. } = &mut *health {
            *e = error.to_string();
        }
    }

    fn set_health(&self, h: StoreHealth) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = h;
    }

    fn client(&self) -> Result<Arc<Client>, StoreError> {
        match self.client.load_full() {
            Some(c) if !c.is_closed() => Ok(c),
            _ => Err(StoreError::Unreachable(match self.health() {
                StoreHealth::Unreachable { error, .. } => error,
                _ => "not connected".to_string(),
            })),
        }
    }

    /// A call's error: a closed connection or a timeout makes the store unreachable.
    fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        if e.is_closed() {
            self.lost(&e.to_string());
            StoreError::Unreachable(e.to_string())
        } else {
            StoreError::Query(e.to_string())
        }
    }
}

/// Runs a call with the store's timeout.
async fn timed<T>(call: impl std::future::Future<Output = T>) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| StoreError::Unreachable(format!("no answer within {CALL_TIMEOUT:?}")))
}

async fn migrate(client: &Client) -> Result<(), StoreError> {
    let q = |e: tokio_postgres::Error| StoreError::Query(format!("migrations: {e}"));
    timed(client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]))
        .await?
        .map_err(q)?;
    let result = async {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS phasegate_migrations (version INT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await?;
        let applied: HashSet<i32> = client
            .query("SELECT version FROM phasegate_migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (version, sql) in MIGRATIONS {
            if applied.contains(&version) {
                continue;
            }
            client.batch_execute("BEGIN").await?;
            client.batch_execute(sql).await?;
            client
                .execute(
                    "INSERT INTO phasegate_migrations (version, applied_at) VALUES ($1, $2)",
                    &[&version, &crate::proxy::unix_now()],
                )
                .await?;
            client.batch_execute("COMMIT").await?;
            tracing::info!(version, "fleet store schema migrated");
        }
        Ok::<(), tokio_postgres::Error>(())
    }
    .await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result.map_err(q)
}

#[async_trait]
impl Store for PgStore {
    fn start(self: Arc<Self>) {
        tokio::spawn(async move { self.keep_connected().await });
    }

    fn describe(&self) -> String {
        self.target.to_string()
    }

    fn health(&self) -> StoreHealth {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_fleet(&self) -> bool {
        true
    }

    async fn publish(&self, me: &InstanceInfo, batch: &InstanceBatch) -> Result<(), StoreError> {
        let client = self.client()?;
        timed(rows::publish(&client, me, batch))
            .await?
            .map_err(|e| self.failed(e))
    }

    async fn append_override(&self, change: &OverrideChange) -> Result<u64, StoreError> {
        let client = self.client()?;
        timed(rows::append_override(&client, change))
            .await?
            .map_err(|e| self.failed(e))
    }

    async fn overrides_since(&self, version: u64) -> Result<Vec<OverrideChange>, StoreError> {
        let client = self.client()?;
        timed(rows::overrides_since(&client, version))
            .await?
            .map_err(|e| self.failed(e))
    }

    async fn current_overrides(&self) -> Result<(u64, Vec<OverrideChange>), StoreError> {
        let client = self.client()?;
        timed(rows::current_overrides(&client))
            .await?
            .map_err(|e| self.failed(e))
    }

    async fn wait_for_changes(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.changes.notified()).await;
    }

    async fn heartbeat(&self, me: &InstanceInfo) -> Result<(), StoreError> {
        let client = self.client()?;
        timed(rows::heartbeat(&client, me)).await?.map_err(|e| self.failed(e))
    }

    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        let client = self.client()?;
        timed(rows::instances(&client)).await?.map_err(|e| self.failed(e))
    }

    async fn picture(&self, since: i64, minutes_since: i64) -> Result<FleetPicture, StoreError> {
        let client = self.client()?;
        timed(rows::picture(&client, since, minutes_since))
            .await?
            .map_err(|e| self.failed(e))
    }

    async fn route_totals(&self) -> Result<RouteTotals, StoreError> {
        let client = self.client()?;
        timed(rows::route_totals(&client)).await?.map_err(|e| self.failed(e))
    }

    async fn lead(&self, task: &str) -> Result<bool, StoreError> {
        if self.leading.lock().unwrap_or_else(|e| e.into_inner()).contains(task) {
            // the session still holds the lock: the connection has not been replaced
            return self.client().map(|_| true);
        }
        let client = self.client()?;
        let won: bool = timed(client.query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&task]))
            .await?
            .map_err(|e| self.failed(e))?
            .get(0);
        if won {
            self.leading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(task.to_string());
        }
        Ok(won)
    }

    async fn prune(&self, before: i64) -> Result<(), StoreError> {
        let client = self.client()?;
        timed(rows::prune(&client, before)).await?.map_err(|e| self.failed(e))
    }
}
