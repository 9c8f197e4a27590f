//! What the API shows of a route: YAML mode, effective mode, the override and its story.

use serde::Serialize;

use crate::policy::{Mode, Override, RouteId, Snapshot};

#[derive(Serialize)]
pub struct RouteView {
    pub name: String,
    pub host: String,
    pub path_prefix: String,
    pub yaml_mode: Mode,
    pub mode: Mode,
    #[serde(rename = "override")]
    pub active_override: Option<OverrideView>,
    pub trust: Option<String>,
    pub upstream: String,
    pub requests: u64,
    pub would_reject: u64,
    pub rejected: u64,
}

#[derive(Serialize)]
pub struct OverrideView {
    #[serde(flatten)]
    pub value: Override,
    /// The YAML mode changed after the override was set: someone meant something else.
    pub conflict: bool,
    /// "YAML says enforce; running audit since 18:02 UTC, rolled back: <reason>"
    pub summary: String,
}

pub fn route_view(snapshot: &Snapshot, id: RouteId) -> RouteView {
    let r = &snapshot.config.routes[id];
    let (requests, would_reject, rejected) = snapshot.counters(id).totals();
    let active_override = snapshot.overrides.get(&*r.name).map(|o| OverrideView {
        conflict: o.yaml_mode_when_set != r.mode,
        summary: summary(r.mode, o),
        value: o.clone(),
    });
    RouteView {
        name: r.name.to_string(),
        host: r.host.clone(),
        path_prefix: r.path_prefix.clone(),
        yaml_mode: r.mode,
        mode: snapshot.effective_mode(id),
        active_override,
        trust: r.trust.map(|b| snapshot.config.bundles[b].name.clone()),
        upstream: r.upstream.address.to_string(),
        requests,
        would_reject,
        rejected,
    }
}

fn summary(yaml: Mode, o: &Override) -> String {
    let since = time::OffsetDateTime::from_unix_timestamp(o.since)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| o.since.to_string());
    let what = match o.kind {
        crate::policy::OverrideKind::Rollback => "rolled back",
        crate::policy::OverrideKind::SetMode => "set by an operator",
        crate::policy::OverrideKind::AutoRollback => "rolled back automatically",
    };
    let mut text = format!("YAML says {yaml}; running {} since {since}, {what}", o.mode);
    if let Some(reason) = &o.reason {
        text.push_str(": ");
        text.push_str(reason);
    }
    if o.yaml_mode_when_set != yaml {
        text.push_str(&format!(
            " (the YAML changed from {} to {yaml} since; clear the override to apply it)",
            o.yaml_mode_when_set
        ));
    }
    text
}
