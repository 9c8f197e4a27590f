//! The control plane: the only writer of the live [`Snapshot`]. File changes, SIGHUP, the
//! admin API and the CLI all send it commands; it runs them one at a time, so a reload and
//! a rollback can never interleave.
//!
//! Reload contract: read → parse → validate → compile → one atomic swap. If any step fails
//! the last good snapshot keeps serving and the error is kept for `GET /api/config`.

pub mod fleet;
mod history;
mod rollback;
mod route_watch;
pub mod state;
mod watch;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use history::{diff, HistoryEntry, ReloadSource, RouteChange};
pub use rollback::{rollback_target, tightens, ModeChange};
pub use route_watch::spawn_route_watch;
pub use watch::{spawn_sighup_listener, FileWatcher};

use crate::audit::Recorder;
use crate::config::{self, Diagnostic, Diagnostics};
use crate::policy::{CompiledConfig, Mode, Override, OverrideKind, Overrides, RouteRuntime, SharedSnapshot, Snapshot};
use crate::proxy::unix_now;
use crate::upstream::PoolRegistry;

/// Applied generations kept for `GET /api/config/history`.
const HISTORY: usize = 50;
/// Mode changes remembered per route, for rollback targets.
const MODE_CHANGES: usize = 20;

/// What `GET /api/config` shows. Published by the control plane after every command.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigStatus {
    pub generation: u64,
    pub content_hash: String,
    pub loaded_at: i64,
    pub files: Vec<PathBuf>,
    pub last_error: Option<ReloadFailure>,
    pub last_attempt: Option<Attempt>,
    /// Failures to persist overrides (disk full, read-only); serving continues.
    pub state_error: Option<String>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Unix seconds at which this process started (counters "since start" begin here).
    pub started_at: i64,
    #[serde(skip)]
    pub history: Vec<HistoryEntry>,
    /// Recent mode changes of routes that have any, for rollback targets.
    #[serde(skip)]
    pub mode_changes: HashMap<String, Vec<ModeChange>>,
}

