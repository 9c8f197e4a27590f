//! What the API shows of a route: YAML mode, effective mode, the override and its story.

use serde::Serialize;

use crate::audit::{AuditState, Bucket, WindowTotals};
use crate::control::ConfigStatus;
use crate::policy::{Mode, Override, RouteId, Snapshot};

#[derive(Serialize)]
pub struct RouteView {
    pub name: String,
    pub host: String,
    pub path_prefix: String,
    pub yaml_mode: Mode,
    pub mode: Mode,
    /// Where a rollback would take the route now.
    pub rollback_target: Mode,
    #[serde(rename = "override")]
    pub active_override: Option<OverrideView>,
    pub trust: Option<String>,
    pub crl_stale: crate::policy::CrlStale,
    pub upstream: String,
    pub balance: crate::upstream::Balance,
    /// Backends with their health, ejection and load.
    pub backends: Vec<crate::upstream::BackendView>,
    pub enforce_percent: Option<u8>,
    pub exemptions: Vec<ExemptionView>,
    /// The candidate policy rehearsed on this route, if any.
    pub shadow: Option<ShadowView>,
    pub auto_rollback: Option<crate::policy::AutoRollback>,
    /// Counted by this process since it started (`GET /api/config` → `started_at`); unlike
    /// `last_hour` and `last_day`, they start from zero after a restart.
    pub requests: u64,
    pub would_reject: u64,
    pub rejected: u64,
    pub last_hour: WindowView,
    pub last_day: WindowView,
    pub readiness: Readiness,
    /// Per-minute counts of the last hour, for the chart.
    pub series: Vec<Bucket>,
}

#[derive(Serialize, Clone, Copy)]
pub struct WindowView {
    #[serde(flatten)]
    pub totals: WindowTotals,
    /// Distinct would-be-rejected clients.
    pub clients: usize,
}

/// "enforce now would reject X% of requests from N clients"
#[derive(Serialize, Clone)]
pub struct Readiness {
    pub route: String,
    pub window_secs: i64,
    pub requests: u64,
    pub would_reject: u64,
    pub reject_ratio: f64,
    pub clients: usize,
    pub summary: String,
}

pub fn readiness(route: &str, mode: Mode, window_secs: i64, w: WindowView) -> Readiness {
    let ratio = if w.totals.requests == 0 {
        0.0
    } else {
        w.totals.would_reject as f64 / w.totals.requests as f64
    };
    let summary = if mode == Mode::Off {
        "the route is off: clients are not evaluated (audit it first to measure)".to_string()
    } else if w.totals.requests == 0 {
        format!("no requests in the last {}", short_duration(window_secs))
    } else {
        format!(
            "enforce now would reject {:.1}% of requests from {} client{}",
            ratio * 100.0,
            w.clients,
            if w.clients == 1 { "" } else { "s" }
        )
    };
    Readiness {
        route: route.to_string(),
        window_secs,
        requests: w.totals.requests,
        would_reject: w.totals.would_reject,
        reject_ratio: ratio,
        clients: w.clients,
        summary,
    }
}

/// `24h`, `15m`, `90s`: how operators write windows.
pub fn short_duration(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 && s > 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Counts of a route over the last `secs`.
pub fn window(snapshot: &Snapshot, audit: &AuditState, id: RouteId, now: i64, secs: i64) -> WindowView {
    let name = &*snapshot.config.routes[id].name;
    let totals = snapshot.counters(id).totals();
    let since = now - secs;
    let totals = match audit.series.get(name) {
        Some(series) => series.window(since, totals),
        None => totals,
    };
    WindowView {
        totals,
        clients: audit.rejections.distinct_clients(name, since),
    }
}

#[derive(Serialize)]
pub struct ShadowView {
    pub trust: String,
    pub allow: Vec<String>,
    /// Over the last 24 h.
    pub requests: u64,
    pub newly_rejected: u64,
    pub newly_passed: u64,
}

#[derive(Serialize)]
pub struct ExemptionView {
    pub client: String,
    /// Unix seconds: the first instant the exemption no longer applies.
    pub until: i64,
    /// "through 2027-03-01 (UTC)": the end as the YAML said it.
    pub ends: String,
    pub reason: String,
    /// False once `until` has passed: the client is decided by the route's mode again.
    pub active: bool,
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

pub fn route_view(snapshot: &Snapshot, audit: &AuditState, status: &ConfigStatus, id: RouteId, now: i64) -> RouteView {
    let r = &snapshot.config.routes[id];
    let last_hour = window(snapshot, audit, id, now, 3600);
    let last_day = window(snapshot, audit, id, now, 86_400);
    let series = audit
        .series
        .get(&*r.name)
        .map(|s| s.buckets_since(now - 3600))
        .unwrap_or_default();
    let since_start = snapshot.counters(id).totals();
    let (requests, would_reject, rejected) = (since_start.requests, since_start.would_reject, since_start.rejected);
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
        rollback_target: status.rollback_target(&r.name, snapshot.effective_mode(id)),
        active_override,
        trust: r.trust.map(|b| snapshot.config.bundles[b].name.clone()),
        crl_stale: r.crl_stale,
        upstream: describe_targets(&r.upstream.pool),
        balance: r.upstream.pool.balance,
        backends: snapshot.pool(id).view(now),
        enforce_percent: r.mtls.enforce_percent,
        shadow: r.shadow.as_ref().map(|sh| ShadowView {
            trust: snapshot.config.bundles[sh.trust].name.clone(),
            allow: sh.allow.0.iter().map(|e| e.to_string()).collect(),
            requests: last_day.totals.shadow_requests,
            newly_rejected: last_day.totals.shadow_newly_rejected,
            newly_passed: last_day.totals.shadow_newly_passed,
        }),
        exemptions: r
            .mtls
            .exemptions
            .iter()
            .map(|e| ExemptionView {
                client: e.who.to_string(),
                until: e.until,
                ends: e.ends(),
                reason: e.reason.clone(),
                active: e.is_active(now),
            })
            .collect(),
        auto_rollback: r.auto_rollback,
        requests,
        would_reject,
        rejected,
        last_hour,
        last_day,
        readiness: readiness(&r.name, snapshot.effective_mode(id), 86_400, last_day),
        series,
    }
}

fn describe_targets(pool: &crate::upstream::PoolSpec) -> String {
    let parts: Vec<String> = pool
        .targets
        .iter()
        .map(|t| match t {
            crate::upstream::Target::Address { addr, .. } => addr.to_string(),
            crate::upstream::Target::Dns { host, port, .. } => format!("dns:{host}:{port}"),
        })
        .collect();
    parts.join(", ")
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
