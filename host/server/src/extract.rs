//! Extractors whose every refusal is a JSON [`ApiError`]: axum's own answer plain text
//! (an invalid UTF-8 path parameter, a body over the limit, malformed JSON or query).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON body of the wire contract.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = RawBody::from_request(request, state).await?.0;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(body_error)
    }
}

/// A JSON body that may be left out (empty or blank): then `T::default()`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = RawBody::from_request(request, state).await?.0;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJsonBody)
            .map_err(body_error)
    }
}

/// Malformed JSON, or JSON of the wrong shape (a missing or unknown field, a wrong type).
fn body_error(error: serde_json::Error) -> ApiError {
    match error.classify() {
        serde_json::error::Category::Data => {
            ApiError::bad_request(format!("the JSON body does not fit this route: {error}"))
        }
        _ => ApiError::bad_request(format!("malformed JSON body: {error}")),
    }
}

/// The body as bytes (a plugin upload).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(RawBody)
            .map_err(body_rejection)
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large()
    } else {
        ApiError::bad_request(format!("cannot read the body: {}", rejection.body_text()))
    }
}

/// Query parameters of the wire contract.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(Params)
            .map_err(|error| ApiError::bad_request(format!("bad query parameters: {error}")))
    }
}

/// Path parameters (percent-decoded, UTF-8).
#[derive(Debug)]
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathParams(value))
            .map_err(|rejection| {
                let status = rejection.status();
                let message = format!("bad path parameter: {}", rejection.body_text());
                if status.is_server_error() {
                    ApiError::internal(message)
                } else {
                    ApiError::bad_request(message)
                }
            })
    }
}