impl ConfigStatus {
    /// Where a rollback of `route`, now running `current`, would go.
    pub fn rollback_target(&self, route: &str, current: Mode) -> Mode {
        rollback_target(current, self.mode_changes.get(route).map_or(&[][..], |v| v.as_slice()))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub at: i64,
    pub source: ReloadSource,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReloadFailure {
    pub at: i64,
    pub source: ReloadSource,
    pub problems: Vec<Diagnostic>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReloadOutcome {
    Applied { generation: u64, changes: Vec<RouteChange> },
    Unchanged { generation: u64 },
    Rejected { generation: u64, problems: Vec<Diagnostic> },
}

/// A runtime change of one route's mode.
#[derive(Clone, Debug)]
pub enum OverrideRequest {
    /// Back to the mode before the route's last tightening, or to `to`.
    Rollback {
        to: Option<Mode>,
        reason: Option<String>,
    },
    SetMode {
        mode: Mode,
        reason: Option<String>,
    },
    /// The gateway's own rollback (reject ratio above the route's limit).
    AutoRollback {
        reason: String,
    },
    Clear,
}

#[derive(Clone, Debug, Serialize)]
pub struct OverrideOutcome {
    pub route: String,
    pub previous_mode: Mode,
    pub mode: Mode,
    pub yaml_mode: Mode,
    #[serde(rename = "override")]
    pub active: Option<Override>,
    /// Whether the override reached the state file; it is in force either way.
    pub persisted: bool,
    pub persist_error: Option<String>,
    /// In a fleet: whether the fleet's log took the change (every instance applies it), or
    /// it is in force on this instance only for now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<fleet::FleetDelivery>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No route has this name in the current configuration.
    #[error("no route named {0:?}")]
    UnknownRoute(String),
    /// The route has no trust bundle, so only `off` is possible.
    #[error("route {route:?} has no trust bundle, so it cannot run in {mode} (add mtls.trust to its YAML)")]
    NoTrustBundle { route: String, mode: Mode },
    /// A rollback only loosens; tightening is a mode change.
    #[error("route {route:?} runs {running}; a rollback to {to} would tighten it (a rollback only loosens: set the mode with POST /api/routes/{route}/mode)")]
    RollbackTightens { route: String, running: Mode, to: Mode },
    /// The control plane is not running (shutting down).
    #[error("the control plane is shutting down")]
    Stopped,
}

enum Command {
    Reload {
        source: ReloadSource,
        reply: oneshot::Sender<ReloadOutcome>,
    },
    Override {
        route: String,
        request: OverrideRequest,
        reply: oneshot::Sender<Result<OverrideOutcome, ControlError>>,
    },
    /// One route's override as the fleet's log says (`None` clears it).
    FleetOverride {
        route: String,
        value: Option<Override>,
        reply: oneshot::Sender<()>,
    },
    /// Every override as the fleet store holds them, in place of this instance's.
    FleetReplace {
        overrides: Overrides,
        reply: oneshot::Sender<()>,
    },
}

/// How other tasks talk to the control plane and read its status.
#[derive(Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<Command>,
    status: Arc<ArcSwap<ConfigStatus>>,
    /// In a fleet: where changes made here are delivered.
    fleet: Option<Arc<fleet::Fleet>>,
}

impl ControlHandle {
    /// Sends one command and waits for its answer.
    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ControlError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(command(reply)).await.map_err(|_| ControlError::Stopped)?;
        rx.await.map_err(|_| ControlError::Stopped)
    }

    pub async fn reload(&self, source: ReloadSource) -> Result<ReloadOutcome, ControlError> {
        self.call(|reply| Command::Reload { source, reply }).await
    }

    /// Changes a route's mode on this instance at once; in a fleet, then hands the change
    /// to the fleet's log (waiting a moment for it; the answer says where it went).
    pub async fn change_mode(&self, route: &str, request: OverrideRequest) -> Result<OverrideOutcome, ControlError> {
        let route_name = route.to_string();
        let mut outcome = self
            .call(|reply| Command::Override {
                route: route_name,
                request,
                reply,
            })
            .await??;
        if let Some(fleet) = &self.fleet {
            outcome.fleet = Some(fleet.deliver(route, outcome.active.clone()).await);
        }
        Ok(outcome)
    }

    pub fn fleet(&self) -> Option<&Arc<fleet::Fleet>> {
        self.fleet.as_ref()
    }

    /// Sets a route's override as the fleet's log says, through the control plane.
    pub async fn apply_fleet_override(&self, route: &str, value: Option<Override>) -> Result<(), ControlError> {
        let route = route.to_string();
        self.call(|reply| Command::FleetOverride { route, value, reply }).await
    }

    /// Replaces every override with the fleet store's, through the control plane.
    pub async fn replace_overrides_from_fleet(&self, overrides: Overrides) -> Result<(), ControlError> {
        self.call(|reply| Command::FleetReplace { overrides, reply }).await
    }

    pub fn status(&self) -> Arc<ConfigStatus> {
        self.status.load_full()
    }

    /// Whether the control plane task is still receiving commands.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// The single writer. Built synchronously at startup (so a bad config or state file stops
/// the start with a clear error), then run as a task.
pub struct ControlPlane {
    snapshot: SharedSnapshot,
    recorder: Recorder,
    pools: PoolRegistry,
    config_dir: PathBuf,
    state_path: Option<PathBuf>,
    history: VecDeque<HistoryEntry>,
    mode_changes: HashMap<String, VecDeque<ModeChange>>,
    status: Arc<ArcSwap<ConfigStatus>>,
    rx: mpsc::Receiver<Command>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration:\n{0}")]
    Config(#[from] Diagnostics),
    #[error(transparent)]
    State(#[from] state::StateError),
}

impl ControlPlane {
    pub fn start(
        config_dir: PathBuf,
        state_dir: Option<PathBuf>,
        recorder: Recorder,
        fleet: Option<Arc<fleet::Fleet>>,
    ) -> Result<(ControlPlane, ControlHandle, SharedSnapshot), StartupError> {
        let config = Arc::new(config::load(&config_dir)?);
        let state_path = state_dir.as_deref().map(state::overrides_path);
        let mut overrides = match &state_path {
            Some(p) => state::load(p)?,
            None => Overrides::new(),
        };
        let stale: Vec<String> = overrides
            .keys()
            .filter(|name| config.route_by_name(name).is_none())
            .cloned()
            .collect();
        for name in &stale {
            tracing::warn!(route.name = %name, "dropping the override of a route the configuration no longer has");
            overrides.remove(name);
        }
        let now = unix_now();
        let pools = PoolRegistry::default();
        let runtime = route_runtime(&config, &recorder, &pools);
        let snapshot = Snapshot::new(1, now, config.clone(), Arc::new(overrides), runtime);
        let entry = HistoryEntry {
            generation: 1,
            at: now,
            source: ReloadSource::Startup,
            content_hash: config.content_hash.clone(),
            changes: diff(None, &config),
            dropped_overrides: stale,
        };
        let shared: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        let status = Arc::new(ArcSwap::from_pointee(ConfigStatus {
            generation: 1,
            content_hash: config.content_hash.clone(),
            loaded_at: now,
            files: config.files.clone(),
            last_error: None,
            last_attempt: Some(Attempt {
                at: now,
                source: ReloadSource::Startup,
            }),
            state_error: None,
            reloads_ok: 0,
            reloads_failed: 0,
            started_at: now,
            history: vec![entry.clone()],
            mode_changes: HashMap::new(),
        }));
        let (tx, rx) = mpsc::channel(64);
        let plane = ControlPlane {
            snapshot: shared.clone(),
            recorder,
            pools,
            config_dir,
            state_path,
            history: VecDeque::from([entry]),
            mode_changes: HashMap::new(),
            status: status.clone(),
            rx,
        };
        let handle = ControlHandle { tx, status, fleet };
        Ok((plane, handle, shared))
    }

    /// Runs commands until every handle is gone. A reload compiles on a blocking thread
    /// while the loop goes on: a rollback, a mode change or a clear never waits behind a
    /// reload, whatever the policy directory holds. Reloads asked for while one compiles are
    /// answered by one more compile after it (the files may have changed meanwhile).
    pub async fn run(mut self) {
        type Replies = Vec<(ReloadSource, oneshot::Sender<ReloadOutcome>)>;
        let mut compiling: Option<(tokio::task::JoinHandle<Result<CompiledConfig, Diagnostics>>, Replies)> = None;
        let mut queued: Replies = Vec::new();
        loop {
            if compiling.is_none() && !queued.is_empty() {
                let dir = self.config_dir.clone();
                let task = tokio::task::spawn_blocking(move || config::load(&dir));
                compiling = Some((task, std::mem::take(&mut queued)));
            }
            tokio::select! {
                command = self.rx.recv() => match command {
                    None => break,
                    Some(Command::Reload { source, reply }) => queued.push((source, reply)),
                    Some(Command::Override { route, request, reply }) => {
                        let _ = reply.send(self.change_mode(&route, request));
                    }
                    Some(Command::FleetOverride { route, value, reply }) => {
                        self.apply_from_fleet(|overrides| match value {
                            Some(v) => {
                                overrides.insert(route, v);
                            }
                            None => {
                                overrides.remove(&route);
                            }
                        });
                        let _ = reply.send(());
                    }
                    Some(Command::FleetReplace { overrides, reply }) => {
                        self.apply_from_fleet(|current| *current = overrides);
                        let _ = reply.send(());
                    }
                },
                compiled = async { (&mut compiling.as_mut().expect("guarded").0).await }, if compiling.is_some() => {
                    let (_, replies) = compiling.take().expect("guarded");
                    let compiled = compiled.unwrap_or_else(|e| {
                        Err(Diagnostics::whole_file(&self.config_dir, format!("reload task failed: {e}")))
                    });
                    let source = replies.first().map_or(ReloadSource::Api, |(s, _)| *s);
                    let outcome = self.finish_reload(compiled, source);
                    for (_, reply) in replies {
                        let _ = reply.send(outcome.clone());
                    }
                }
            }
        }
    }

    /// Applies a compiled configuration, or records why it was rejected. The overrides in
    /// force now (set while it compiled) carry over.
    fn finish_reload(&mut self, compiled: Result<CompiledConfig, Diagnostics>, source: ReloadSource) -> ReloadOutcome {
        let at = unix_now();
        let current = self.snapshot.load_full();
        let result = compiled.and_then(|config| {
            listeners_unchanged(&current.config, &config, &self.config_dir)?;
            Ok(config)
        });
        let mut status = (*self.status.load_full()).clone();
        status.last_attempt = Some(Attempt { at, source });
        let outcome = match result {
            Err(problems) => {
                tracing::error!(source = ?source, problems = %problems, "configuration rejected; the last good configuration keeps serving");
                status.reloads_failed += 1;
                status.last_error = Some(ReloadFailure {
                    at,
                    source,
                    problems: problems.0.clone(),
                });
                ReloadOutcome::Rejected {
                    generation: current.generation,
                    problems: problems.0,
                }
            }
            Ok(config) if config.content_hash == current.config.content_hash => {
                status.last_error = None;
                ReloadOutcome::Unchanged {
                    generation: current.generation,
                }
            }
            Ok(config) => {
                status.reloads_ok += 1;
                status.last_error = None;
                let (entry, snapshot) = self.apply(&current, config, source, at);
                // apply() published the new mode history; keep it in this copy too
                status.mode_changes = self.mode_change_map();
                status.generation = snapshot.generation;
                status.content_hash = snapshot.config.content_hash.clone();
                status.loaded_at = at;
                status.files = snapshot.config.files.clone();
                tracing::info!(generation = snapshot.generation, source = ?source, changes = entry.changes.len(), "configuration applied");
                let outcome = ReloadOutcome::Applied {
                    generation: snapshot.generation,
                    changes: entry.changes.clone(),
                };
                self.history.push_back(entry);
                while self.history.len() > HISTORY {
                    self.history.pop_front();
                }
                status.history = self.history.iter().cloned().collect();
                outcome
            }
        };
        self.status.store(Arc::new(status));
        outcome
    }

    fn apply(
        &mut self,
        current: &Snapshot,
        config: CompiledConfig,
        source: ReloadSource,
        at: i64,
    ) -> (HistoryEntry, Arc<Snapshot>) {
        let config = Arc::new(config);
        let changes = diff(Some(&current.config), &config);
        let mut overrides = (*current.overrides).clone();
        let dropped: Vec<String> = overrides
            .keys()
            .filter(|name| config.route_by_name(name).is_none())
            .cloned()
            .collect();
        for name in &dropped {
            overrides.remove(name);
        }
        let runtime = route_runtime(&config, &self.recorder, &self.pools);
        let snapshot = Arc::new(Snapshot::new(
            current.generation + 1,
            at,
            config,
            Arc::new(overrides),
            runtime,
        ));
        self.note_mode_changes(current, &snapshot, at);
        self.snapshot.store(snapshot.clone());
        if !dropped.is_empty() {
            self.persist();
        }
        let entry = HistoryEntry {
            generation: snapshot.generation,
            at,
            source,
            content_hash: snapshot.config.content_hash.clone(),
            changes,
            dropped_overrides: dropped,
        };
        (entry, snapshot)
    }

    fn change_mode(&mut self, route: &str, request: OverrideRequest) -> Result<OverrideOutcome, ControlError> {
        let current = self.snapshot.load_full();
        let (id, r) = current
            .config
            .route_by_name(route)
            .ok_or_else(|| ControlError::UnknownRoute(route.to_string()))?;
        let previous_mode = current.effective_mode(id);
        let now = unix_now();
        let mut overrides = (*current.overrides).clone();
        let set = |mode: Mode, kind: OverrideKind, reason: Option<String>| -> Result<Override, ControlError> {
            if mode != Mode::Off && r.trust.is_none() {
                return Err(ControlError::NoTrustBundle {
                    route: route.to_string(),
                    mode,
                });
            }
            Ok(Override {
                mode,
                kind,
                yaml_mode_when_set: r.mode,
                since: now,
                reason,
            })
        };
        match request {
            OverrideRequest::Clear => {
                overrides.remove(route);
            }
            OverrideRequest::Rollback { to, reason } => {
                if let Some(to) = to.filter(|to| tightens(previous_mode, *to)) {
                    return Err(ControlError::RollbackTightens {
                        route: route.to_string(),
                        running: previous_mode,
                        to,
                    });
                }
                let target = to.unwrap_or_else(|| self.status.load().rollback_target(route, previous_mode));
                overrides.insert(route.to_string(), set(target, OverrideKind::Rollback, reason)?);
            }
            OverrideRequest::SetMode { mode, reason } => {
                overrides.insert(route.to_string(), set(mode, OverrideKind::SetMode, reason)?);
            }
            OverrideRequest::AutoRollback { reason } => {
                overrides.insert(
                    route.to_string(),
                    set(Mode::Audit, OverrideKind::AutoRollback, Some(reason))?,
                );
            }
        }
        let overrides = Arc::new(overrides);
        let snapshot = Arc::new(current.with_overrides(overrides.clone()));
        self.note_mode_changes(&current, &snapshot, now);
        self.snapshot.store(snapshot.clone());
        let active = overrides.get(route).cloned();
        tracing::warn!(route.name = %route, from = %previous_mode, to = %snapshot.effective_mode(id), override = ?active, "route mode changed at runtime");
        let persist_error = self.persist();
        Ok(OverrideOutcome {
            route: route.to_string(),
            previous_mode,
            mode: snapshot.effective_mode(id),
            yaml_mode: r.mode,
            active,
            persisted: persist_error.is_none() && self.state_path.is_some(),
            persist_error,
            fleet: None,
        })
    }

    /// Applies overrides as the fleet has them. Routes this instance's configuration does
    /// not have are left out (instances may run different configurations for a while).
    fn apply_from_fleet(&mut self, change: impl FnOnce(&mut Overrides)) {
        let current = self.snapshot.load_full();
        let mut overrides = (*current.overrides).clone();
        change(&mut overrides);
        overrides.retain(|route, _| current.config.route_by_name(route).is_some());
        if overrides == *current.overrides {
            return;
        }
        let snapshot = Arc::new(current.with_overrides(Arc::new(overrides)));
        self.note_mode_changes(&current, &snapshot, unix_now());
        self.snapshot.store(snapshot.clone());
        tracing::info!(
            overrides = snapshot.overrides.len(),
            "route overrides changed by the fleet"
        );
        self.persist();
    }

    /// Records each route whose effective mode differs between two snapshots.
    fn note_mode_changes(&mut self, before: &Snapshot, after: &Snapshot, at: i64) {
        for (id, route) in after.config.routes.iter().enumerate() {
            let to = after.effective_mode(id);
            let from = before
                .config
                .route_by_name(&route.name)
                .map(|(old, _)| before.effective_mode(old));
            if let Some(from) = from.filter(|f| *f != to) {
                let changes = self.mode_changes.entry(route.name.to_string()).or_default();
                changes.push_back(ModeChange { at, from, to });
                while changes.len() > MODE_CHANGES {
                    changes.pop_front();
                }
            }
        }
        let mut status = (*self.status.load_full()).clone();
        status.mode_changes = self.mode_change_map();
        self.status.store(Arc::new(status));
    }

    fn mode_change_map(&self) -> HashMap<String, Vec<ModeChange>> {
        self.mode_changes
            .iter()
            .map(|(route, changes)| (route.clone(), changes.iter().cloned().collect()))
            .collect()
    }

    /// Writes the overrides; a failure is reported, counted and shown, never fatal.
    fn persist(&mut self) -> Option<String> {
        let path = self.state_path.as_ref()?;
        let result = state::save(path, &self.snapshot.load().overrides);
        let mut status = (*self.status.load_full()).clone();
        let error = result.err().map(|e| e.to_string());
        if let Some(e) = &error {
            tracing::error!(error = %e, "overrides are in force but not saved");
        }
        status.state_error = error.clone();
        self.status.store(Arc::new(status));
        error
    }
}

/// What each route keeps across snapshots: its counters, and its pool unless the pool's
/// configuration changed.
pub fn route_runtime(config: &CompiledConfig, recorder: &Recorder, pools: &PoolRegistry) -> Box<[RouteRuntime]> {
    config
        .routes
        .iter()
        .map(|r| RouteRuntime {
            counters: recorder.counters(&r.name),
            pool: pools.pool(&r.name, &r.upstream.pool, r.upstream.tls.as_ref()),
        })
        .collect()
}

/// Listeners are bound at startup; changing them needs a restart, and a config that does
/// is rejected whole rather than applied in part.
fn listeners_unchanged(old: &CompiledConfig, new: &CompiledConfig, dir: &std::path::Path) -> Result<(), Diagnostics> {
    let key = |c: &CompiledConfig| {
        let mut v: Vec<(String, std::net::SocketAddr)> =
            c.listeners.iter().map(|l| (l.name.clone(), l.address)).collect();
        v.sort();
        v
    };
    if key(old) == key(new) {
        return Ok(());
    }
    let describe = |v: Vec<(String, std::net::SocketAddr)>| {
        v.iter().map(|(n, a)| format!("{n}={a}")).collect::<Vec<_>>().join(", ")
    };
    Err(Diagnostics::whole_file(
        dir,
        format!(
            "listeners changed from [{}] to [{}]: listener names and addresses take a restart (certificates do not)",
            describe(key(old)),
            describe(key(new))
        ),
    ))
}
