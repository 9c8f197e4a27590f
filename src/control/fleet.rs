//! The fleet side of the control plane, for a shared store: overrides go to the store's
//! log and come back from it, this instance's audit data is published and every
//! instance's is read back, and this instance says it is alive. The control plane stays
//! the only writer of the snapshot: what comes from the store reaches it as commands.
//!
//! The way back never depends on the store: a change is in force on this instance before
//! the store hears of it; if the store cannot take it, it waits (in the state directory)
//! and is written to the log once the store is back. Notifications are hints; the log is
//! the truth, read on every notification, on every reconnect and every few seconds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::ControlHandle;
use crate::audit::{AuditState, Recorder, RouteSeries};
use crate::policy::{Override, SharedSnapshot};
use crate::proxy::unix_now;
use crate::store::{InstanceBatch, InstanceInfo, OverrideChange, SharedStore, StoreError, StoreHealth};

/// How often the log is read when no notification comes.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// How often this instance publishes, beats and reads the fleet's picture back.
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How long an operator's change may wait for the store before the answer says it is
/// in force on this instance only (it is in force here already; this is only the answer).
const DELIVER_WITHIN: Duration = Duration::from_millis(200);
/// How long the fleet store keeps history (as the local store does).
const RETENTION: i64 = 7 * 86_400;
/// How often history past the retention is deleted.
const PRUNE_EVERY: i64 = 600;
/// An instance silent this long is shown as such.
pub const SILENT_AFTER: i64 = 10;
/// Audit rows kept waiting for the store, at most; beyond, rows are dropped (counted) and
/// a full publish from this instance's history follows once the store is back.
const SPOOL_CAP: usize = 200_000;

/// Where an operator's change went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "delivery", rename_all = "snake_case")]
pub enum FleetDelivery {
    /// In the fleet's log: every instance applies it.
    Fleet { version: u64 },
    /// In force here only; written to the log once the store is back.
    ThisInstanceOnly { since: i64, message: String },
}

/// What this instance remembers of the fleet across restarts.
#[derive(Default, Serialize, Deserialize)]
struct FleetState {
    /// Whether this instance has synced with the fleet store once (its overrides from
    /// before are in the log then).
    #[serde(default)]
    joined: bool,
    /// The last log version applied here.
    applied: u64,
    /// Changes made here that the store has not taken yet, oldest first.
    pending: Vec<OverrideChange>,
}

fn fleet_state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("fleet.json")
}

/// Shared by the control handle (to deliver changes) and the sync tasks.
pub struct Fleet {
    store: SharedStore,
    instance: String,
    state: Mutex<FleetState>,
    state_path: Option<PathBuf>,
    /// Audit rows waiting for the store, and rows given up (spool full).
    spool: Mutex<Spool>,
}

#[derive(Default)]
struct Spool {
    batch: InstanceBatch,
    dropped: u64,
    full_resync: bool,
}

/// Counts shown by the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct FleetStatus {
    pub store: String,
    pub health: StoreHealth,
    pub instance: String,
    pub applied_version: u64,
    pub pending_overrides: usize,
    pub spooled_rows: usize,
    pub spool_dropped: u64,
}

/// What this instance last knew of the fleet. A file that cannot be read or parsed starts
/// afresh (the store's log is the truth), and says so: changes waiting in it are lost.
fn read_state(path: &Path) -> FleetState {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "the fleet state file does not parse; starting without it (changes that waited in it are lost)");
            FleetState::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FleetState::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the fleet state file; starting without it (changes that waited in it are lost)");
            FleetState::default()
        }
    }
}

