//! One error type for every door, and its mapping to HTTP status codes and gRPC codes, in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::schema::ErrorResponse;
use crate::engine::EngineError;
use crate::input::{EventError, InputError};
use crate::model::RepositoryError;

/// The metrics' model label for a request whose model is unknown or was never named.
pub const UNKNOWN_MODEL: &str = "_unknown";

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
    #[error("session: no message for {seconds} s; send the next frame sooner or raise --session-idle-timeout-secs")]
    SessionIdle { seconds: f64 },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("this server takes no model changes through its API (--repository-read-only); change the models directory instead")]
    RepositoryReadOnly,
    #[error("the server is still loading its models")]
    NotReady,
    #[error("the server is shutting down and takes no new requests")]
    ShuttingDown,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
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
            Self::SessionIdle { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::RepositoryReadOnly => StatusCode::FORBIDDEN,
            Self::NotReady | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Engine(EngineError::Overloaded(_) | EngineError::Displaced { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Engine(EngineError::Stopped | EngineError::ShutDown) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Engine(
                EngineError::DeadlineBeforeFirstStep { .. } | EngineError::BudgetTooShort { .. },
            ) => StatusCode::GATEWAY_TIMEOUT,
            Self::Engine(EngineError::NoFrames) => StatusCode::BAD_REQUEST,
            Self::Engine(EngineError::Step(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Repository(RepositoryError::BadName(_) | RepositoryError::Refused { .. }) => {
                StatusCode::BAD_REQUEST
            }
            Self::Repository(RepositoryError::NotInDirectory { .. } | RepositoryError::NotLoaded(_)) => {
                StatusCode::NOT_FOUND
            }
            Self::Repository(RepositoryError::Interrupted(_)) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::SessionIdle { .. } => "session_idle",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::RepositoryReadOnly => "repository_read_only",
            Self::NotReady => "not_ready",
            Self::ShuttingDown => "shutting_down",
            Self::Engine(error) => error.code(),
            Self::Repository(RepositoryError::BadName(_)) => "invalid_field",
            Self::Repository(RepositoryError::NotInDirectory { .. } | RepositoryError::NotLoaded(_)) => {
                "model_not_found"
            }
            Self::Repository(RepositoryError::Refused { .. }) => "model_refused",
            Self::Repository(RepositoryError::Interrupted(_)) => "internal",
        }
    }

    /// The gRPC status code for the same error.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::ModelNotFound { .. } | Self::RouteNotFound(_) => Code::NotFound,
            Self::MalformedJson(_)
            | Self::InvalidField(_)
            | Self::InvalidInput(_)
            | Self::InvalidEvents(_)
            | Self::BadBody(_)
            | Self::UnsupportedMediaType(_)
            | Self::Engine(EngineError::NoFrames) => Code::InvalidArgument,
            Self::PayloadTooLarge(_)
            | Self::Engine(EngineError::Overloaded(_) | EngineError::Displaced { .. }) => {
                Code::ResourceExhausted
            }
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::RepositoryReadOnly => Code::PermissionDenied,
            Self::NotReady
            | Self::ShuttingDown
            | Self::Engine(EngineError::Stopped | EngineError::ShutDown) => Code::Unavailable,
            Self::Engine(
                EngineError::DeadlineBeforeFirstStep { .. } | EngineError::BudgetTooShort { .. },
            )
            | Self::SessionIdle { .. } => Code::DeadlineExceeded,
            Self::Engine(EngineError::Step(_)) | Self::Repository(RepositoryError::Interrupted(_)) => {
                Code::Internal
            }
            Self::Repository(RepositoryError::BadName(_)) => Code::InvalidArgument,
            Self::Repository(RepositoryError::NotInDirectory { .. } | RepositoryError::NotLoaded(_)) => {
                Code::NotFound
            }
            Self::Repository(RepositoryError::Refused { .. }) => Code::FailedPrecondition,
        }
    }

    /// Counts this failure of a request for `model` in the metrics, unless the engine already did
    /// (its own errors are counted where they happen). Unknown model names share one label, so
    /// that clients cannot grow the metrics without bound; so does a call that failed before it
    /// named a model (an empty name: a session whose `start` never came).
    pub fn count_for(&self, model: &str) {
        if matches!(self, Self::Engine(_)) {
            return;
        }
        // A name no model answers to (or one that cannot be checked yet: not ready) is not a label.
        let model = if model.is_empty() || matches!(self, Self::ModelNotFound { .. } | Self::NotReady) {
            UNKNOWN_MODEL
        } else {
            model
        };
        crate::metrics::failed(model, self.code());
    }

    /// The JSON error body of the `/v1` routes and SSE `error` events: `{"error": {"code", "message"}}`.
    pub fn body(&self) -> ErrorResponse {
        ErrorResponse::new(self.code(), self.to_string())
    }

    /// Logs the refusal: an error line for server failures, a debug line for the rest.
    pub(crate) fn log(&self) {
        // A budget that ran out in the queue is the client's choice of budget (or overload),
        // not a server failure: it is counted and answered, not logged as an error.
        let expected = matches!(
            self,
            Self::NotReady
                | Self::ShuttingDown
                | Self::Engine(
                    EngineError::DeadlineBeforeFirstStep { .. }
                        | EngineError::BudgetTooShort { .. }
                        | EngineError::ShutDown
                )
        );
        if self.status().is_server_error() && !expected {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, code = self.code(), "request refused");
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        error.log();
        let mut status = tonic::Status::new(error.grpc_code(), error.to_string());
        if let Ok(code) = error.code().parse() {
            status.metadata_mut().insert("spikeserve-error-code", code);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log();
        (status, Json(self.body())).into_response()
    }
}
