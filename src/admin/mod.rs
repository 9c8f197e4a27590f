//! The admin listener: JSON API over axum. Handlers read the live snapshot, the recorder
//! and the control plane's status; every change goes through the control plane.

mod auth;
mod export;
pub use export::rfc3339;
mod metrics;
mod owners;
mod ui;
mod views;
pub use views::short_duration;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{middleware, Json, Router};
use serde::Deserialize;

pub use auth::{AdminHosts, AdminToken};

use crate::audit::{Recorder, VerdictFilter};
use crate::control::{ControlError, ControlHandle, OverrideRequest, ReloadSource};
use crate::policy::{Mode, SharedSnapshot};
use crate::proxy::unix_now;

#[derive(Clone)]
pub struct AdminState {
    pub snapshot: SharedSnapshot,
    pub recorder: Recorder,
    pub control: ControlHandle,
    pub token: Option<AdminToken>,
    pub instance: std::sync::Arc<str>,
    /// The names the admin listener answers to (DNS rebinding).
    pub hosts: auth::AdminHosts,
}

type SharedAdmin = Arc<AdminState>;

pub fn router(state: AdminState) -> Router {
    let metrics = Arc::new(metrics::registry(state.clone()));
    let state = Arc::new(state);
    let mutations = Router::new()
        .route("/api/config/reload", post(reload))
        .route("/api/routes/{name}/rollback", post(rollback))
        .route("/api/routes/{name}/mode", post(set_mode))
        .route("/api/routes/{name}/override", delete(clear_override))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { render_metrics(&metrics) }
            }),
        )
        .route("/api/stats", get(stats))
        .route("/api/config", get(config_status))
        .route("/api/config/history", get(config_history))
        .route("/api/routes", get(list_routes))
        .route("/api/routes/{name}", get(route_detail))
        .route("/api/routes/{name}/rejections", get(route_rejections))
        .route("/api/routes/{name}/readiness", get(route_readiness))
        .route("/api/routes/{name}/shadow", get(route_shadow))
        .route("/api/routes/{name}/owners", get(route_owners))
        .route("/api/certificates", get(certificates))
        .route("/api/fleet", get(fleet_view))
        .merge(ui::router())
        .merge(mutations)
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_known_host))
        .with_state(state)
}

/// Errors a caller can act on; bodies are `{error, reason}` like the proxy's. Internal
/// failures say nothing more than that.
pub enum ApiError {
    NotFound(String),
    BadRequest(String),
    Conflict(String),
    Unavailable,
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::UnknownRoute(_) => ApiError::NotFound(e.to_string()),
            ControlError::NoTrustBundle { .. } | ControlError::RollbackTightens { .. } => {
                ApiError::Conflict(e.to_string())
            }
            ControlError::Stopped => ApiError::Unavailable,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, reason, message) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "shutting down".to_string(),
            ),
        };
        (status, Json(serde_json::json!({ "error": message, "reason": reason }))).into_response()
    }
}

/// Parses an optional JSON body with a message that says what was expected.
fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes, expected: &str) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e} (expected {expected})")))
}

/// Ready when a configuration is loaded and the control plane answers; a load balancer
/// stops sending traffic as soon as the admin listener goes away at shutdown.
async fn readyz(State(state): State<SharedAdmin>) -> Response {
    let status = state.control.status();
    if state.control.is_running() {
        (
            StatusCode::OK,
            Json(serde_json::json!({"ready": true, "generation": status.generation})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false})),
        )
            .into_response()
    }
}

fn render_metrics(registry: &prometheus_client::registry::Registry) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn stats(State(state): State<SharedAdmin>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "handshakes": state.recorder.handshakes().totals(),
        "recording_queue_dropped": state.recorder.queue_dropped(),
    }))
}

