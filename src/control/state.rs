//! The durable part of the control plane: runtime overrides, in one JSON file written
//! atomically (temporary file, fsync, rename, fsync of the directory).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::Overrides;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    overrides: Overrides,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but cannot be read; starting without it could silently undo an
    /// emergency rollback, so the gateway refuses to start.
    #[error("cannot read state file {path}: {message} (move it away to start with the YAML modes)")]
    Unreadable { path: PathBuf, message: String },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn overrides_path(state_dir: &Path) -> PathBuf {
    state_dir.join("overrides.json")
}

/// The saved overrides; none when the file does not exist yet.
pub fn load(path: &Path) -> Result<Overrides, StateError> {
    let unreadable = |message: String| StateError::Unreadable {
        path: path.to_path_buf(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        // no file can be there: nothing was saved (saving will fail and say so)
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Overrides::new())
        }
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    if file.version != VERSION {
        return Err(unreadable(format!("version {} (expected {VERSION})", file.version)));
    }
    Ok(file.overrides)
}

pub fn save(path: &Path, overrides: &Overrides) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_vec_pretty(&StateFile {
        version: VERSION,
        overrides: overrides.clone(),
    })
    .map_err(|e| write_err(std::io::Error::other(e)))?;
    write_atomic(path, &text).map_err(write_err)
}

/// Writes a state file so that a crash leaves the old or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Mode, Override, OverrideKind};

    #[test]
    fn overrides_survive_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = overrides_path(dir.path());
        assert!(load(&path).unwrap().is_empty());
        let mut o = Overrides::new();
        o.insert(
            "payments".into(),
            Override {
                mode: Mode::Audit,
                kind: OverrideKind::Rollback,
                yaml_mode_when_set: Mode::Enforce,
                since: 1,
                reason: Some("503s".into()),
            },
        );
        save(&path, &o).unwrap();
        assert_eq!(load(&path).unwrap(), o);
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = overrides_path(dir.path());
        std::fs::write(&path, "{\"version\": 1, \"overrides\": {\"x\": ").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("move it away"), "{e}");
    }
}
