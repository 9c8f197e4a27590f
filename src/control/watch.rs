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

/// How often lost watches (a deleted or replaced directory) are re-armed.
const REARM_EVERY: Duration = Duration::from_secs(1);

/// Watches the policy directory and the directories of every file the config reads, and
/// asks the control plane to reload once changes have settled for `debounce`.
pub fn spawn_watcher(handle: ControlHandle, snapshot: SharedSnapshot, config_dir: PathBuf, debounce: Duration) {
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel::<notify::Result<Event>>(4096);
        let watcher = notify::recommended_watcher(move |event| {
            // A full queue means a reload is already due; dropping the surplus is harmless.
            let _ = tx.try_send(event);
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the policy directory; reload with SIGHUP or the API");
                return;
            }
        };
        let mut armed = Watches::new();
        sync_watches(&mut watcher, &mut armed, &wanted_dirs(&snapshot, &config_dir));
        let mut rearm = tokio::time::interval(REARM_EVERY);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    if !is_change(&event, &mut armed) {
                        continue;
                    }
                    // Debounce: wait until the directory has been quiet for a while.
                    while let Ok(Some(_)) = tokio::time::timeout(debounce, rx.recv()).await {}
                    if handle.reload(ReloadSource::FileChange).await.is_err() {
                        return;
                    }
                    sync_watches(&mut watcher, &mut armed, &wanted_dirs(&snapshot, &config_dir));
                }
                _ = rearm.tick() => {
                    // a watched directory that was deleted or replaced (a new inode, even if
                    // it came back under the same name) needs a new watch
                    for (dir, watched) in armed.iter_mut() {
                        if watched.is_some() && *watched != inode(dir) {
                            *watched = None;
                        }
                    }
                    let lost = armed.values().any(Option::is_none);
                    if lost && sync_watches(&mut watcher, &mut armed, &wanted_dirs(&snapshot, &config_dir)) {
                        // A directory came back: whatever is in it now may differ.
                        if handle.reload(ReloadSource::FileChange).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
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
