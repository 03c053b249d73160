//! The `/v1` HTTP API (axum): health, model listing, anytime inference as JSON or as Server-Sent
//! Events, and the OpenAPI document with a page to browse it. The KServe v2 routes
//! ([`super::kserve::http`]) are merged in.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;

use super::body::{parse_json, read_body, require_json};
use super::error::ApiError;
use super::pipeline::{Answered, Call, Streamed};
use super::request::anytime_request;
use super::request_id::{header_id, with_request_id};
use super::schema::{
    ErrorResponse, Health, InferEventStream, InferRequest, InferResponse, ModelInfo, ModelList, ModelStats,
    PartialResponse,
};
use super::state::AppState;
use super::streaming::StreamEvent;
use crate::model::LoadedModel;
use crate::telemetry;

/// `/metrics` alone, for `--metrics-addr`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> Response {
    match state.render_metrics() {
        Some(text) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        None => {
            ApiError::RouteNotFound("/metrics (no metrics recorder in this process)".into()).into_response()
        }
    }
}

/// Every HTTP route; `/metrics` too unless it has its own address. `pages` are served beside the
/// API under the same limits (the OpenAPI document and its page: [`super::openapi::routes`], which
/// documents the handlers here and so is passed in rather than imported).
pub fn router(state: AppState, max_body_bytes: usize, with_metrics: bool, pages: Router<AppState>) -> Router {
    let routes = if with_metrics { Router::new().route("/metrics", get(metrics)) } else { Router::new() };
    routes
        .route("/health", get(health))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", get(get_model))
        .route("/v1/models/{name}/stats", get(model_stats))
        .route("/v1/models/{name}/infer", post(infer))
        .merge(pages)
        .merge(super::kserve::http::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), close_while_draining))
        .with_state(state)
}

/// While the server drains, every HTTP/1.1 answer says `Connection: close`, so that a client on a
/// kept-alive connection opens its next request elsewhere instead of racing the connection's close.
/// (HTTP/2 has no such header: its connections get GOAWAY when the transports close.)
async fn close_while_draining(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    let mut response = next.run(request).await;
    if http1 && state.is_draining() {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Liveness and readiness of the whole server.
#[utoipa::path(get, path = "/health", responses(
    (status = 200, description = "Serving", body = Health),
    (status = 503, description = "Loading, no model loaded, or draining for shutdown", body = Health)
))]
pub(super) async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (models, refused) = match state.registry() {
        Ok(registry) => (registry.names().into_iter().map(str::to_owned).collect(), registry.refused().len()),
        Err(_) => (Vec::new(), 0),
    };
    let word = if state.registry().is_err() {
        "loading"
    } else if state.is_leaving() {
        "draining"
    } else if models.is_empty() {
        "no_models"
    } else {
        "ok"
    };
    let status = if word == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Health { status: word, models, refused }))
}

/// Every model served, and those refused at load with the reason.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = ModelList)))]
pub(super) async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let registry = state.registry()?;
    Ok(Json(ModelList {
        models: registry.models().map(|m| ModelInfo::from(m.as_ref())).collect(),
        refused: registry.refused().to_vec(),
    }))
}

/// One model's contract: timesteps, labels, input kind and shape, defaults, held-out accuracy.
#[utoipa::path(get, path = "/v1/models/{name}", params(("name" = String, Path, example = "digits")), responses(
    (status = 200, body = ModelInfo), (status = 404, body = ErrorResponse)
))]
pub(super) async fn get_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelInfo>, ApiError> {
    Ok(Json(ModelInfo::from(state.model_info(&name)?.as_ref())))
}

