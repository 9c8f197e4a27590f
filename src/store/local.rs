//! One instance, no server: the embedded SQLite history and the state directory are the
//! whole truth, so there is nothing to share. Every call answers at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{FleetPicture, InstanceBatch, InstanceInfo, OverrideChange, RouteTotals, Store, StoreError, StoreHealth};

#[derive(Default)]
pub struct LocalStore {
    versions: AtomicU64,
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        "local".to_string()
    }

    fn health(&self) -> StoreHealth {
        StoreHealth::Local
    }

    fn is_fleet(&self) -> bool {
        false
    }

    async fn publish(&self, _me: &InstanceInfo, _batch: &InstanceBatch) -> Result<(), StoreError> {
        Ok(())
    }

    async fn append_override(&self, _change: &OverrideChange) -> Result<u64, StoreError> {
        Ok(self.versions.fetch_add(1, Ordering::Relaxed) + 1)
    }

    async fn overrides_since(&self, _version: u64) -> Result<Vec<OverrideChange>, StoreError> {
        Ok(Vec::new())
    }

    async fn current_overrides(&self) -> Result<(u64, Vec<OverrideChange>), StoreError> {
        Ok((self.versions.load(Ordering::Relaxed), Vec::new()))
    }

    async fn wait_for_changes(&self, max: Duration) {
        tokio::time::sleep(max).await;
    }

    async fn heartbeat(&self, _me: &InstanceInfo) -> Result<(), StoreError> {
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        Ok(Vec::new())
    }

    async fn picture(&self, _since: i64, _minutes_since: i64) -> Result<FleetPicture, StoreError> {
        Ok(FleetPicture::default())
    }

    async fn route_totals(&self) -> Result<RouteTotals, StoreError> {
        Ok(RouteTotals::new())
    }

    async fn lead(&self, _task: &str) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn prune(&self, _before: i64) -> Result<(), StoreError> {
        Ok(())
    }
}
