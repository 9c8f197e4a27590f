//! The admin listener: JSON API (and, later, the page) over axum. Handlers read the live
//! snapshot and the recorder; changes go through the control plane.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::audit::Recorder;
use crate::policy::{Mode, SharedSnapshot};

#[derive(Clone)]
pub struct AdminState {
    pub snapshot: SharedSnapshot,
    pub recorder: Recorder,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/stats", get(stats))
        .route("/api/routes", get(list_routes))
        .route("/api/routes/{name}/rejections", get(route_rejections))
        .with_state(Arc::new(state))
}

/// Errors a caller can act on; bodies are `{error, reason}` like the proxy's.
pub enum ApiError {
    NotFound(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, reason, message) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
        };
        (status, Json(serde_json::json!({ "error": message, "reason": reason }))).into_response()
    }
}

#[derive(Serialize)]
struct RouteView {
    name: String,
    host: String,
    path_prefix: String,
    yaml_mode: Mode,
    mode: Mode,
    trust: Option<String>,
    requests: u64,
    would_reject: u64,
    rejected: u64,
}

async fn list_routes(State(state): State<Arc<AdminState>>) -> Json<Vec<RouteView>> {
    let snapshot = state.snapshot.load();
    let views = snapshot
        .config
        .routes
        .iter()
        .enumerate()
        .map(|(id, r)| {
            let (requests, would_reject, rejected) = snapshot.counters(id).totals();
            RouteView {
                name: r.name.to_string(),
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                yaml_mode: r.mode,
                mode: snapshot.effective_mode(id),
                trust: r.trust.map(|b| snapshot.config.bundles[b].name.clone()),
                requests,
                would_reject,
                rejected,
            }
        })
        .collect();
    Json(views)
}

async fn stats(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "handshakes": state.recorder.handshakes().totals(),
        "recording_queue_dropped": state.recorder.queue_dropped(),
    }))
}

async fn route_rejections(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<crate::audit::RouteRejectionsView>, ApiError> {
    if state.snapshot.load().config.route_by_name(&name).is_none() {
        return Err(ApiError::NotFound(format!("no route named {name:?}")));
    }
    Ok(Json(state.recorder.rejections(&name)))
}
