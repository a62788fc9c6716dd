//! Operational endpoints: `GET /healthz`, `GET /readyz` (database reachable), `GET /metrics`.
//! The moderators' review-queue API lives under `/api/v1/` ([`review`], authenticated by [`auth`]).

pub mod auth;
pub mod overview;
pub mod review;
pub mod schema;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::queue::JobQueue;
use crate::store::Store;

#[derive(Clone)]
pub struct OpsState {
    pub store: Store,
    pub queue: Arc<dyn JobQueue>,
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "ready", "database": state.store.backend_name()})),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable", "database": "unreachable"})),
            )
        }
    }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    match state.queue.depth().await {
        Ok(depth) => metrics::gauge!("chatguard_queue_depth").set(depth as f64),
        Err(e) => tracing::warn!(error = %e, "queue depth unavailable"),
    }
    if let Ok(counts) = state.store.count_events_by_status().await {
        for (status, n) in counts {
            metrics::gauge!("chatguard_events", "status" => status).set(n as f64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
}
