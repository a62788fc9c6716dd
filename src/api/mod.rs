//! Operational endpoints: `GET /healthz`, `GET /readyz` (database reachable), `GET /metrics`.
//! The moderators' review-queue API lives under `/api/v1/` ([`review`], authenticated by [`auth`]).

pub mod auth;
pub mod extract;
pub mod overview;
pub mod review;
pub mod schema;
pub mod session;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::queue::JobQueue;
use crate::store::Store;

#[derive(Clone)]
pub struct OpsState {
    pub store: Store,
    /// `/metrics` needs `Authorization: Bearer <this>` when set.
    pub metrics_token: Option<SecretString>,
}

/// `/healthz`, `/readyz`, and `/metrics` unless it is served on an address of its own.
pub fn router(state: OpsState, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let router = if with_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router.with_state(state)
}

/// `/metrics` alone, for `server.metrics_listen`.
pub fn metrics_router(state: OpsState) -> Router {
    Router::new()
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

/// Renders the registry: O(1) in the data, since the gauges that need queries are refreshed in
/// the background ([`refresh_gauges`]).
async fn metrics(State(state): State<OpsState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(given, token.expose_secret()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "metrics need the bearer token (server.metrics_token)\n",
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
        .into_response()
}

/// Compares in constant time (over the digests, so the length leaks nothing either).
fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Sets the gauges that take a query: queue depth, and actions per status.
pub async fn refresh_gauges(store: &Store, queue: &dyn JobQueue) {
    match queue.depth().await {
        Ok(depth) => metrics::gauge!("chatguard_queue_depth").set(depth as f64),
        Err(e) => tracing::warn!(error = %e, "queue depth unavailable"),
    }
    match store.count_actions_by_status().await {
        Ok(counts) => {
            for (status, n) in counts {
                metrics::gauge!("chatguard_actions", "status" => status).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "action counts unavailable"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_whole() {
        assert!(super::same_secret("abc", "abc"));
        assert!(!super::same_secret("abd", "abc"));
        assert!(!super::same_secret("ab", "abc"));
        assert!(!super::same_secret("", "abc"));
    }
}
