//! Extractors of the `/api/` routes whose rejections are the API's JSON errors (400 with what
//! was wrong), so handlers take parsed values and repeat no error mapping.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::auth::ApiJsonError;

/// A review item's id from the path.
#[derive(Debug, Clone, Copy)]
pub struct ItemId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for ItemId {
    type Rejection = ApiJsonError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| ItemId(id))
            .map_err(|_| ApiJsonError::BadRequest("the review item id must be an integer".into()))
    }
}

/// Query parameters; unknown or malformed ones are a 400 naming them.
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiJsonError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryParams(v))
            .map_err(|e| ApiJsonError::BadRequest(e.body_text()))
    }
}

/// A JSON body; a bad one is a 400 saying what is wrong with it.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiJsonError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| JsonBody(v))
            .map_err(|e| ApiJsonError::BadRequest(e.body_text()))
    }
}