impl Fleet {
    pub fn new(store: SharedStore, instance: &str, state_dir: Option<&Path>) -> Arc<Fleet> {
        let state_path = state_dir.map(fleet_state_path);
        let state = state_path.as_deref().map(read_state).unwrap_or_default();
        Arc::new(Fleet {
            store,
            instance: instance.to_string(),
            state: Mutex::new(state),
            state_path,
            spool: Mutex::default(),
        })
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn status(&self) -> FleetStatus {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let spool = self.spool.lock().unwrap_or_else(|e| e.into_inner());
        FleetStatus {
            store: self.store.describe(),
            health: self.store.health(),
            instance: self.instance.clone(),
            applied_version: state.applied,
            pending_overrides: state.pending.len(),
            spooled_rows: spool.batch.records.len() + spool.batch.minutes.len() + spool.batch.certificates.len(),
            spool_dropped: spool.dropped,
        }
    }

    /// Sends a change made on this instance to the fleet's log, waiting a little; if the
    /// store does not take it in time, it waits its turn and the answer says so.
    pub async fn deliver(&self, route: &str, value: Option<Override>) -> FleetDelivery {
        let change = OverrideChange {
            version: 0,
            route: route.to_string(),
            value,
            instance: self.instance.clone(),
            at: unix_now(),
        };
        let reachable = matches!(self.store.health(), StoreHealth::Reachable);
        let queued_before = !self.state.lock().unwrap_or_else(|e| e.into_inner()).pending.is_empty();
        // earlier changes still waiting go first: the log keeps the order they were made in
        if reachable && !queued_before {
            if let Ok(Ok(version)) = tokio::time::timeout(DELIVER_WITHIN, self.store.append_override(&change)).await {
                return FleetDelivery::Fleet { version };
            }
        }
        self.with_state(|s| s.pending.push(change));
        let (since, why) = match self.store.health() {
            StoreHealth::Unreachable { since, .. } => (since, "fleet store unreachable since"),
            _ if queued_before => (
                unix_now(),
                "queued behind changes made while the fleet store was unreachable, at",
            ),
            _ => (unix_now(), "the fleet store did not answer in time at"),
        };
        FleetDelivery::ThisInstanceOnly {
            since,
            message: format!(
                "applied on this instance only: {why} {}; the change goes to the fleet log once it is back",
                crate::admin::rfc3339(since)
            ),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut FleetState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut state);
        if let Some(path) = &self.state_path {
            if let Ok(text) = serde_json::to_vec_pretty(&*state) {
                if let Err(e) = super::state::write_atomic(path, &text) {
                    tracing::warn!(error = %e, "cannot save the fleet state; pending changes are kept in memory");
                }
            }
        }
        out
    }

    /// Takes this second's audit rows into the spool (newest values win).
    fn spool(&self, batch: InstanceBatch) {
        let mut spool = self.spool.lock().unwrap_or_else(|e| e.into_inner());
        merge(&mut spool.batch, batch);
        let rows = spool.batch.records.len() + spool.batch.minutes.len();
        if rows > SPOOL_CAP {
            let over = rows - SPOOL_CAP;
            let cut = over.min(spool.batch.minutes.len());
            spool.batch.minutes.drain(..cut);
            let cut_records = (over - cut).min(spool.batch.records.len());
            spool.batch.records.drain(..cut_records);
            spool.dropped += over as u64;
            spool.full_resync = true;
        }
    }
}

/// Folds `newer` into `into`, keeping one row per key (the newer one): the spool holds
/// absolute values, so only the latest of each row matters.
fn merge(into: &mut InstanceBatch, newer: InstanceBatch) {
    fn fold<T, K: std::hash::Hash + Eq>(rows: &mut Vec<T>, newer: Vec<T>, key: impl Fn(&T) -> K) {
        let mut by_key: std::collections::HashMap<K, T> = std::mem::take(rows)
            .into_iter()
            .chain(newer)
            .map(|row| (key(&row), row))
            .collect();
        *rows = by_key.drain().map(|(_, row)| row).collect();
    }
    fold(&mut into.records, newer.records, |(route, c)| (route.clone(), c.key()));
    fold(&mut into.minutes, newer.minutes, |(route, b)| (route.clone(), b.minute));
    fold(&mut into.certificates, newer.certificates, |c| c.sha256.clone());
    into.route_totals = newer.route_totals;
}

/// Starts the sync tasks of a fleet store.
pub fn spawn(
    fleet: Arc<Fleet>,
    control: ControlHandle,
    snapshot: SharedSnapshot,
    recorder: Recorder,
    mut batches: mpsc::Receiver<InstanceBatch>,
    started_at: i64,
) {
    // overrides: push what waits, then follow the log
    let f = fleet.clone();
    let c = control.clone();
    let s = snapshot.clone();
    tokio::spawn(async move {
        let mut synced_once = false;
        loop {
            if matches!(f.store.health(), StoreHealth::Reachable) {
                match sync_overrides(&f, &c, &s, !synced_once).await {
                    Ok(()) => synced_once = true,
                    Err(e) => tracing::debug!(error = %e, "fleet override sync failed; retrying"),
                }
            } else {
                synced_once = false;
            }
            f.store.wait_for_changes(POLL_EVERY).await;
        }
    });
    // audit rows, heartbeat and the fleet's picture, once a second
    tokio::spawn(async move {
        let mut last_prune = 0;
        let mut tick = tokio::time::interval(BEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_reachable = false;
        loop {
            tokio::select! {
                Some(batch) = batches.recv() => fleet.spool(batch),
                _ = tick.tick() => {
                    let reachable = matches!(fleet.store.health(), StoreHealth::Reachable);
                    let me = me(&fleet, &control, started_at);
                    if reachable {
                        // back (or first time): everything this instance knows, in case
                        // the store missed some of it
                        // both flags are taken now: one full publish answers every reason for it
                        let asked = recorder.take_fleet_resync() | take_full_resync(&fleet);
                        if !was_reachable || asked {
                            fleet.spool(recorder.full_batch());
                        }
                        let batch = std::mem::take(&mut fleet.spool.lock().unwrap_or_else(|e| e.into_inner()).batch);
                        let published = async {
                            fleet.store.heartbeat(&me).await?;
                            if !batch.is_empty() {
                                fleet.store.publish(&me, &batch).await?;
                            }
                            Ok::<(), StoreError>(())
                        }
                        .await;
                        let now = unix_now();
                        if published.is_ok() && now - last_prune >= PRUNE_EVERY {
                            // any instance may prune: deleting what is past the retention is idempotent
                            last_prune = now;
                            if let Err(e) = fleet.store.prune(now - RETENTION).await {
                                tracing::warn!(error = %e, "pruning the fleet store failed");
                            }
                        }
                        match published {
                            Ok(()) => refresh_view(&fleet, &recorder, &snapshot).await,
                            Err(e) => {
                                tracing::debug!(error = %e, "publishing to the fleet store failed; rows stay spooled");
                                fleet.spool(batch);
                                recorder.set_fleet_view(None);
                            }
                        }
                    } else {
                        // the fleet's picture is no longer known: show this instance's own
                        recorder.set_fleet_view(None);
                    }
                    was_reachable = reachable;
                }
            }
        }
    });
}

fn take_full_resync(fleet: &Fleet) -> bool {
    std::mem::take(&mut fleet.spool.lock().unwrap_or_else(|e| e.into_inner()).full_resync)
}

fn me(fleet: &Fleet, control: &ControlHandle, started_at: i64) -> InstanceInfo {
    let status = control.status();
    InstanceInfo {
        id: fleet.instance.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        generation: status.generation,
        content_hash: status.content_hash.clone(),
        last_seen: unix_now(),
    }
}

/// Pushes changes waiting here, then applies the log past the last version applied. The
/// first time after (re)connecting, the store's current overrides replace what this
/// instance holds (after its own waiting changes are in): the store is the truth.
async fn sync_overrides(
    fleet: &Fleet,
    control: &ControlHandle,
    snapshot: &SharedSnapshot,
    full: bool,
) -> Result<(), StoreError> {
    let pending = fleet.state.lock().unwrap_or_else(|e| e.into_inner()).pending.clone();
    for change in &pending {
        let version = fleet.store.append_override(change).await?;
        tracing::info!(route.name = %change.route, version, "a change made while the fleet store was unreachable is in the fleet log now");
        fleet.with_state(|s| {
            s.pending.retain(|p| p != change);
        });
    }
    let never_synced = !fleet.state.lock().unwrap_or_else(|e| e.into_inner()).joined;
    if never_synced {
        // this instance's overrides from before it joined the fleet go to the log first
        let overrides = snapshot.load().overrides.clone();
        for (route, value) in overrides.iter() {
            let change = OverrideChange {
                version: 0,
                route: route.clone(),
                value: Some(value.clone()),
                instance: fleet.instance.clone(),
                at: unix_now(),
            };
            fleet.store.append_override(&change).await?;
        }
    }
    if full || never_synced {
        let (top, current) = fleet.store.current_overrides().await?;
        let all = current.into_iter().filter_map(|c| Some((c.route, c.value?))).collect();
        control
            .replace_overrides_from_fleet(all)
            .await
            .map_err(|e| StoreError::Query(e.to_string()))?;
        fleet.with_state(|s| {
            s.applied = s.applied.max(top);
            s.joined = true;
        });
    }
    let applied = fleet.state.lock().unwrap_or_else(|e| e.into_inner()).applied;
    for change in fleet.store.overrides_since(applied).await? {
        control
            .apply_fleet_override(&change.route, change.value.clone())
            .await
            .map_err(|e| StoreError::Query(e.to_string()))?;
        fleet.with_state(|s| s.applied = change.version);
    }
    Ok(())
}

/// Reads every instance's audit data back and shows it in place of this instance's.
async fn refresh_view(fleet: &Fleet, recorder: &Recorder, snapshot: &SharedSnapshot) {
    let now = unix_now();
    match fleet
        .store
        .picture(now - RETENTION, now - crate::audit::MINUTES * 60)
        .await
    {
        Ok(picture) => {
            let current = snapshot.load();
            let mut view = AuditState::default();
            for (route, record) in picture.records {
                view.records_for(record.last_verdict).restore(&route, record);
            }
            let mut by_route: std::collections::HashMap<String, Vec<crate::audit::Bucket>> = Default::default();
            for (route, bucket) in picture.minutes {
                by_route.entry(route).or_default().push(bucket);
            }
            for (route, buckets) in by_route {
                let totals = current
                    .config
                    .route_by_name(&route)
                    .map(|(id, _)| current.counters(id).totals())
                    .unwrap_or_default();
                view.series
                    .insert(route.as_str().into(), RouteSeries::from_buckets(buckets, totals));
            }
            for c in picture.certificates {
                view.expiring.restore(c);
            }
            // what the fleet store does not hold stays this instance's
            recorder.read_local(|local| {
                view.renewals = local.renewals.clone();
                view.shadow_rejected = local.shadow_rejected.clone();
                view.shadow_passed = local.shadow_passed.clone();
            });
            recorder.set_fleet_view(Some(view));
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the fleet's picture; showing this instance's own");
            recorder.set_fleet_view(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Bucket, ClientRecord, Totals};
    use crate::policy::{Mode, Reason, Verdict};

    fn record(client: &str, count: u64) -> ClientRecord {
        ClientRecord {
            client: client.into(),
            reason: Reason::NoCert,
            detail: None,
            last_verdict: Verdict::WouldReject(Reason::NoCert),
            last_mode: Mode::Audit,
            count,
            first_seen: 1,
            last_seen: 2,
            certificate: None,
            sources: vec![],
            grpc_method: None,
            seen_by: vec![],
        }
    }

    #[test]
    fn spooled_rows_keep_the_newest_value_per_key() {
        let r: Arc<str> = "r".into();
        let mut spool = InstanceBatch::default();
        let minute = |m: i64, n: u64| {
            (
                r.clone(),
                Bucket {
                    minute: m,
                    counts: Totals {
                        requests: n,
                        ..Totals::default()
                    },
                },
            )
        };
        merge(
            &mut spool,
            InstanceBatch {
                records: vec![(r.clone(), record("a", 1)), (r.clone(), record("b", 1))],
                minutes: vec![minute(60, 3)],
                ..Default::default()
            },
        );
        merge(
            &mut spool,
            InstanceBatch {
                records: vec![(r.clone(), record("a", 5))],
                minutes: vec![minute(60, 7), minute(120, 1)],
                ..Default::default()
            },
        );
        let a = spool.records.iter().find(|(_, c)| c.client == "a").unwrap();
        assert_eq!((spool.records.len(), a.1.count), (2, 5));
        let m60 = spool.minutes.iter().find(|(_, b)| b.minute == 60).unwrap();
        assert_eq!((spool.minutes.len(), m60.1.counts.requests), (2, 7));
    }
}