async fn config_status(State(state): State<SharedAdmin>) -> Json<serde_json::Value> {
    let status = state.control.status();
    let mut v = serde_json::to_value(&*status).unwrap_or_default();
    v["audit_store"] = serde_json::to_value(state.recorder.store_status()).unwrap_or_default();
    // what the running config compiled with but will fail clients (stale CRLs…)
    v["warnings"] = serde_json::to_value(&state.snapshot.load().config.warnings).unwrap_or_default();
    v["store"] = match state.control.fleet() {
        Some(fleet) => serde_json::to_value(fleet.status()).unwrap_or_default(),
        None => serde_json::json!({"store": "local", "health": crate::store::StoreHealth::Local}),
    };
    Json(v)
}

async fn config_history(State(state): State<SharedAdmin>) -> Json<serde_json::Value> {
    let status = state.control.status();
    let newest_first: Vec<_> = status.history.iter().rev().collect();
    Json(serde_json::json!({ "generations": newest_first }))
}

async fn list_routes(State(state): State<SharedAdmin>) -> Json<Vec<views::RouteView>> {
    let snapshot = state.snapshot.load();
    let status = state.control.status();
    let now = unix_now();
    Json(state.recorder.read(|audit| {
        (0..snapshot.config.routes.len())
            .map(|id| views::route_view(&snapshot, audit, &status, id, now))
            .collect()
    }))
}

fn route_id(snapshot: &crate::policy::Snapshot, name: &str) -> Result<crate::policy::RouteId, ApiError> {
    snapshot
        .config
        .route_by_name(name)
        .map(|(id, _)| id)
        .ok_or_else(|| ApiError::NotFound(format!("no route named {name:?}")))
}

