//! Reading an HTTP request's body: its size limit and read errors, its content type, and JSON that
//! names the field it could not take. Shared by the `/v1` and KServe `/v2` routes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};

use super::error::ApiError;

pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(rejection.body_text())
        } else {
            ApiError::BadBody(rejection.body_text())
        }
    })
}

pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("<not text>"));
    match content_type {
        Some(value)
            if value.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) =>
        {
            Ok(())
        }
        Some(value) => Err(ApiError::UnsupportedMediaType(format!("{value:?}"))),
        None => Err(ApiError::UnsupportedMediaType("none (set Content-Type: application/json)".into())),
    }
}

/// Parses a JSON body, naming the path of a field that does not fit.
///
/// Tracking the path costs on every value (it was ~40% of the server's CPU for a request of 3,650
/// events), and only an error needs it: a body is parsed plainly first, and only one that fails is
/// parsed again with the path tracked, by the same deserializer, to say where.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if let Ok(request) = serde_json::from_slice(body) {
        return Ok(request);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let request: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::MalformedJson(inner.to_string())
        } else if path == "." {
            ApiError::InvalidField(inner.to_string())
        } else {
            ApiError::InvalidField(format!("{path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(request)
}
