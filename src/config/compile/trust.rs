//! `trust_bundles`: anchors, intermediates, CRLs and the strict profile of each bundle, with
//! warnings for CRLs that would fail clients (stray, stale, or missing for a CA).

use std::collections::{BTreeMap, HashMap, HashSet};

use openssl::x509::{X509Crl, X509};

use super::{first_error, At, BundleIds, Compiler};
use crate::config::raw::*;
use crate::policy::{bundles_of, ca_names_bytes, CrlStale, Route, RouteTable, TrustBundle, MAX_CA_NAMES_BYTES};
use crate::tls::{describe, describe_name, unix_time, ChainLimits, Relaxed, StrictCheck, TrustAnchors};

/// A CRL with where it came from, for warnings.
struct LoadedCrl {
    crl: X509Crl,
    /// `trust_bundles.NAME.crl[i]`
    yaml_path: String,
    file: String,
    line: usize,
}

impl LoadedCrl {
    fn origin(&self) -> String {
        match self.line {
            0 => format!("{:?}", self.file),
            line => format!("{:?} line {line}", self.file),
        }
    }
}

impl Compiler<'_> {
    /// Bundles by name; a bundle with problems maps to `None` so routes naming it do not
    /// report it a second time as unknown.
    pub(super) fn trust_bundles(&mut self, files: &[RawFile]) -> (Vec<TrustBundle>, BundleIds) {
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
                    match self.crl_file(&At { file, path: &path }, p) {
                        Some(entries) => crls.extend(entries.into_iter().map(|e| LoadedCrl {
                            crl: e.crl,
                            yaml_path: path.clone(),
                            file: p.display().to_string(),
                            line: e.line,
                        })),
                        None => crls_ok = false,
                    }
                }
                let mut limits = ChainLimits::default();
                if let Some(depth) = b.max_chain_depth {
                    if depth > 16 {
                        let path = format!("{base}.max_chain_depth");
                        self.error(
                            &At { file, path: &path },
                            format!("{depth} is out of range (expected 0 to 16 intermediates)"),
                        );
                    }
                    limits.max_depth = depth;
                }
                let relaxed = self.relaxations(file, &base, &b.relax);
                let (Some(anchors), Some(intermediates), true, Some(relaxed)) =
                    (anchors, intermediates, crls_ok, relaxed)
                else {
                    ids.insert((name.clone(), CrlStale::FailClosed), None);
                    ids.insert((name.clone(), CrlStale::FailOpen), None);
                    continue;
                };
                if !crls.is_empty() {
                    self.check_crl_coverage(file, &base, &anchors, &intermediates, &crls);
                }
                let mut sources = vec![self.resolve(&at, &b.ca)];
                sources.extend(b.intermediates.iter().map(|p| self.resolve(&at, p)));
                sources.extend(b.crl.iter().map(|p| self.resolve(&at, p)));
                let crls: Vec<X509Crl> = crls.into_iter().map(|c| c.crl).collect();
                let ca_name_bytes = anchors
                    .iter()
                    .map(|a| a.subject_name().to_der().map_or(0, |d| d.len() + 2))
                    .sum();
                let crl_next_updates: Vec<(String, i64)> = crls
                    .iter()
                    .map(|c| {
                        let issuer = describe_name(c.issuer_name());
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
                    let options = crate::tls::VerifyOptions {
                        limits,
                        relaxed,
                        tolerate_stale_crls: crl_stale == CrlStale::FailOpen,
                        ..Default::default()
                    };
                    match TrustAnchors::new(anchors.clone(), intermediates.clone(), &crls, options) {
                        Ok(compiled) => {
                            ids.insert((name.clone(), crl_stale), Some(bundles.len()));
                            bundles.push(TrustBundle {
                                name: name.clone(),
                                crl_stale,
                                crl_next_updates: crl_next_updates.clone(),
                                anchors: compiled,
                                sources: sources.clone(),
                                ca_name_bytes,
                                defined_at: (file, base.clone()),
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

    /// Warns where the CA names a host's routes trust cannot fit in a CertificateRequest:
    /// the gateway then sends none for that host (clients choose a certificate unaided).
    pub(super) fn check_ca_names(&mut self, bundles: &[TrustBundle], routes: &[Route], table: &RouteTable) {
        let mut hosts: Vec<&str> = table.hosts().collect();
        hosts.sort_unstable();
        for host in hosts {
            let used = bundles_of(routes, table.routes_of_host(host));
            let total = ca_names_bytes(bundles, &used);
            if total <= MAX_CA_NAMES_BYTES {
                continue;
            }
            let Some(&largest) = used.iter().max_by_key(|&&b| bundles[b].ca_name_bytes) else {
                continue;
            };
            let bundle = &bundles[largest];
            let (file, path) = bundle.defined_at.clone();
            self.warn(
                &At { file, path: &path },
                format!(
                    "the CA names that host {host} asks clients for take {total} bytes ({} anchors in trust bundle {}); a TLS CertificateRequest carries at most {MAX_CA_NAMES_BYTES}, so the gateway sends no CA names for {host} (clients then choose a certificate without the hint; handshakes still work)",
                    bundle.anchors.anchors().len(),
                    bundle.name
                ),
            );
        }
    }

    /// `relax: [check, ...]`; `None` after reporting a name that is not a relaxable check.
    fn relaxations(&mut self, file: usize, base: &str, names: &[String]) -> Option<Relaxed> {
        let mut checks = Vec::new();
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            match StrictCheck::parse(name) {
                Ok(check) => checks.push(check),
                Err(e) => {
                    let path = format!("{base}.relax[{i}]");
                    self.error(&At { file, path: &path }, e);
                    ok = false;
                }
            }
        }
        ok.then(|| Relaxed::of(&checks))
    }

    /// Warnings for CRLs that will fail clients once the bundle checks revocation: a CRL
    /// that matches no CA of the bundle (or does not verify with its key), one past its
    /// nextUpdate, and a CA of the bundle without a CRL.
    fn check_crl_coverage(
        &mut self,
        file: usize,
        base: &str,
        anchors: &[X509],
        intermediates: &[X509],
        crls: &[LoadedCrl],
    ) {
        let now = crate::proxy::unix_now();
        let cas: Vec<&X509> = anchors.iter().chain(intermediates).collect();
        for crl in crls {
            let at = At {
                file,
                path: &crl.yaml_path,
            };
            let issuer = crl.crl.issuer_name();
            let by_name: Vec<&&X509> = cas
                .iter()
                .filter(|ca| ca.subject_name().try_cmp(issuer).is_ok_and(|o| o.is_eq()))
                .collect();
            if by_name.is_empty() {
                self.warn(
                    &at,
                    format!(
                        "CRL at {} (issuer {}) matches no CA of the bundle (anchors and intermediates): it applies only to chains whose clients send that CA themselves; list it under intermediates so that check can verify this CRL",
                        crl.origin(),
                        describe_name(issuer)
                    ),
                );
            } else if !by_name
                .iter()
                .any(|ca| ca.public_key().and_then(|k| crl.crl.verify(&k)).unwrap_or(false))
            {
                self.warn(
                    &at,
                    format!(
                        "CRL at {} (issuer {}) does not verify with that CA's key: clients whose chain it covers get crl_invalid",
                        crl.origin(),
                        describe_name(issuer)
                    ),
                );
            }
            if let Some(next) = crl.crl.next_update().and_then(unix_time).filter(|next| *next < now) {
                self.warn(
                    &at,
                    format!(
                        "CRL at {} (issuer {}) is past its nextUpdate ({}): clients whose chain it covers get crl_invalid, unless the route says crl_stale: fail-open",
                        crl.origin(),
                        describe_name(issuer),
                        rfc3339(next)
                    ),
                );
            }
        }
        for ca in cas {
            let covered = crls
                .iter()
                .any(|c| c.crl.issuer_name().try_cmp(ca.subject_name()).is_ok_and(|o| o.is_eq()));
            if !covered {
                let path = format!("{base}.crl");
                self.warn(
                    &At { file, path: &path },
                    format!(
                        "CA {} has no CRL in this bundle: with CRL checking on, every client whose chain passes through it gets crl_invalid",
                        describe(ca)
                    ),
                );
            }
        }
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}
