//! `routes` and `owners`: matches, modes, allow lists, exemptions, shadow policies.

use std::collections::HashMap;

use super::{list_or_none, parse_until, At, BundleIds, Compiler};
use crate::config::raw::*;
use crate::policy::{
    AllowEntry, AllowList, AutoRollback, BundleId, CrlStale, ExemptClient, Exemption, Mode, MtlsPolicy, Owner,
    OwnerMatch, Route, RouteTable, ShadowPolicy,
};

impl Compiler<'_> {
    pub(super) fn routes(&mut self, files: &[RawFile], bundles: &BundleIds) -> (Vec<Route>, RouteTable) {
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

    pub(super) fn route(&mut self, file: usize, base: &str, r: &RawRoute, bundles: &BundleIds) -> Option<Route> {
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
            Ok(normal) if normal.matching == prefix.as_str() && !prefix.contains(['?', '#', ';']) => {}
            _ => self.error(
                &At {
                    file,
                    path: &prefix_path,
                },
                format!("{prefix:?} is not a normalized absolute path (expected e.g. /payments: no '.' or '..' segments, no '//', no ';', only escapes of reserved characters, in uppercase)"),
            ),
        }

        let upstream = self.upstream(file, &format!("{base}.upstream"), &r.upstream);

        let refusal_page = self.refusal_page(file, &format!("{base}.refusal_page"), r.refusal_page.as_ref());
        let mtls_path = format!("{base}.mtls");
        let renewal_window = self.renewal_window(file, &mtls_path, r.mtls.as_ref());
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
        let (upstream, refusal_page, renewal_window) = (upstream?, refusal_page?, renewal_window?);
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
            refusal_page,
            renewal_window,
        })
    }

    /// `mtls.renewal_window` in seconds: 30 days unless the route says otherwise.
    fn renewal_window(&mut self, file: usize, mtls_path: &str, raw: Option<&RawMtls>) -> Option<i64> {
        const DEFAULT: i64 = 30 * 86_400;
        let Some(text) = raw.and_then(|m| m.renewal_window.as_deref()) else {
            return Some(DEFAULT);
        };
        let secs = humantime::parse_duration(text)
            .ok()
            .map(|d| d.as_secs() as i64)
            .filter(|s| (3600..=366 * 86_400).contains(s));
        if secs.is_none() {
            let p = format!("{mtls_path}.renewal_window");
            self.error(
                &At { file, path: &p },
                format!("{text:?} is not a window between 1h and 366d (expected e.g. 14d)"),
            );
        }
        secs
    }

    pub(super) fn bundle(
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

    pub(super) fn owners(&mut self, files: &[RawFile]) -> Vec<Owner> {
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

    pub(super) fn exemption(&mut self, file: usize, base: &str, raw: &RawExemption) -> Option<Exemption> {
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

    pub(super) fn auto_rollback(&mut self, file: usize, base: &str, raw: &RawAutoRollback) -> Option<AutoRollback> {
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

    pub(super) fn allow_list(&mut self, file: usize, base: &str, raw: &[RawAllow]) -> AllowList {
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
}
