//! One error type for every API, and its mapping to HTTP status codes, in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::engine::EngineError;
use crate::input::{EventError, InputError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("model \"{name}\" is not loaded; loaded models: {loaded}")]
    ModelNotFound { name: String, loaded: String },
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidField(String),
    #[error(transparent)]
    InvalidInput(#[from] InputError),
    #[error(transparent)]
    InvalidEvents(#[from] EventError),
    #[error("content type must be application/json, found {0}")]
    UnsupportedMediaType(String),
    #[error("request body is too large: {0}")]
    PayloadTooLarge(String),
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ModelNotFound { .. } | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::MalformedJson(_)
            | Self::InvalidField(_)
            | Self::InvalidInput(_)
            | Self::InvalidEvents(_)
            | Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Engine(EngineError::Overloaded(_)) => StatusCode::TOO_MANY_REQUESTS,
            Self::Engine(EngineError::Stopped) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Engine(EngineError::DeadlineBeforeFirstStep { .. }) => StatusCode::GATEWAY_TIMEOUT,
            Self::Engine(EngineError::NoFrames) => StatusCode::BAD_REQUEST,
            Self::Engine(EngineError::Step(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ModelNotFound { .. } => "model_not_found",
            Self::RouteNotFound(_) => "not_found",
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidField(_) => "invalid_field",
            Self::InvalidInput(_) => "invalid_input",
            Self::InvalidEvents(_) => "invalid_events",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::BadBody(_) => "bad_body",
            Self::Engine(EngineError::Overloaded(_)) => "overloaded",
            Self::Engine(EngineError::Stopped) => "unavailable",
            Self::Engine(EngineError::DeadlineBeforeFirstStep { .. }) => "deadline_exceeded",
            Self::Engine(EngineError::NoFrames) => "no_frames",
            Self::Engine(EngineError::Step(_)) => "inference_failed",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code(), message: self.to_string() } };
        (status, Json(body)).into_response()
    }
}
