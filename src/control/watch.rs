//! Reload triggers: the file watcher (editors saving by rename, Kubernetes ConfigMap
//! `..data` symlink swaps, several files at once — debounced) and SIGHUP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{ControlHandle, ReloadSource};
use crate::policy::SharedSnapshot;

/// How often lost watches (a deleted or replaced directory) are re-armed, and the files
/// are checked for changes the watches missed.
const REARM_EVERY: Duration = Duration::from_secs(1);

/// Watches the policy directory and the directories of every file the config reads, and
/// asks the control plane to reload once changes have settled for `debounce`. Once per
/// [`REARM_EVERY`] it also compares the files with what the last reload saw: a change the
/// watches missed (a directory deleted and recreated under a reused inode number leaves a
/// dead watch and no event) still reloads, and every watch is armed afresh.
pub struct FileWatcher {
    watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<notify::Result<Event>>,
    armed: Watches,
    /// [`files_state`] as of the last reload (or of arming).
    seen: u64,
    handle: ControlHandle,
    snapshot: SharedSnapshot,
    config_dir: PathBuf,
    debounce: Duration,
}

impl FileWatcher {
    /// Arms the watches right away — call it just after the config is loaded — so that a
    /// change made from then on is seen however late [`FileWatcher::run`] starts.
    pub fn arm(
        handle: ControlHandle,
        snapshot: SharedSnapshot,
        config_dir: PathBuf,
        debounce: Duration,
    ) -> Option<Self> {
        let (tx, events) = mpsc::channel::<notify::Result<Event>>(4096);
        let watcher = notify::recommended_watcher(move |event| {
            // A full queue means a reload is already due; dropping the surplus is harmless.
            let _ = tx.try_send(event);
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the policy directory; reload with SIGHUP or the API");
                return None;
            }
        };
        let mut armed = Watches::new();
        sync_watches(&mut watcher, &mut armed, &wanted_dirs(&snapshot, &config_dir));
        let seen = files_state(&snapshot, &config_dir);
        Some(FileWatcher {
            watcher,
            events,
            armed,
            seen,
            handle,
            snapshot,
            config_dir,
            debounce,
        })
    }

    pub async fn run(mut self) {
        let mut rearm = tokio::time::interval(REARM_EVERY);
        loop {
            let reload = tokio::select! {
                event = self.events.recv() => {
                    let Some(event) = event else { return };
                    if !is_change(&event, &mut self.armed) {
                        continue;
                    }
                    // Debounce: wait until the directory has been quiet for a while.
                    while let Ok(Some(_)) = tokio::time::timeout(self.debounce, self.events.recv()).await {}
                    true
                }
                _ = rearm.tick() => self.missed_a_change(),
            };
            if reload {
                self.seen = files_state(&self.snapshot, &self.config_dir);
                if self.handle.reload(ReloadSource::FileChange).await.is_err() {
                    return;
                }
                self.sync();
            }
        }
    }

    /// Re-arms lost watches; true if the files may have changed without an event.
    fn missed_a_change(&mut self) -> bool {
        // a watched directory that was deleted or replaced (a new inode, even if it came
        // back under the same name) needs a new watch
        for (dir, watched) in self.armed.iter_mut() {
            if watched.is_some() && *watched != inode(dir) {
                *watched = None;
            }
        }
        // a directory that came back may hold anything
        let came_back = self.armed.values().any(Option::is_none) && self.sync();
        let changed = files_state(&self.snapshot, &self.config_dir) != self.seen;
        if changed {
            // whichever watch missed it is dead: arm them all afresh
            for watched in self.armed.values_mut() {
                *watched = None;
            }
            self.sync();
        }
        came_back || changed
    }

    fn sync(&mut self) -> bool {
        sync_watches(
            &mut self.watcher,
            &mut self.armed,
            &wanted_dirs(&self.snapshot, &self.config_dir),
        )
    }
}

/// Reloads on SIGHUP, the conventional signal for it.
pub fn spawn_sighup_listener(handle: ControlHandle) {
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                return;
            }
        };
        while hup.recv().await.is_some() {
            if handle.reload(ReloadSource::Sighup).await.is_err() {
                return;
            }
        }
    });
}

/// What the configuration is read from, as the file system shows it now: the policy files
/// and every file the config names, each with its size, modification time and inode.
fn files_state(snapshot: &SharedSnapshot, config_dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let mut state = std::collections::hash_map::DefaultHasher::new();
    let policy_files = crate::config::policy_files(config_dir).ok();
    policy_files.is_some().hash(&mut state);
    let snapshot = snapshot.load();
    for path in policy_files.iter().flatten().chain(&snapshot.config.inputs) {
        path.hash(&mut state);
        if let Ok(m) = std::fs::metadata(path) {
            (m.len(), m.mtime(), m.mtime_nsec(), m.ino(), m.dev()).hash(&mut state);
        }
    }
    state.finish()
}

fn wanted_dirs(snapshot: &SharedSnapshot, config_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = snapshot
        .load()
        .config
        .inputs
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.push(config_dir.to_path_buf());
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Arms watches for `wanted` and drops the others; true if a lost watch came back.
/// The watched directories and the inode each watch was set on (`None`: not watched).
type Watches = BTreeMap<PathBuf, Option<u64>>;

fn inode(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().filter(|m| m.is_dir()).map(|m| m.ino())
}

fn sync_watches(watcher: &mut impl Watcher, armed: &mut Watches, wanted: &[PathBuf]) -> bool {
    let mut recovered = false;
    armed.retain(|dir, watched| {
        let keep = wanted.contains(dir);
        if !keep && watched.is_some() {
            let _ = watcher.unwatch(dir);
        }
        keep
    });
    for dir in wanted {
        if armed.get(dir).copied().flatten().is_none() {
            let _ = watcher.unwatch(dir); // a stale watch on a deleted directory
            let now = inode(dir).filter(|_| watcher.watch(dir, RecursiveMode::NonRecursive).is_ok());
            if now.is_some() && armed.contains_key(dir) {
                recovered = true;
            }
            armed.insert(dir.clone(), now);
        }
    }
    recovered
}

/// Whether an event may change the configuration. Reading files (our own reloads do) is
/// not a change; a watched directory that disappears must be re-armed later.
fn is_change(event: &notify::Result<Event>, armed: &mut Watches) -> bool {
    let Ok(event) = event else { return true };
    if let EventKind::Remove(_) = event.kind {
        for path in &event.paths {
            if let Some(watched) = armed.get_mut(path) {
                *watched = None;
            }
        }
    }
    !matches!(event.kind, EventKind::Access(kind) if !matches!(kind, AccessKind::Close(AccessMode::Write)))
}
