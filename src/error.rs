//! The one HTTP error type. Library modules have their own `thiserror` enums; handlers map them
//! here. Bodies are `{"error":{"code","message"}}`; a bad signature gets a bare 401 (Stream does
//! not retry a 401), and storage failures get 503 so that Stream retries the delivery.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Unavailable(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        if matches!(self, ApiError::Unauthorized) {
            return status.into_response();
        }
        let message = match &self {
            ApiError::Unavailable(_) => "temporarily unavailable; retry".to_owned(),
            other => other.to_string(),
        };
        (
            status,
            Json(serde_json::json!({"error": {"code": self.code(), "message": message}})),
        )
            .into_response()
    }
}