async fn route_detail(
    State(state): State<SharedAdmin>,
    Path(name): Path<String>,
) -> Result<Json<views::RouteView>, ApiError> {
    let snapshot = state.snapshot.load();
    let status = state.control.status();
    let id = route_id(&snapshot, &name)?;
    Ok(Json(state.recorder.read(|audit| {
        views::route_view(&snapshot, audit, &status, id, unix_now())
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReadinessQuery {
    window: Option<String>,
}

/// Parses `30s`, `15m`, `24h`, `7d` into seconds.
fn parse_window(text: Option<&str>) -> Result<i64, ApiError> {
    let text = text.unwrap_or("24h");
    let secs = humantime::parse_duration(text)
        .map_err(|e| ApiError::BadRequest(format!("window {text:?}: {e} (expected e.g. 1h, 24h, 7d)")))?
        .as_secs();
    if secs == 0 || secs > 7 * 86_400 {
        return Err(ApiError::BadRequest(format!(
            "window {text:?} is out of range (expected 1s to 7d)"
        )));
    }
    Ok(secs as i64)
}

async fn route_readiness(
    State(state): State<SharedAdmin>,
    Path(name): Path<String>,
    query: Result<Query<ReadinessQuery>, QueryRejection>,
) -> Result<Json<views::Readiness>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let secs = parse_window(query.window.as_deref())?;
    let snapshot = state.snapshot.load();
    let id = route_id(&snapshot, &name)?;
    let w = state
        .recorder
        .read(|audit| views::window(&snapshot, audit, id, unix_now(), secs));
    Ok(Json(views::readiness(&name, snapshot.effective_mode(id), secs, w)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RejectionsQuery {
    reason: Option<String>,
    verdict: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    format: Option<String>,
    /// In a fleet: only the clients this instance saw, with its own counts.
    instance: Option<String>,
}

async fn route_rejections(
    State(state): State<SharedAdmin>,
    Path(name): Path<String>,
    query: Result<Query<RejectionsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    route_id(&state.snapshot.load(), &name)?;
    let which = match q.verdict.as_deref().filter(|v| !v.is_empty()) {
        None => VerdictFilter::default(),
        Some(v) => VerdictFilter::parse(v)
            .ok_or_else(|| ApiError::BadRequest(format!("verdict {v:?} (expected would_reject, exempt or all)")))?,
    };
    let mut view = state.recorder.rejections(&name, which);
    if let Some(reason) = q.reason.as_deref().filter(|r| !r.is_empty()) {
        let reason = crate::policy::Reason::from_code(reason).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{reason:?} is not a reason code (expected e.g. no_cert, expired)"
            ))
        })?;
        view.clients.retain(|c| c.reason == reason);
    }
    if let Some(instance) = q.instance.as_deref().filter(|i| !i.is_empty()) {
        // each client with this instance's share of it, and only the clients it saw
        view.clients.retain_mut(|c| {
            let Some(mine) = c.seen_by.iter().find(|s| s.instance == instance) else {
                return false;
            };
            (c.count, c.last_seen) = (mine.count, mine.last_seen);
            true
        });
    }
    export::sort(&mut view.clients, q.sort.as_deref(), q.order.as_deref()).map_err(ApiError::BadRequest)?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(view).into_response()),
        Some("csv") => Ok(export::csv_response(&name, &view.clients)),
        Some(other) => Err(ApiError::BadRequest(format!("format {other:?} (expected json or csv)"))),
    }
}

/// The fleet: the store, its health, and every instance with the policy it runs (an
/// instance whose content hash differs from this one's runs another policy: skew).
async fn fleet_view(State(state): State<SharedAdmin>) -> Json<serde_json::Value> {
    let status = state.control.status();
    let now = unix_now();
    let me = serde_json::json!({
        "id": &*state.instance,
        "generation": status.generation,
        "content_hash": status.content_hash,
        "last_seen": now,
    });
    let Some(fleet) = state.control.fleet() else {
        return Json(serde_json::json!({
            "store": "local",
            "health": crate::store::StoreHealth::Local,
            "instance": &*state.instance,
            "showing": "this instance",
            "instances": [me],
        }));
    };
    let listed = tokio::time::timeout(std::time::Duration::from_secs(1), fleet.store().instances()).await;
    let (instances, error) = match listed {
        Ok(Ok(list)) => (list, None),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(_) => (Vec::new(), Some("the fleet store did not answer within 1s".to_string())),
    };
    let instances: Vec<serde_json::Value> = instances
        .iter()
        .map(|i| {
            let mut v = serde_json::to_value(i).unwrap_or_default();
            v["silent"] = (now - i.last_seen > crate::control::fleet::SILENT_AFTER).into();
            v["same_policy"] = (i.content_hash == status.content_hash).into();
            v
        })
        .collect();
    let mut v = serde_json::to_value(fleet.status()).unwrap_or_default();
    v["showing"] = if state.recorder.shows_fleet() {
        "fleet"
    } else {
        "this instance"
    }
    .into();
    v["instances"] = instances.into();
    v["error"] = error.into();
    Json(v)
}

async fn route_shadow(
    State(state): State<SharedAdmin>,
    Path(name): Path<String>,
    query: Result<Query<ReadinessQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let secs = parse_window(query.window.as_deref())?;
    let snapshot = state.snapshot.load();
    let id = route_id(&snapshot, &name)?;
    let route = &snapshot.config.routes[id];
    let Some(shadow) = &route.shadow else {
        return Err(ApiError::NotFound(format!(
            "route {name:?} has no shadow policy (mtls.shadow)"
        )));
    };
    let now = unix_now();
    let (w, newly_rejected, newly_passed) = state.recorder.read(|audit| {
        let mut w = views::window(&snapshot, audit, id, now, secs);
        w.clients = audit.shadow_rejected.distinct_clients(&name, now - secs);
        (
            w,
            audit.shadow_rejected.view(&name).clients,
            audit.shadow_passed.view(&name).clients,
        )
    });
    let t = w.totals;
    let ratio = if t.shadow_requests == 0 {
        0.0
    } else {
        t.shadow_newly_rejected as f64 / t.shadow_requests as f64
    };
    let summary = if t.shadow_requests == 0 {
        format!("no requests in the last {}", views::short_duration(secs))
    } else {
        format!(
            "promoting the shadow policy would newly reject {:.1}% of requests from {} client{}",
            ratio * 100.0,
            w.clients,
            if w.clients == 1 { "" } else { "s" }
        )
    };
    Ok(Json(serde_json::json!({
        "route": name,
        "trust": snapshot.config.bundles[shadow.trust].name,
        "allow": shadow.allow.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "window_secs": secs,
        "requests": t.shadow_requests,
        "newly_rejected": t.shadow_newly_rejected,
        "newly_passed": t.shadow_newly_passed,
        "newly_reject_ratio": ratio,
        "clients": w.clients,
        "summary": summary,
        "newly_rejected_clients": newly_rejected,
        "newly_passed_clients": newly_passed,
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OwnersQuery {
    shadow: Option<bool>,
}

async fn route_owners(
    State(state): State<SharedAdmin>,
    Path(name): Path<String>,
    query: Result<Query<OwnersQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let snapshot = state.snapshot.load();
    let id = route_id(&snapshot, &name)?;
    let shadow = query.shadow.unwrap_or(false);
    if shadow && snapshot.config.routes[id].shadow.is_none() {
        return Err(ApiError::NotFound(format!(
            "route {name:?} has no shadow policy (mtls.shadow)"
        )));
    }
    let now = unix_now();
    let (clients, renewals) = state.recorder.read(|audit| {
        let store = if shadow {
            &audit.shadow_rejected
        } else {
            &audit.rejections
        };
        // exempt clients are kept apart: they would pass under enforce, nobody needs telling
        let clients = store.view(&name).clients;
        // renewals are about the live route, not a candidate policy
        let renewals = if shadow {
            Vec::new()
        } else {
            audit.renewals.of_route(&name)
        };
        (clients, renewals)
    });
    // what was recorded under a wider window than the route has now is not due yet
    let window = snapshot.config.routes[id].renewal_window;
    let renewals = renewals
        .into_iter()
        .filter(|r| r.certificate.not_after - now < window)
        .map(|r| owners::RenewalView::new(r, now))
        .collect();
    let groups = owners::group(&snapshot.config.owners, clients, renewals);
    Ok(Json(serde_json::json!({
        "route": name,
        "view": if shadow { "shadow" } else { "live" },
        "renewal_window_secs": window,
        "groups": groups,
    })))
}

async fn certificates(State(state): State<SharedAdmin>) -> Json<serde_json::Value> {
    let snapshot = state.snapshot.load();
    Json(export::certificates(&snapshot, &state.recorder, unix_now()))
}

async fn reload(State(state): State<SharedAdmin>) -> Result<Response, ApiError> {
    let outcome = state.control.reload(ReloadSource::Api).await?;
    let status = match outcome {
        crate::control::ReloadOutcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    Ok((status, Json(outcome)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to: Option<Mode>,
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: Option<Mode>,
    reason: Option<String>,
}

async fn rollback(
    State(state): State<SharedAdmin>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: RollbackBody = parse_body(&body, r#"{"to": "audit", "reason": "…"}, both optional"#)?;
    let outcome = state
        .control
        .change_mode(
            &name,
            OverrideRequest::Rollback {
                to: body.to,
                reason: body.reason,
            },
        )
        .await?;
    Ok(Json(outcome).into_response())
}

async fn set_mode(
    State(state): State<SharedAdmin>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expected = r#"{"mode": "off|audit|soft-fail|enforce", "reason": "…"}"#;
    let body: ModeBody = parse_body(&body, expected)?;
    let mode = body
        .mode
        .ok_or_else(|| ApiError::BadRequest(format!("missing mode (expected {expected})")))?;
    let outcome = state
        .control
        .change_mode(
            &name,
            OverrideRequest::SetMode {
                mode,
                reason: body.reason,
            },
        )
        .await?;
    Ok(Json(outcome).into_response())
}

async fn clear_override(State(state): State<SharedAdmin>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let outcome = state.control.change_mode(&name, OverrideRequest::Clear).await?;
    Ok(Json(outcome).into_response())
}
