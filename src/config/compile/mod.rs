//! Raw files → validated, compiled [`CompiledConfig`]. Every problem is collected with its
//! file, line and YAML path; nothing is half-built: either all of it compiles or none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use openssl::sha::Sha256;

mod files;
mod listeners;
mod refusal_page;
mod routes;
mod trust;
mod upstream;

use super::diagnostic::{Diagnostic, Diagnostics};
use super::positions::Positions;
use super::raw::*;
use crate::policy::{BundleId, CompiledConfig, CrlStale};
use crate::tls::hex;

/// Compiled bundles by name and CRL policy; `None` for a bundle with problems, so that
/// routes naming it do not report it a second time as unknown.
type BundleIds = HashMap<(String, CrlStale), Option<BundleId>>;

/// One policy file as read from disk.
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    /// Built on first use: only diagnostics need it, and it costs as much as parsing.
    positions: std::sync::OnceLock<Positions>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> Self {
        SourceFile {
            path,
            text,
            positions: std::sync::OnceLock::new(),
        }
    }

    fn locate(&self, path: &str) -> (usize, usize) {
        self.positions.get_or_init(|| Positions::index(&self.text)).locate(path)
    }
}

/// The policy files of `dir`: every `*.yaml` / `*.yml` (not hidden files, so the `..data`
/// directory of a Kubernetes ConfigMap mount is seen through its symlinks), in name order.
/// A symbolic link is listed even when it leads nowhere, so that reading it fails loudly
/// instead of the file silently missing from the configuration.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_link = std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) && (p.is_file() || is_link)
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads the policy files of `dir` ([`policy_files`]).
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, Diagnostics> {
    let paths =
        policy_files(dir).map_err(|e| Diagnostics::whole_file(dir, format!("cannot read policy directory: {e}")))?;
    if paths.is_empty() {
        return Err(Diagnostics::whole_file(dir, "no policy files (expected *.yaml)"));
    }
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match read_policy_file(&path) {
            Ok(text) => sources.push(SourceFile::new(path, text)),
            Err(message) => problems.extend(Diagnostics::whole_file(&path, message).0),
        }
    }
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(Diagnostics(problems))
    }
}

/// The largest policy file read: far beyond any real configuration, small enough that a
/// file filled by mistake (or on purpose) cannot stall the control plane.
pub const MAX_POLICY_FILE_BYTES: u64 = 4 * 1024 * 1024;

fn read_policy_file(path: &Path) -> Result<String, String> {
    let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let meta = std::fs::metadata(path).map_err(|e| match link {
        true => format!("is a symbolic link that leads nowhere (dangling or looping): {e}"),
        false => format!("cannot read: {e}"),
    })?;
    if !meta.is_file() {
        return Err("is not a regular file (expected a YAML policy file)".to_string());
    }
    let too_big = |len: u64| format!("is {len} bytes, more than a policy file may be ({MAX_POLICY_FILE_BYTES} bytes)");
    if meta.len() > MAX_POLICY_FILE_BYTES {
        return Err(too_big(meta.len()));
    }
    // read at most one byte past the limit: the file may have grown since it was measured
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_POLICY_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| format!("is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// Parses, validates and compiles a set of policy files as one configuration.
pub fn compile(sources: &[SourceFile]) -> Result<CompiledConfig, Diagnostics> {
    let mut c = Compiler::new(sources);
    let files = c.parse_all();
    if !c.problems.is_empty() {
        return Err(Diagnostics(c.problems));
    }
    let files: Vec<RawFile> = files.into_iter().map(Option::unwrap_or_default).collect();
    let config = c.compile(&files);
    if c.problems.is_empty() {
        Ok(config)
    } else {
        Err(Diagnostics(c.problems))
    }
}

struct Compiler<'a> {
    sources: &'a [SourceFile],
    problems: Vec<Diagnostic>,
    /// What compiles but will fail clients (a stale CRL, a CA without one).
    warnings: Vec<Diagnostic>,
    hash: Sha256,
    /// Contents of the certificate files already read, by absolute path.
    files: HashMap<PathBuf, Result<Vec<u8>, String>>,
}

/// Where a YAML value came from: which file and which path in it.
#[derive(Clone)]
struct At<'p> {
    file: usize,
    path: &'p str,
}

