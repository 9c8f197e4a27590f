//! Raw files → validated, compiled [`CompiledConfig`]. Every problem is collected with its
//! file, line and YAML path; nothing is half-built: either all of it compiles or none.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openssl::pkey::{PKey, Private};
use openssl::sha::Sha256;
use openssl::x509::{X509Crl, X509};

use super::diagnostic::{Diagnostic, Diagnostics};
use super::positions::Positions;
use super::raw::*;
use crate::policy::{
    AllowEntry, AllowList, AutoRollback, BundleId, CompiledConfig, CrlStale, ExemptClient, Exemption, Listener, Mode,
    MtlsPolicy, Owner, OwnerMatch, Route, RouteTable, ServerCertificate, ShadowPolicy, TrustBundle, Upstream,
    UpstreamTls,
};
use crate::tls::{hex, unix_time, ChainLimits, TrustAnchors};
use crate::upstream::{Balance, HealthSpec, PassiveSpec, PoolSpec, Target, Timeouts};

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
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) && p.is_file()
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
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push(SourceFile::new(path, text)),
            Err(e) => problems.extend(Diagnostics::whole_file(&path, format!("cannot read: {e}")).0),
        }
    }
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(Diagnostics(problems))
    }
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
            hash,
            files: HashMap::new(),
        }
    }

    fn error(&mut self, at: &At, message: impl Into<String>) {
        let source = &self.sources[at.file];
        let (line, column) = source.locate(at.path);
        self.problems.push(Diagnostic {
            file: source.path.clone(),
            line,
            column,
            path: at.path.to_string(),
            message: message.into(),
        });
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
        }
    }

    // ---- files referenced by the YAML -------------------------------------------------

    fn resolve(&self, at: &At, path: &Path) -> PathBuf {
        let base = self.sources[at.file].path.parent().unwrap_or(Path::new("."));
        base.join(path)
    }

    fn read(&mut self, at: &At, path: &Path) -> Option<Vec<u8>> {
        let full = self.resolve(at, path);
        let result = self
            .files
            .entry(full.clone())
            .or_insert_with(|| std::fs::read(&full).map_err(|e| e.to_string()))
            .clone();
        match result {
            Ok(bytes) => {
                self.hash.update(full.as_os_str().as_encoded_bytes());
                self.hash.update(&bytes);
                Some(bytes)
            }
            Err(e) => {
                self.error(at, format!("cannot read {:?}: {e}", path.display().to_string()));
                None
            }
        }
    }

    fn certificates(&mut self, at: &At, path: &Path) -> Option<Vec<X509>> {
        let bytes = self.read(at, path)?;
        match X509::stack_from_pem(&bytes) {
            Ok(certs) if !certs.is_empty() => Some(certs),
            Ok(_) => {
                self.error(
                    at,
                    format!(
                        "{:?} holds no certificate (expected PEM CERTIFICATE blocks)",
                        path.display().to_string()
                    ),
                );
                None
            }
            Err(e) => {
                self.error(
                    at,
                    format!(
                        "{:?} is not a valid PEM certificate file (OpenSSL: {})",
                        path.display().to_string(),
                        first_error(&e)
                    ),
                );
                None
            }
        }
    }

    fn private_key(&mut self, at: &At, path: &Path) -> Option<PKey<Private>> {
        let bytes = self.read(at, path)?;
        match PKey::private_key_from_pem(&bytes) {
            Ok(key) => Some(key),
            Err(e) => {
                self.error(
                    at,
                    format!(
                        "{:?} is not a valid PEM private key (OpenSSL: {})",
                        path.display().to_string(),
                        first_error(&e)
                    ),
                );
                None
            }
        }
    }

    fn crl(&mut self, at: &At, path: &Path) -> Option<X509Crl> {
        let bytes = self.read(at, path)?;
        match X509Crl::from_pem(&bytes).or_else(|_| X509Crl::from_der(&bytes)) {
            Ok(crl) => Some(crl),
            Err(e) => {
                self.error(
                    at,
                    format!(
                        "{:?} is not a valid CRL, PEM or DER (OpenSSL: {})",
                        path.display().to_string(),
                        first_error(&e)
                    ),
                );
                None
            }
        }
    }

    /// Certificates that must all be CAs (trust anchors, intermediates).
    fn ca_certificates(&mut self, at: &At, path: &Path) -> Option<Vec<X509>> {
        let certs = self.certificates(at, path)?;
        let mut ok = true;
        for (i, cert) in certs.iter().enumerate() {
            let is_ca = crate::tls::parse_identity(cert).map(|id| id.is_ca).unwrap_or(false);
            if !is_ca {
                ok = false;
                self.error(
                    at,
                    format!(
                        "certificate {} in {:?} ({}) is not a CA certificate (expected basicConstraints cA=TRUE)",
                        i + 1,
                        path.display().to_string(),
                        crate::tls::describe(cert)
                    ),
                );
            }
        }
        ok.then_some(certs)
    }

    // ---- sections -------------------------------------------------------------------------

    /// Bundles by name; a bundle with problems maps to `None` so routes naming it do not
    /// report it a second time as unknown.
    fn trust_bundles(&mut self, files: &[RawFile]) -> (Vec<TrustBundle>, BundleIds) {
        // bundles that `crl_stale: fail-open` routes use get a lenient second compilation
        let lenient: HashSet<&str> = files
            .iter()
            .flat_map(|f| &f.routes)
            .filter_map(|r| r.mtls.as_ref())
            .flat_map(|m| {
                let live = (m.crl_stale == Some(CrlStale::FailOpen))
                    .then_some(m.trust.as_deref())
                    .flatten();
                let shadow = m
                    .shadow
                    .as_ref()
                    .filter(|s| s.crl_stale == Some(CrlStale::FailOpen))
                    .map(|s| s.trust.as_str());
                live.into_iter().chain(shadow)
            })
            .collect();
        let mut bundles = Vec::new();
        let mut ids = HashMap::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (file, raw) in files.iter().enumerate() {
            for (name, b) in &raw.trust_bundles {
                let base = format!("trust_bundles.{name}");
                let at = At { file, path: &base };
                if let Some(first) = seen.get(name) {
                    let first = self.sources[*first].path.display().to_string();
                    self.error(&at, format!("trust bundle {name:?} is also defined in {first}"));
                    continue;
                }
                seen.insert(name.clone(), file);
                let ca_path = format!("{base}.ca");
                let anchors = self.ca_certificates(&At { file, path: &ca_path }, &b.ca);
                let int_path = format!("{base}.intermediates");
                let intermediates = match &b.intermediates {
                    Some(p) => self.ca_certificates(&At { file, path: &int_path }, p),
                    None => Some(Vec::new()),
                };
                let mut crls = Vec::new();
                let mut crls_ok = true;
                for (i, p) in b.crl.iter().enumerate() {
                    let path = format!("{base}.crl[{i}]");
                    match self.crl(&At { file, path: &path }, p) {
                        Some(crl) => crls.push(crl),
                        None => crls_ok = false,
                    }
                }
                let mut limits = ChainLimits::default();
                if let Some(depth) = b.max_chain_depth {
                    if depth == 0 || depth > 16 {
                        let path = format!("{base}.max_chain_depth");
                        self.error(
                            &At { file, path: &path },
                            format!("{depth} is out of range (expected 1 to 16)"),
                        );
                    }
                    limits.max_depth = depth;
                }
                let (Some(anchors), Some(intermediates), true) = (anchors, intermediates, crls_ok) else {
                    ids.insert((name.clone(), CrlStale::FailClosed), None);
                    ids.insert((name.clone(), CrlStale::FailOpen), None);
                    continue;
                };
                let mut sources = vec![self.resolve(&at, &b.ca)];
                sources.extend(b.intermediates.iter().map(|p| self.resolve(&at, p)));
                sources.extend(b.crl.iter().map(|p| self.resolve(&at, p)));
                let crl_next_updates: Vec<(String, i64)> = crls
                    .iter()
                    .map(|c| {
                        let issuer = crate::tls::describe_name(c.issuer_name());
                        let next = c.next_update().and_then(unix_time).unwrap_or(i64::MAX);
                        (issuer, next)
                    })
                    .collect();
                let variants = if lenient.contains(name.as_str()) && !crls.is_empty() {
                    &[CrlStale::FailClosed, CrlStale::FailOpen][..]
                } else {
                    &[CrlStale::FailClosed][..]
                };
                for &crl_stale in variants {
                    let tolerate = crl_stale == CrlStale::FailOpen;
                    match TrustAnchors::new(anchors.clone(), intermediates.clone(), &crls, limits, tolerate, None) {
                        Ok(compiled) => {
                            ids.insert((name.clone(), crl_stale), Some(bundles.len()));
                            bundles.push(TrustBundle {
                                name: name.clone(),
                                crl_stale,
                                crl_next_updates: crl_next_updates.clone(),
                                anchors: compiled,
                                sources: sources.clone(),
                            });
                        }
                        Err(e) => {
                            ids.insert((name.clone(), crl_stale), None);
                            self.error(&at, format!("cannot build trust store: {}", first_error(&e)))
                        }
                    }
                }
                // a fail-open route on a bundle without CRLs verifies like any other
                if let Some(strict) = ids.get(&(name.clone(), CrlStale::FailClosed)).copied() {
                    ids.entry((name.clone(), CrlStale::FailOpen)).or_insert(strict);
                }
            }
        }
        (bundles, ids)
    }

    fn listeners(&mut self, files: &[RawFile]) -> Vec<Listener> {
        let mut listeners: Vec<Listener> = Vec::new();
        let mut any = false;
        for (file, raw) in files.iter().enumerate() {
            for (i, l) in raw.listeners.iter().enumerate() {
                any = true;
                let base = format!("listeners[{i}]");
                let at = At { file, path: &base };
                if listeners.iter().any(|x| x.name == l.name) {
                    self.error(&at, format!("listener name {:?} is used twice", l.name));
                }
                let addr_path = format!("{base}.address");
                let address = match l.address.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.error(
                            &At { file, path: &addr_path },
                            format!(
                                "{:?} is not an address (expected IP:PORT, e.g. 0.0.0.0:8443)",
                                l.address
                            ),
                        );
                        None
                    }
                };
                if let Some(a) = address {
                    if listeners.iter().any(|x| x.address == a) {
                        self.error(
                            &At { file, path: &addr_path },
                            format!("address {a} is used by another listener"),
                        );
                    }
                }
                let certs_path = format!("{base}.tls.certificates");
                if l.tls.certificates.is_empty() {
                    self.error(
                        &At {
                            file,
                            path: &certs_path,
                        },
                        "no server certificate (expected at least one)",
                    );
                }
                let mut certificates = Vec::new();
                for (j, c) in l.tls.certificates.iter().enumerate() {
                    let cert_base = format!("{certs_path}[{j}]");
                    if let Some(cert) = self.server_certificate(file, &cert_base, c) {
                        certificates.push(Arc::new(cert));
                    }
                }
                let timeout_path = format!("{base}.handshake_timeout");
                let handshake_timeout = match &l.handshake_timeout {
                    None => Some(std::time::Duration::from_secs(10)),
                    Some(text) => match humantime::parse_duration(text) {
                        Ok(d)
                            if d >= std::time::Duration::from_millis(100)
                                && d <= std::time::Duration::from_secs(60) =>
                        {
                            Some(d)
                        }
                        _ => {
                            self.error(
                                &At {
                                    file,
                                    path: &timeout_path,
                                },
                                format!("{text:?} is not a duration between 100ms and 60s (expected e.g. 10s)"),
                            );
                            None
                        }
                    },
                };
                if let (Some(address), false, Some(handshake_timeout)) =
                    (address, certificates.is_empty(), handshake_timeout)
                {
                    listeners.push(Listener {
                        name: l.name.clone(),
                        address,
                        certificates,
                        handshake_timeout,
                    });
                }
            }
        }
        if !any && !self.sources.is_empty() {
            self.error(
                &At { file: 0, path: "" },
                "no listener in any policy file (expected a listeners: section)",
            );
        }
        listeners
    }

    fn server_certificate(&mut self, file: usize, base: &str, raw: &RawServerCertificate) -> Option<ServerCertificate> {
        let hosts_path = format!("{base}.hosts");
        if raw.hosts.is_empty() {
            self.error(
                &At {
                    file,
                    path: &hosts_path,
                },
                "no host names (expected the names this certificate serves)",
            );
        }
        let cert_path = format!("{base}.cert");
        let key_path = format!("{base}.key");
        let chain = self.certificates(&At { file, path: &cert_path }, &raw.cert);
        let key = self.private_key(&At { file, path: &key_path }, &raw.key);
        let (chain, key) = (chain?, key?);
        let matches = chain[0].public_key().map(|p| p.public_eq(&key)).unwrap_or(false);
        if !matches {
            self.error(
                &At { file, path: &key_path },
                format!(
                    "key {:?} does not match certificate {:?}",
                    raw.key.display().to_string(),
                    raw.cert.display().to_string()
                ),
            );
            return None;
        }
        let source = self.resolve(&At { file, path: base }, &raw.cert);
        Some(ServerCertificate {
            hosts: raw.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            not_after: unix_time(chain[0].not_after()).unwrap_or(0),
            chain,
            key,
            source,
        })
    }

    fn routes(&mut self, files: &[RawFile], bundles: &BundleIds) -> (Vec<Route>, RouteTable) {
        let mut routes: Vec<Route> = Vec::new();
        let mut table = RouteTable::default();
        let mut names: HashMap<String, (usize, usize)> = HashMap::new();
        for (file, raw) in files.iter().enumerate() {
            for (i, r) in raw.routes.iter().enumerate() {
                let base = format!("routes[{i}]");
                let name_path = format!("{base}.name");
                let at_name = At { file, path: &name_path };
                if r.name.trim().is_empty() {
                    self.error(&at_name, "route name is empty");
                }
                if let Some((f, j)) = names.get(&r.name) {
                    let other = format!(
                        "{}:{}",
                        self.sources[*f].path.display(),
                        self.sources[*f].locate(&format!("routes[{j}]")).0
                    );
                    self.error(&at_name, format!("route name {:?} is already used at {other}", r.name));
                    continue;
                }
                names.insert(r.name.clone(), (file, i));
                if let Some(route) = self.route(file, &base, r, bundles) {
                    let id = routes.len();
                    if let Err(existing) = table.insert(&route.host, &route.path_prefix, id) {
                        let match_path = format!("{base}.match");
                        let other = routes[existing].name.clone();
                        self.error(
                            &At {
                                file,
                                path: &match_path,
                            },
                            format!(
                                "route {other:?} already matches host {:?} and path prefix {:?}",
                                route.host, route.path_prefix
                            ),
                        );
                        continue;
                    }
                    routes.push(route);
                }
            }
        }
        (routes, table)
    }

    fn route(&mut self, file: usize, base: &str, r: &RawRoute, bundles: &BundleIds) -> Option<Route> {
        let before = self.problems.len();
        let host_path = format!("{base}.match.host");
        let host = r.matcher.host.trim().to_ascii_lowercase();
        if host.is_empty() || host.contains(['/', ' ', '*']) || host.contains(':') && !host.starts_with('[') {
            self.error(
                &At { file, path: &host_path },
                format!(
                    "{:?} is not a host name (expected e.g. api.internal.example, no port, no wildcard)",
                    r.matcher.host
                ),
            );
        }
        let prefix_path = format!("{base}.match.path_prefix");
        let prefix = &r.matcher.path_prefix;
        match crate::policy::normalize_path(prefix) {
            Ok(normal) if normal == prefix.as_str() && !prefix.contains(['?', '#']) => {}
            _ => self.error(
                &At {
                    file,
                    path: &prefix_path,
                },
                format!("{prefix:?} is not a normalized absolute path (expected e.g. /payments)"),
            ),
        }

        let upstream = self.upstream(file, &format!("{base}.upstream"), &r.upstream);

        let mtls_path = format!("{base}.mtls");
        let (mode, trust, mtls, auto_rollback, crl_stale, shadow) = match &r.mtls {
            None => (Mode::Off, None, MtlsPolicy::default(), None, CrlStale::FailClosed, None),
            Some(m) => {
                let crl_stale = m.crl_stale.unwrap_or_default();
                let trust = match &m.trust {
                    Some(name) => self.bundle(file, &format!("{mtls_path}.trust"), name, crl_stale, bundles),
                    None => {
                        if m.mode != Mode::Off {
                            let p = format!("{mtls_path}.mode");
                            self.error(
                                &At { file, path: &p },
                                format!("mode {} needs a trust bundle (expected mtls.trust)", m.mode),
                            );
                        }
                        None
                    }
                };
                let allow = self.allow_list(file, &format!("{mtls_path}.allow"), &m.allow);
                if m.enforce_percent.is_some_and(|p| p > 100) {
                    let p = format!("{mtls_path}.enforce_percent");
                    self.error(
                        &At { file, path: &p },
                        "enforce_percent is out of range (expected 0 to 100)",
                    );
                }
                let exemptions = m
                    .exempt
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| self.exemption(file, &format!("{mtls_path}.exempt[{i}]"), e))
                    .collect();
                let auto_rollback = m
                    .auto_rollback
                    .as_ref()
                    .and_then(|a| self.auto_rollback(file, &format!("{mtls_path}.auto_rollback"), a));
                let policy = MtlsPolicy {
                    allow,
                    enforce_percent: m.enforce_percent,
                    exemptions,
                };
                let shadow = m.shadow.as_ref().and_then(|sh| {
                    let base = format!("{mtls_path}.shadow");
                    let trust = self.bundle(
                        file,
                        &format!("{base}.trust"),
                        &sh.trust,
                        sh.crl_stale.unwrap_or_default(),
                        bundles,
                    )?;
                    let allow = self.allow_list(file, &format!("{base}.allow"), &sh.allow);
                    Some(ShadowPolicy { trust, allow })
                });
                (m.mode, trust, policy, auto_rollback, crl_stale, shadow)
            }
        };
        let upstream = upstream?;
        (self.problems.len() == before).then(|| Route {
            name: r.name.as_str().into(),
            host,
            path_prefix: prefix.clone(),
            mode,
            trust,
            crl_stale,
            mtls,
            auto_rollback,
            shadow,
            upstream,
        })
    }

    fn bundle(
        &mut self,
        file: usize,
        path: &str,
        name: &str,
        crl_stale: CrlStale,
        bundles: &BundleIds,
    ) -> Option<BundleId> {
        match bundles.get(&(name.to_string(), crl_stale)) {
            Some(id) => *id,
            None => {
                let mut known: Vec<&str> = bundles.keys().map(|(s, _)| s.as_str()).collect();
                known.sort_unstable();
                known.dedup();
                self.error(
                    &At { file, path },
                    format!("unknown trust bundle {name:?} (defined: {})", list_or_none(&known)),
                );
                None
            }
        }
    }

    fn owners(&mut self, files: &[RawFile]) -> Vec<Owner> {
        let mut owners = Vec::new();
        for (file, raw) in files.iter().enumerate() {
            for (i, o) in raw.owners.iter().enumerate() {
                let base = format!("owners[{i}]");
                let at = At { file, path: &base };
                if o.team.trim().is_empty() {
                    self.error(&at, "an owner needs a team");
                    continue;
                }
                let m = &o.matcher;
                let matcher = match (&m.uri, &m.uri_prefix, &m.dns, &m.cidr) {
                    (Some(u), None, None, None) => OwnerMatch::Uri(u.clone()),
                    (None, Some(p), None, None) if p.ends_with('/') => OwnerMatch::UriPrefix(p.clone()),
                    (None, Some(p), None, None) => {
                        self.error(
                            &at,
                            format!("{p:?} must end with '/' so it cannot match a longer sibling"),
                        );
                        continue;
                    }
                    (None, None, Some(d), None) => OwnerMatch::Dns(d.to_ascii_lowercase()),
                    (None, None, None, Some(c)) => match c.parse() {
                        Ok(net) => OwnerMatch::Cidr(net),
                        Err(_) => {
                            self.error(&at, format!("{c:?} is not a CIDR block (expected e.g. 10.1.0.0/16)"));
                            continue;
                        }
                    },
                    _ => {
                        let p = format!("{base}.match");
                        self.error(
                            &At { file, path: &p },
                            "expected exactly one of uri, uri_prefix, dns, cidr",
                        );
                        continue;
                    }
                };
                owners.push(Owner {
                    matcher,
                    team: o.team.clone(),
                    contact: o.contact.clone(),
                });
            }
        }
        owners
    }

    fn exemption(&mut self, file: usize, base: &str, raw: &RawExemption) -> Option<Exemption> {
        let at = At { file, path: base };
        let who = match (&raw.identity, &raw.cidr) {
            (Some(identity), None) => match AllowEntry::parse_san(identity) {
                Ok(entry) if !identity.contains('*') => ExemptClient::Identity(entry),
                Ok(_) => {
                    self.error(&at, format!("{identity:?} is a wildcard; exemptions name one client"));
                    return None;
                }
                Err(e) => {
                    let p = format!("{base}.identity");
                    self.error(&At { file, path: &p }, e);
                    return None;
                }
            },
            (None, Some(cidr)) => match cidr.parse::<ipnet::IpNet>() {
                Ok(net) => ExemptClient::Cidr(net),
                Err(_) => {
                    let p = format!("{base}.cidr");
                    self.error(
                        &At { file, path: &p },
                        format!("{cidr:?} is not a CIDR block (expected e.g. 10.1.2.0/24)"),
                    );
                    return None;
                }
            },
            _ => {
                self.error(
                    &at,
                    "expected exactly one of identity (e.g. uri:spiffe://…) or cidr (e.g. 10.1.2.0/24)",
                );
                return None;
            }
        };
        let until_path = format!("{base}.until");
        let Some(until) = parse_until(&raw.until) else {
            self.error(
                &At {
                    file,
                    path: &until_path,
                },
                format!(
                    "{:?} is not a date (expected YYYY-MM-DD, or an RFC 3339 time)",
                    raw.until
                ),
            );
            return None;
        };
        if raw.reason.trim().is_empty() {
            let p = format!("{base}.reason");
            self.error(
                &At { file, path: &p },
                "an exemption needs a reason (who asked, and why)",
            );
        }
        Some(Exemption {
            who,
            until,
            reason: raw.reason.clone(),
        })
    }

    fn auto_rollback(&mut self, file: usize, base: &str, raw: &RawAutoRollback) -> Option<AutoRollback> {
        let mut ok = true;
        if !(raw.max_reject_ratio > 0.0 && raw.max_reject_ratio < 1.0) {
            let p = format!("{base}.max_reject_ratio");
            self.error(
                &At { file, path: &p },
                format!(
                    "{} is out of range (expected a ratio between 0 and 1, e.g. 0.05)",
                    raw.max_reject_ratio
                ),
            );
            ok = false;
        }
        let window = humantime::parse_duration(&raw.window)
            .ok()
            .map(|d| d.as_secs())
            .filter(|s| (1..=3600).contains(s));
        if window.is_none() {
            let p = format!("{base}.window");
            self.error(
                &At { file, path: &p },
                format!("{:?} is not a window between 1s and 1h (expected e.g. 60s)", raw.window),
            );
            ok = false;
        }
        if raw.min_requests == 0 {
            let p = format!("{base}.min_requests");
            self.error(&At { file, path: &p }, "min_requests must be at least 1");
            ok = false;
        }
        ok.then(|| AutoRollback {
            max_reject_ratio: raw.max_reject_ratio,
            window_secs: window.unwrap_or(60),
            min_requests: raw.min_requests,
        })
    }

    fn allow_list(&mut self, file: usize, base: &str, raw: &[RawAllow]) -> AllowList {
        let mut entries = Vec::new();
        for (i, a) in raw.iter().enumerate() {
            let path = format!("{base}[{i}]");
            let at = At { file, path: &path };
            let given: Vec<(&str, &String)> = [
                ("uri", &a.uri),
                ("uri_prefix", &a.uri_prefix),
                ("dns", &a.dns),
                ("ip", &a.ip),
                ("email", &a.email),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            .collect();
            let [(kind, value)] = given[..] else {
                self.error(&at, "expected exactly one of uri, uri_prefix, dns, ip, email");
                continue;
            };
            let entry = match kind {
                "uri" | "uri_prefix" => {
                    if !value.contains("://") || value.contains('*') {
                        self.error(
                            &at,
                            format!(
                                "{value:?} is not a URI (expected e.g. spiffe://<trust-domain>/<path>, no wildcards)"
                            ),
                        );
                        continue;
                    }
                    if kind == "uri_prefix" {
                        if !value.ends_with('/') {
                            self.error(&at, format!("{value:?} must end with '/' so it cannot match a longer sibling (expected e.g. spiffe://corp.example/ns/prod/)"));
                            continue;
                        }
                        AllowEntry::UriPrefix(value.clone())
                    } else {
                        AllowEntry::Uri(value.clone())
                    }
                }
                "dns" => {
                    if value.contains('*') {
                        self.error(
                            &at,
                            format!("{value:?} is a wildcard; wildcards never match (expected an exact DNS name)"),
                        );
                        continue;
                    }
                    AllowEntry::Dns(value.to_ascii_lowercase())
                }
                "ip" => match value.parse() {
                    Ok(ip) => AllowEntry::Ip(ip),
                    Err(_) => {
                        self.error(&at, format!("{value:?} is not an IP address"));
                        continue;
                    }
                },
                _ => AllowEntry::Email(value.clone()),
            };
            entries.push(entry);
        }
        AllowList(entries)
    }

    fn upstream(&mut self, file: usize, base: &str, raw: &RawUpstream) -> Option<Upstream> {
        let before = self.problems.len();
        let mut targets = Vec::new();
        let resolve = |text: &str| {
            text.to_socket_addrs()
                .ok()
                .map(|a| a.collect::<Vec<_>>())
                .filter(|a| !a.is_empty())
        };
        if let Some(address) = &raw.address {
            match resolve(address) {
                Some(addrs) => targets.push(Target::Address {
                    addr: addrs[0],
                    weight: 1,
                }),
                None => {
                    let p = format!("{base}.address");
                    self.error(
                        &At { file, path: &p },
                        format!("{address:?} is not a reachable address (expected HOST:PORT)"),
                    );
                }
            }
        }
        for (i, b) in raw.backends.iter().enumerate() {
            let p = format!("{base}.backends[{i}]");
            match (resolve(&b.address), b.weight) {
                (_, Some(0)) => self.error(
                    &At { file, path: &p },
                    "weight 0 sends nothing (expected 1 or more; remove the backend instead)",
                ),
                (Some(addrs), w) => targets.push(Target::Address {
                    addr: addrs[0],
                    weight: w.unwrap_or(1),
                }),
                (None, _) => self.error(
                    &At { file, path: &p },
                    format!("{:?} is not a reachable address (expected HOST:PORT)", b.address),
                ),
            }
        }
        if let Some(dns) = &raw.dns {
            let p = format!("{base}.dns");
            let parsed = dns
                .rsplit_once(':')
                .and_then(|(h, port)| Some((h.to_string(), port.parse::<u16>().ok()?)));
            match (parsed, resolve(dns)) {
                (Some((host, port)), Some(resolved)) => targets.push(Target::Dns {
                    host,
                    port,
                    weight: 1,
                    resolved,
                }),
                (None, _) => self.error(&At { file, path: &p }, format!("{dns:?} is not HOST:PORT")),
                (Some(_), None) => self.error(&At { file, path: &p }, format!("{dns:?} does not resolve")),
            }
        }
        if targets.is_empty() && self.problems.len() == before {
            self.error(
                &At { file, path: base },
                "no backend (expected address, backends or dns)",
            );
        }
        let duration = |c: &mut Self, text: &Option<String>, field: &str, default: Duration| -> Duration {
            match text {
                None => default,
                Some(t) => match humantime::parse_duration(t) {
                    Ok(d) if !d.is_zero() => d,
                    _ => {
                        let p = format!("{base}.{field}");
                        c.error(
                            &At { file, path: &p },
                            format!("{t:?} is not a duration (expected e.g. 5s, 500ms)"),
                        );
                        default
                    }
                },
            }
        };
        let mut spec = PoolSpec::single(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        spec.targets = targets;
        spec.balance = raw.balance.unwrap_or(Balance::RoundRobin);
        spec.retries = raw.retries.unwrap_or(1).min(5);
        spec.dns_refresh = duration(self, &raw.dns_refresh, "dns_refresh", spec.dns_refresh);
        if let Some(t) = &raw.timeouts {
            let d = Timeouts::default();
            spec.timeouts = Timeouts {
                connect: duration(self, &t.connect, "timeouts.connect", d.connect),
                connect_total: duration(self, &t.connect_total, "timeouts.connect_total", d.connect_total),
                read: duration(self, &t.read, "timeouts.read", d.read),
                write: duration(self, &t.write, "timeouts.write", d.write),
            };
        }
        if let Some(pe) = &raw.passive_ejection {
            spec.passive = PassiveSpec {
                max_failures: pe.max_failures,
                ejection: duration(self, &pe.ejection, "passive_ejection.ejection", spec.passive.ejection),
            };
        }
        if let Some(h) = &raw.health_check {
            let http_path = match (h.kind.as_str(), &h.path) {
                ("tcp", None) => Some(None),
                ("http", Some(path)) if path.starts_with('/') => Some(Some(path.clone())),
                ("http", None) => Some(Some("/".to_string())),
                ("tcp", Some(_)) => {
                    let p = format!("{base}.health_check.path");
                    self.error(&At { file, path: &p }, "a tcp check has no path (use type: http)");
                    None
                }
                ("http", Some(path)) => {
                    let p = format!("{base}.health_check.path");
                    self.error(
                        &At { file, path: &p },
                        format!("{path:?} is not a path (expected e.g. /healthz)"),
                    );
                    None
                }
                (other, _) => {
                    let p = format!("{base}.health_check.type");
                    self.error(
                        &At { file, path: &p },
                        format!("{other:?} is not a check type (expected tcp or http)"),
                    );
                    None
                }
            };
            if let Some(http_path) = http_path {
                spec.health = Some(HealthSpec {
                    http_path,
                    interval: duration(self, &h.interval, "health_check.interval", Duration::from_secs(5)),
                    timeout: duration(self, &h.timeout, "health_check.timeout", Duration::from_secs(1)),
                    healthy_threshold: h.healthy_threshold.unwrap_or(2).max(1),
                    unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3).max(1),
                });
            }
        }
        let tls = match &raw.tls {
            None => Some(None),
            Some(t) => self.upstream_tls(file, &format!("{base}.tls"), t).map(Some),
        };
        (self.problems.len() == before).then_some(())?;
        Some(Upstream { pool: spec, tls: tls? })
    }

    fn upstream_tls(&mut self, file: usize, base: &str, raw: &RawUpstreamTls) -> Option<UpstreamTls> {
        let at = At { file, path: base };
        let sni = match raw.sni.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s.to_string()),
            _ => {
                let p = format!("{base}.sni");
                self.error(&At { file, path: &p }, "upstream TLS needs sni: the backend certificate is verified against it, and without it verification would be off");
                None
            }
        };
        let ca = match &raw.ca {
            Some(p) => {
                let path = format!("{base}.ca");
                self.ca_certificates(&At { file, path: &path }, p)
            }
            None => {
                self.error(
                    &at,
                    "upstream TLS needs ca: the CA that issued the backend's certificate",
                );
                None
            }
        };
        let mut sources: Vec<PathBuf> = raw.ca.iter().map(|p| self.resolve(&at, p)).collect();
        let (client_cert, client_cert_not_after) = match (&raw.client_cert, &raw.client_key) {
            (None, None) => (Some(None), None),
            (Some(cert), Some(key)) => {
                let cert_path = format!("{base}.client_cert");
                let key_path = format!("{base}.client_key");
                let chain = self.certificates(&At { file, path: &cert_path }, cert);
                let pkey = self.private_key(&At { file, path: &key_path }, key);
                sources.push(self.resolve(&at, cert));
                match (chain, pkey) {
                    (Some(chain), Some(pkey)) => {
                        if !chain[0].public_key().map(|p| p.public_eq(&pkey)).unwrap_or(false) {
                            self.error(
                                &At { file, path: &key_path },
                                format!(
                                    "key {:?} does not match certificate {:?}",
                                    key.display().to_string(),
                                    cert.display().to_string()
                                ),
                            );
                            (None, None)
                        } else {
                            let not_after = unix_time(chain[0].not_after());
                            (
                                Some(Some(Arc::new(pingora::utils::tls::CertKey::new(chain, pkey)))),
                                not_after,
                            )
                        }
                    }
                    _ => (None, None),
                }
            }
            _ => {
                self.error(&at, "client_cert and client_key go together (expected both or neither)");
                (None, None)
            }
        };
        let ca = ca?;
        let mut fingerprint = Sha256::new();
        for cert in &ca {
            fingerprint.update(&cert.to_der().unwrap_or_default());
        }
        let digest = fingerprint.finish();
        Some(UpstreamTls {
            sni: sni?,
            trust_key: u64::from_be_bytes(digest[..8].try_into().expect("8 of 32 bytes")),
            ca: Arc::new(ca.into_boxed_slice()),
            client_cert: client_cert?,
            client_cert_not_after,
            sources,
        })
    }
}

/// One file: the fast path without path tracking; on failure, parse again with it so the
/// diagnostic names the YAML path.
fn parse(source: &SourceFile) -> Result<RawFile, Diagnostic> {
    if source.text.trim().is_empty() {
        return Ok(RawFile::default());
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
