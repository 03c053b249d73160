//! The HTTP API (axum): health, model listing and anytime inference.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::error::ApiError;
use super::request::anytime_request;
use super::schema::{Health, InferRequest, InferResponse, ModelInfo, ModelList, ModelStats};
use crate::model::{LoadedModel, ModelRegistry};

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<ModelRegistry>,
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", get(get_model))
        .route("/v1/models/{name}/stats", get(model_stats))
        .route("/v1/models/{name}/infer", post(infer))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let models: Vec<String> = state.registry.names().into_iter().map(str::to_owned).collect();
    let (status, word) = if models.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "no_models")
    } else {
        (StatusCode::OK, "ok")
    };
    (status, Json(Health { status: word, models, refused: state.registry.refused().len() }))
}

async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        models: state.registry.models().map(|m| ModelInfo::from(m.as_ref())).collect(),
        refused: state.registry.refused().to_vec(),
    })
}

async fn get_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelInfo>, ApiError> {
    Ok(Json(ModelInfo::from(lookup(&state, &name)?.as_ref())))
}

async fn model_stats(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelStats>, ApiError> {
    let model = lookup(&state, &name)?;
    Ok(Json(ModelStats::new(&name, model.engine.config(), model.engine.stats())))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

fn lookup<'a>(state: &'a AppState, name: &str) -> Result<&'a Arc<LoadedModel>, ApiError> {
    state.registry.get(name).ok_or_else(|| ApiError::ModelNotFound {
        name: name.to_owned(),
        loaded: state.registry.names().join(", "),
    })
}

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<InferResponse>, ApiError> {
    let started = Instant::now();
    let model = lookup(&state, &name)?;
    require_json(&headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(rejection.body_text())
        } else {
            ApiError::BadBody(rejection.body_text())
        }
    })?;
    let request = parse_body(&body)?;
    let anytime = anytime_request(model, request, started)?;
    let max_timesteps = anytime.policy.max_timesteps;
    let answer = model.engine.infer(anytime).await?;
    tracing::debug!(
        model = %name,
        timesteps = answer.timesteps,
        exit_reason = ?answer.exit_reason,
        elapsed_us = started.elapsed().as_micros() as u64,
        "answered"
    );
    let label = model.contract.labels.get(answer.class_index).cloned().unwrap_or_default();
    Ok(Json(InferResponse {
        model: name,
        label,
        class_index: answer.class_index,
        confidence: answer.confidence,
        uncertainty: answer.uncertainty,
        probabilities: answer.probabilities,
        timesteps: answer.timesteps,
        max_timesteps,
        exit_reason: answer.exit_reason,
        synaptic_ops: answer.synaptic_ops,
        confidences: answer.confidences,
        compute_ms: answer.compute_time.as_secs_f64() * 1e3,
        queue_ms: answer.queue_time.as_secs_f64() * 1e3,
    }))
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
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

fn parse_body(body: &[u8]) -> Result<InferRequest, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let request: InferRequest = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
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