impl<'a> Compiler<'a> {
    fn new(sources: &'a [SourceFile]) -> Self {
        let mut hash = Sha256::new();
        for s in sources {
            hash.update(s.path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
            hash.update(&[0]);
            hash.update(s.text.as_bytes());
            hash.update(&[0]);
        }
        Compiler {
            sources,
            problems: Vec::new(),
            warnings: Vec::new(),
            hash,
            files: HashMap::new(),
        }
    }

    fn error(&mut self, at: &At, message: impl Into<String>) {
        let diagnostic = self.diagnostic(at, message.into());
        self.problems.push(diagnostic);
    }

    fn warn(&mut self, at: &At, message: impl Into<String>) {
        let diagnostic = self.diagnostic(at, message.into());
        self.warnings.push(diagnostic);
    }

    fn diagnostic(&self, at: &At, message: String) -> Diagnostic {
        let source = &self.sources[at.file];
        let (line, column) = source.locate(at.path);
        Diagnostic {
            file: source.path.clone(),
            line,
            column,
            path: at.path.to_string(),
            message,
        }
    }

    /// Parses every file, in parallel when there are several.
    fn parse_all(&mut self) -> Vec<Option<RawFile>> {
        let parsed: Vec<Result<RawFile, Diagnostic>> = if self.sources.len() > 1 {
            std::thread::scope(|scope| {
                let tasks: Vec<_> = self.sources.iter().map(|s| scope.spawn(move || parse(s))).collect();
                tasks
                    .into_iter()
                    .zip(self.sources)
                    .map(|(t, s)| t.join().unwrap_or_else(|_| Err(internal_parse_failure(s))))
                    .collect()
            })
        } else {
            self.sources.iter().map(parse).collect()
        };
        parsed
            .into_iter()
            .map(|r| r.map_err(|d| self.problems.push(d)).ok())
            .collect()
    }

    fn compile(&mut self, files: &[RawFile]) -> CompiledConfig {
        let (bundles, bundle_ids) = self.trust_bundles(files);
        let listeners = self.listeners(files);
        let (routes, table) = self.routes(files, &bundle_ids);
        self.check_ca_names(&bundles, &routes, &table);
        let certificate_requests = crate::tls::CertificateRequests::build(&bundles, &routes, &table);
        let owners = self.owners(files);
        let hash = std::mem::replace(&mut self.hash, Sha256::new()).finish();
        CompiledConfig {
            content_hash: hex(&hash),
            files: self.sources.iter().map(|s| s.path.clone()).collect(),
            inputs: self
                .sources
                .iter()
                .map(|s| s.path.clone())
                .chain(self.files.keys().cloned())
                .collect(),
            listeners,
            bundles,
            by_name: routes.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect(),
            routes,
            table,
            owners,
            certificate_requests,
            warnings: std::mem::take(&mut self.warnings),
        }
    }
}

/// One file: the fast path without path tracking; on failure, parse again with it so the
/// diagnostic names the YAML path.
fn parse(source: &SourceFile) -> Result<RawFile, Diagnostic> {
    if source.text.trim().is_empty() {
        return Ok(RawFile::default());
    }
    if let Err(excess) = super::limits::check(&source.text) {
        return Err(Diagnostic {
            file: source.path.clone(),
            line: excess.line,
            column: excess.column,
            path: String::new(),
            message: excess.message,
        });
    }
    if let Ok(raw) = serde_yaml::from_str::<RawFile>(&source.text) {
        return Ok(raw);
    }
    let de = serde_yaml::Deserializer::from_str(&source.text);
    let e = match serde_path_to_error::deserialize::<_, RawFile>(de) {
        Ok(raw) => return Ok(raw),
        Err(e) => e,
    };
    let path = e.path().to_string();
    // a syntax error leaves unknown segments ("?") at the end of the path
    let mut path = if path == "." { String::new() } else { path };
    while let Some(stripped) = path.strip_suffix(".?").or_else(|| path.strip_suffix('?')) {
        path = stripped.to_string();
    }
    let inner = e.into_inner();
    let (line, column) = match inner.location() {
        Some(loc) => (loc.line(), loc.column()),
        None => source.locate(&path),
    };
    Err(Diagnostic {
        file: source.path.clone(),
        line,
        column,
        path,
        message: serde_message(&inner),
    })
}

fn internal_parse_failure(source: &SourceFile) -> Diagnostic {
    Diagnostic {
        file: source.path.clone(),
        line: 0,
        column: 0,
        path: String::new(),
        message: "the parser failed unexpectedly; please report this file".to_string(),
    }
}

/// `2027-01-31` means through the end of that day (UTC); an RFC 3339 time is exact.
fn parse_until(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let date = time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.next_day()?.midnight().assume_utc().unix_timestamp())
}

/// serde_yaml's message without its trailing location (reported separately).
fn serde_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    // serde_yaml prefixes the path it knows; the diagnostic carries the full path already
    match text.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') => rest.to_string(),
        _ => text,
    }
}

fn first_error(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| "unreadable".to_string())
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}
