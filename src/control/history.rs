//! What changed between two applied configurations, per route.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::policy::{CompiledConfig, Mode, Route};

/// What triggered a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadSource {
    Startup,
    FileChange,
    Sighup,
    Api,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RouteChange {
    Added {
        route: String,
        mode: Mode,
    },
    Removed {
        route: String,
        mode: Mode,
    },
    /// The YAML mode changed — the change operators care about most.
    ModeChanged {
        route: String,
        from: Mode,
        to: Mode,
    },
    /// Match, upstream, trust bundle or allow list changed.
    Modified {
        route: String,
        fields: Vec<&'static str>,
    },
}

impl RouteChange {
    pub fn route(&self) -> &str {
        match self {
            RouteChange::Added { route, .. }
            | RouteChange::Removed { route, .. }
            | RouteChange::ModeChanged { route, .. }
            | RouteChange::Modified { route, .. } => route,
        }
    }
}

/// One applied generation.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    pub generation: u64,
    pub at: i64,
    pub source: ReloadSource,
    pub content_hash: String,
    pub changes: Vec<RouteChange>,
    /// Overrides dropped because their route no longer exists.
    pub dropped_overrides: Vec<String>,
}

/// Route-level differences, mode changes first.
pub fn diff(old: Option<&CompiledConfig>, new: &CompiledConfig) -> Vec<RouteChange> {
    let index = |c: &CompiledConfig| -> BTreeMap<String, usize> {
        c.routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.to_string(), i))
            .collect()
    };
    let new_index = index(new);
    let old_index = old.map(index).unwrap_or_default();
    let mut changes = Vec::new();
    for (name, &i) in &new_index {
        let route = &new.routes[i];
        match (old, old_index.get(name)) {
            (Some(old), Some(&j)) => {
                let before = &old.routes[j];
                if before.mode != route.mode {
                    changes.push(RouteChange::ModeChanged {
                        route: name.clone(),
                        from: before.mode,
                        to: route.mode,
                    });
                }
                let fields = modified_fields(old, before, new, route);
                if !fields.is_empty() {
                    changes.push(RouteChange::Modified {
                        route: name.clone(),
                        fields,
                    });
                }
            }
            _ => changes.push(RouteChange::Added {
                route: name.clone(),
                mode: route.mode,
            }),
        }
    }
    if let Some(old) = old {
        for (name, &j) in &old_index {
            if !new_index.contains_key(name) {
                changes.push(RouteChange::Removed {
                    route: name.clone(),
                    mode: old.routes[j].mode,
                });
            }
        }
    }
    changes.sort_by_key(|c| !matches!(c, RouteChange::ModeChanged { .. }));
    changes
}

fn modified_fields(old: &CompiledConfig, a: &Route, new: &CompiledConfig, b: &Route) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if a.host != b.host || a.path_prefix != b.path_prefix {
        fields.push("match");
    }
    let trust_name = |c: &CompiledConfig, r: &Route| r.trust.map(|t| c.bundles[t].name.clone());
    if trust_name(old, a) != trust_name(new, b) {
        fields.push("trust");
    }
    if a.mtls.allow != b.mtls.allow {
        fields.push("allow");
    }
    if a.mtls.enforce_percent != b.mtls.enforce_percent
        || a.mtls.exemptions != b.mtls.exemptions
        || a.auto_rollback != b.auto_rollback
    {
        fields.push("staging");
    }
    let upstream = |r: &Route| {
        (
            r.upstream.pool.clone(),
            r.upstream
                .tls
                .as_ref()
                .map(|t| (t.sni.clone(), t.trust_key, t.client_cert_not_after)),
        )
    };
    if upstream(a) != upstream(b) {
        fields.push("upstream");
    }
    fields
}