/// The model's scheduler: configuration, gauges and counters.
#[utoipa::path(get, path = "/v1/models/{name}/stats", params(("name" = String, Path, example = "digits")), responses(
    (status = 200, body = ModelStats), (status = 404, body = ErrorResponse)
))]
pub(super) async fn model_stats(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelStats>, ApiError> {
    let model = state.model_info(&name)?;
    Ok(Json(ModelStats::new(&name, model.engine.config(), model.engine.stats())))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

/// Anytime inference. With `Accept: text/event-stream` the answer streams as Server-Sent Events:
/// a `partial` event after every timestep, then one `final` event (or an `error` event when the
/// request fails after the stream began), with keep-alive comments while it waits.
#[utoipa::path(
    post,
    path = "/v1/models/{name}/infer",
    params(
        ("name" = String, Path, example = "digits"),
        ("x-request-id" = Option<String>, Header, description = "Echoed back; made when absent")
    ),
    // The example is the first of scikit-learn's digits (a 0), which the shipped `digits` model takes.
    request_body(content = InferRequest, example = json!({
        "input": [[
            [0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
            [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
            [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]
        ]],
        "threshold": 0.9
    })),
    responses(
        (status = 200, description = "The answer as JSON; with `Accept: text/event-stream`, a stream of `partial` \
events and one `final` event (or an `error` event when the request fails after the stream began)", content(
            (InferResponse = "application/json"),
            (InferEventStream = "text/event-stream")
        )),
        (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 413, body = ErrorResponse), (status = 415, body = ErrorResponse),
        (status = 429, description = "The model's queue is full", body = ErrorResponse),
        (status = 503, body = ErrorResponse),
        (status = 504, description = "`deadline_exceeded`: the latency budget cannot cover `min_timesteps` at the \
measured step time (refused at admission, on both content types), or it ran out while the request waited for a \
slot (JSON only: an event stream has already answered 200 and sends an `error` event instead)", body = ErrorResponse)
    )
)]
pub(super) async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut call = Call::arrive("http", Some(&name), header_id(&headers), telemetry::http_parent(&headers));
    let decode = |call: &mut Call, model: &Arc<LoadedModel>| {
        require_json(&headers)?;
        let body = read_body(body)?;
        let spec = parse_json::<InferRequest>(&body)?.into_spec()?;
        Ok((anytime_request(model, spec, call.arrived())?, ()))
    };
    let response = if wants_event_stream(&headers) {
        match call.stream(&state, decode) {
            Ok(streamed) => sse_response(streamed, call.id().to_owned()),
            Err(error) => call.in_span(|| error.into_response()),
        }
    } else {
        match call.answer(&state, decode).await {
            Ok(Answered { model, answer, max_timesteps, .. }) => {
                Json(InferResponse::new(&model, call.id().to_owned(), answer, max_timesteps)).into_response()
            }
            Err(error) => call.in_span(|| error.into_response()),
        }
    };
    with_request_id(response, call.id())
}

fn sse_response(streamed: Streamed<()>, id: String) -> Response {
    let Streamed { model, max_timesteps, events, .. } = streamed;
    let stream = events.map(move |event| {
        let encoded = match event {
            StreamEvent::Partial(partial) => {
                Event::default().event("partial").json_data(PartialResponse::new(&model, partial))
            }
            StreamEvent::Final(answer) => {
                let response = InferResponse::new(&model, id.clone(), answer, max_timesteps);
                Event::default().event("final").json_data(response)
            }
            StreamEvent::Failed(error) => Event::default().event("error").json_data(error.body()),
        };
        Ok::<_, Infallible>(encoded.unwrap_or_else(|e| encoding_failed(&e.to_string())))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// Encoding our own types cannot fail in practice; if it ever does, the client still gets an
/// `error` event in the documented form, its message escaped as JSON.
fn encoding_failed(reason: &str) -> Event {
    Event::default().event("error").data(encoding_failed_body(reason))
}

fn encoding_failed_body(reason: &str) -> String {
    let body = ErrorResponse::new("internal", format!("encoding the event: {reason}"));
    serde_json::to_string(&body).unwrap_or_default()
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |media| media.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_that_cannot_be_encoded_becomes_an_error_event_with_escaped_json() {
        let reason = "a \"quoted\" reason\nwith a line break and a \\ backslash";
        let body: serde_json::Value =
            serde_json::from_str(&encoding_failed_body(reason)).expect("valid JSON");
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["message"], format!("encoding the event: {reason}"));
    }

    #[test]
    fn a_body_parses_plainly_and_a_bad_one_names_where() {
        let good: InferRequest =
            parse_json(br#"{"events": [[1, 2, 3, 1]], "shape": [4], "threshold": 0.5}"#).expect("parses");
        assert_eq!((good.shape, good.threshold), (Some(vec![4]), Some(0.5)));

        let message = |body: &[u8]| match parse_json::<InferRequest>(body) {
            Ok(_) => panic!("{} parsed", String::from_utf8_lossy(body)),
            Err(error) => (error.code(), error.to_string()),
        };
        let (code, text) = message(br#"{"input": [1], "shape": [4, "x"]}"#);
        assert!(code == "invalid_field" && text.contains("shape[1]: invalid type: string"), "{code}: {text}");
        let (code, text) = message(br#"{"input": [1], "thresold": 0.5}"#);
        assert!(code == "invalid_field" && text.contains("unknown field `thresold`"), "{code}: {text}");
        let (code, _) = message(br#"{"input": [1"#);
        assert_eq!(code, "malformed_json");
        let (code, _) = message(br#"{"input": [1]} trailing"#);
        assert_eq!(code, "malformed_json");
    }
}
