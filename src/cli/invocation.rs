//! How the user's shell reaches this binary, for the commands the demo prints: after
//! `cargo run --release -- demo` there is no `phasegate` on PATH, but
//! `target/release/phasegate` works from where they typed it.

use std::ffi::OsStr;
use std::path::Path;

/// `phasegate` when that name on PATH is this binary; otherwise its path relative to the
/// current directory when it is below it, else its absolute path (quoted for a POSIX shell).
pub fn self_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return "phasegate".to_string();
    };
    let cwd = std::env::current_dir().ok();
    describe(&exe, cwd.as_deref(), std::env::var_os("PATH").as_deref())
}

fn describe(exe: &Path, cwd: Option<&Path>, search_path: Option<&OsStr>) -> String {
    let Some(name) = exe.file_name() else {
        return shell_quote(&exe.display().to_string());
    };
    // the shell runs the first match on PATH, so only that one counts
    let first = search_path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    if first.and_then(|c| c.canonicalize().ok()).as_deref() == Some(exe) {
        return shell_quote(&name.to_string_lossy());
    }
    let relative = cwd
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf));
    let shown = match relative {
        // a bare name would be looked up on PATH
        Some(rel) if rel.components().count() == 1 => Path::new(".").join(rel),
        Some(rel) => rel,
        None => exe.to_path_buf(),
    };
    shell_quote(&shown.display().to_string())
}

/// Single quotes unless the text is made of characters no shell treats specially.
fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._+-=:,@".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A directory tree with an executable file at `rel`; returns (root, canonical exe).
    fn tree(rel: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join(rel);
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        std::fs::write(&exe, "").unwrap();
        let exe = exe.canonicalize().unwrap();
        (dir, exe)
    }

    #[test]
    fn below_the_current_directory_the_path_is_relative_to_it() {
        let (dir, exe) = tree("target/release/phasegate");
        assert_eq!(
            describe(&exe, Some(dir.path()), Some(OsStr::new("/usr/bin"))),
            "target/release/phasegate"
        );
        // a file right in the current directory needs ./ to be run from it
        let (dir, exe) = tree("phasegate");
        assert_eq!(describe(&exe, Some(dir.path()), None), "./phasegate");
    }

    #[test]
    fn the_bare_name_only_when_path_finds_this_binary_first() {
        let (dir, exe) = tree("bin/phasegate");
        let (_other_dir, other) = tree("bin/phasegate");
        let bin = exe.parent().unwrap().as_os_str().to_owned();
        assert_eq!(describe(&exe, Some(dir.path()), Some(&bin)), "phasegate");
        // another phasegate earlier on PATH would be the one that runs
        let mut both = other.parent().unwrap().as_os_str().to_owned();
        both.push(":");
        both.push(&bin);
        assert_eq!(describe(&exe, Some(dir.path()), Some(&both)), "bin/phasegate");
    }

    #[test]
    fn elsewhere_the_path_is_absolute_and_quoted_when_it_must_be() {
        let (_dir, exe) = tree("my builds/phasegate");
        let elsewhere = tempfile::tempdir().unwrap();
        assert_eq!(
            describe(&exe, Some(elsewhere.path()), None),
            format!("'{}'", exe.display())
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
