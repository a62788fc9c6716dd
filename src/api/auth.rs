//! Bearer-token authentication for `/api/` routes and their one JSON error shape,
//! `{"error":{"code","message"}}`.
//!
//! Kept apart from [`crate::error::ApiError`]: that type answers a bad webhook signature with a
//! bare 401 (which Stream must see), while every `/api/` error carries a body.

use axum::Json;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::schema::{ErrorBody, ErrorDetail};
use crate::store::{Role, Store, StoreError, hash_token};

/// An `/api/` error; its `code` is one of the variant names in snake case.
#[derive(Debug, thiserror::Error)]
pub enum ApiJsonError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    /// Stream refused or could not be reached; nothing was changed.
    #[error("{0}")]
    StreamFailed(String),
    /// The cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiJsonError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiJsonError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiJsonError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiJsonError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiJsonError::Conflict(_) => StatusCode::CONFLICT,
            ApiJsonError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiJsonError::StreamFailed(_) => StatusCode::BAD_GATEWAY,
            ApiJsonError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` object of the body.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code().to_owned(),
            message: self.to_string(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiJsonError::Unauthorized(_) => "unauthorized",
            ApiJsonError::Forbidden(_) => "forbidden",
            ApiJsonError::NotFound(_) => "not_found",
            ApiJsonError::Conflict(_) => "conflict",
            ApiJsonError::BadRequest(_) => "bad_request",
            ApiJsonError::StreamFailed(_) => "stream_failed",
            ApiJsonError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiJsonError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiJsonError::NotFound("not found".to_owned()),
            other => ApiJsonError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiJsonError {
    fn into_response(self) -> Response {
        if let ApiJsonError::Internal(cause) = &self {
            tracing::error!(%cause, "api request failed");
        }
        let mut res = (
            self.status(),
            Json(ErrorBody {
                error: self.detail(),
            }),
        )
            .into_response();
        if matches!(self, ApiJsonError::Unauthorized(_)) {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

/// The caller of an `/api/` route, from `Authorization: Bearer <secret>`.
#[derive(Debug, Clone)]
pub struct Auth {
    pub token_name: String,
    pub role: Role,
}

impl Auth {
    /// 403 unless the caller's role is at least `role` (viewer < moderator < admin).
    pub fn require(&self, role: Role) -> Result<(), ApiJsonError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiJsonError::Forbidden(format!(
                "this needs the {} role; token {:?} is {}",
                role.as_str(),
                self.token_name,
                self.role.as_str()
            )))
        }
    }
}

/// The secret of a well-formed `Bearer` header (scheme case-insensitive, RFC 7235).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.trim().split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

impl<S> FromRequestParts<S> for Auth
where
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiJsonError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let secret = bearer(parts).ok_or_else(|| {
            ApiJsonError::Unauthorized("an Authorization: Bearer <token> header is required".into())
        })?;
        let store = Store::from_ref(state);
        let row = store
            .token_by_hash(&hash_token(secret), Utc::now())
            .await?
            .ok_or_else(|| ApiJsonError::Unauthorized("unknown or revoked token".into()))?;
        let role = row.role().ok_or_else(|| {
            ApiJsonError::Internal(format!("token {:?} has no valid role", row.name))
        })?;
        Ok(Auth {
            token_name: row.name,
            role,
        })
    }
}

/// Callers that must hold at least one role: the extractor answers 401 without a valid token
/// and 403 for a role below it, so a handler states its role in its signature.
macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Auth);

        impl<S> FromRequestParts<S> for $name
        where
            Store: FromRef<S>,
            S: Send + Sync,
        {
            type Rejection = ApiJsonError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let auth = Auth::from_request_parts(parts, state).await?;
                auth.require($role)?;
                Ok(Self(auth))
            }
        }
    };
}

role_extractor!(
    /// Any valid token: viewers, moderators and admins.
    Viewer,
    Role::Viewer
);
role_extractor!(
    /// A moderator or an admin.
    Moderator,
    Role::Moderator
);
role_extractor!(
    /// An admin.
    Admin,
    Role::Admin
);
