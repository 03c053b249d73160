//! KServe v2 over HTTP/REST: health, server and model metadata, configuration, statistics and
//! inference, with the binary tensor data extension (`Inference-Header-Content-Length`). Errors
//! use the protocol's body, `{"error": "<message>"}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    answer_outputs, answer_parameters, check_version, config_parameters, decode_binary, element_size,
    input_metadata, output_metadata, request_spec, select_outputs, InputTensor, OutputData, OutputTensor,
    Parameter, EXTENSIONS,
};
use crate::api::body::read_body;
use crate::api::error::ApiError;
use crate::api::pipeline::{Answered, Call};
use crate::api::request::anytime_request;
use crate::api::request_id::{header_id, with_request_id};
use crate::api::state::{AppState, ServerState};
use crate::model::LoadedModel;
use crate::telemetry;

/// The binary tensor data extension's header: the length of the JSON part of the body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{name}/config", get(model_config))
        .route("/v2/models/{name}/versions/{version}/config", get(model_config_version))
        .route("/v2/models/stats", get(all_model_stats))
        .route("/v2/models/{name}/stats", get(model_stats))
        .route("/v2/models/{name}/versions/{version}/stats", get(model_stats_version))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route("/v2/repository/models/{name}/unload", post(repository_unload))
}

/// The model repository extension's index request (every field optional, the body too).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

/// A load or unload request: Triton's parameters (a config or files to use instead of the
/// directory's) are refused: models come from the models directory only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
}

/// An optional JSON body: empty means every field at its default.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// Every model of the models directory, with its state (`READY` or `UNAVAILABLE` and why).
async fn repository_index(State(state): State<AppState>, body: Bytes) -> V2Result<Json<Value>> {
    let request: IndexRequest = optional_body(&body)?;
    let entries = state.repository()?.index().await;
    let listed: Vec<Value> = entries
        .into_iter()
        .filter(|entry| !request.ready || entry.state == "READY")
        .map(|entry| {
            json!({
                "name": entry.name,
                "version": entry.version.map(|v| v.to_string()).unwrap_or_default(),
                "state": entry.state,
                "reason": entry.reason,
            })
        })
        .collect();
    Ok(Json(Value::Array(listed)))
}

/// Loads or reloads a model from its directory; answers once the new version serves.
async fn repository_load(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> V2Result<StatusCode> {
    let request: ChangeRequest = optional_body(&body)?;
    super::no_parameters(request.parameters.keys())?;
    state.repository_for_changes()?.load(&name).await.map_err(ApiError::from)?;
    Ok(StatusCode::OK)
}

/// Stops serving a model; requests in flight on it finish.
async fn repository_unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> V2Result<StatusCode> {
    let request: ChangeRequest = optional_body(&body)?;
    super::no_parameters(request.parameters.keys())?;
    state.repository_for_changes()?.unload(&name).await.map_err(ApiError::from)?;
    Ok(StatusCode::OK)
}

/// An error in the protocol's form.
struct V2Error(ApiError);

impl From<ApiError> for V2Error {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let status = self.0.status();
        self.0.log();
        (status, Json(json!({ "error": self.0.to_string() }))).into_response()
    }
}

type V2Result<T> = Result<T, V2Error>;

async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "spikeserve", "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS }))
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// Ready once the models have loaded (and not while draining). The protocol answers "not ready"
/// with a 4xx status.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ready = state.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    (status, Json(json!({ "ready": ready })))
}

async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> V2Result<(StatusCode, Json<Value>)> {
    state.model_info(&name)?;
    let ready = !state.is_leaving();
    let status = if ready { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    Ok((status, Json(json!({ "name": name, "ready": ready }))))
}

async fn model_ready_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> V2Result<(StatusCode, Json<Value>)> {
    check_version(&state, &name, &version)?;
    model_ready(state, Path(name)).await
}

fn tensors_json(tensors: Vec<(String, &'static str, Vec<i64>)>) -> Value {
    tensors
        .into_iter()
        .map(|(name, datatype, shape)| json!({ "name": name, "datatype": datatype, "shape": shape }))
        .collect()
}

async fn model_metadata(State(state): State<AppState>, Path(name): Path<String>) -> V2Result<Json<Value>> {
    let model = state.model_info(&name)?;
    Ok(Json(json!({
        "name": model.name,
        "versions": [model.version.to_string()],
        "platform": "spikeserve_step_onnx",
        "inputs": tensors_json(input_metadata(&model)),
        "outputs": tensors_json(output_metadata(&model)),
    })))
}

async fn model_metadata_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> V2Result<Json<Value>> {
    check_version(&state, &name, &version)?;
    model_metadata(state, Path(name)).await
}

/// Triton's model configuration, in its JSON form.
async fn model_config(State(state): State<AppState>, Path(name): Path<String>) -> V2Result<Json<Value>> {
    let model = state.model_info(&name)?;
    let dims = |(name, datatype, shape): (String, &str, Vec<i64>)| json!({ "name": name, "data_type": format!("TYPE_{}", datatype.replace("BYTES", "STRING")), "dims": shape });
    let parameters: BTreeMap<String, Value> =
        config_parameters(&model).into_iter().map(|(k, v)| (k, json!({ "string_value": v }))).collect();
    Ok(Json(json!({
        "name": model.name,
        "platform": "spikeserve_step_onnx",
        "backend": "spikeserve",
        "max_batch_size": 0,
        "input": input_metadata(&model).into_iter().map(dims).collect::<Vec<_>>(),
        "output": output_metadata(&model).into_iter().map(dims).collect::<Vec<_>>(),
        "model_transaction_policy": { "decoupled": true },
        "parameters": parameters,
    })))
}

async fn model_config_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> V2Result<Json<Value>> {
    check_version(&state, &name, &version)?;
    model_config(state, Path(name)).await
}

/// Triton's statistics extension: one model.
async fn model_stats(State(state): State<AppState>, Path(name): Path<String>) -> V2Result<Json<Value>> {
    let model = state.model_info(&name)?;
    Ok(Json(json!({ "model_stats": [statistics(&model)] })))
}

/// Triton's statistics extension: every model (`GET /v2/models/stats`, what Triton's clients ask
/// for when no model is named).
async fn all_model_stats(State(state): State<AppState>) -> V2Result<Json<Value>> {
    let registry = state.registry()?;
    let stats: Vec<Value> = registry.models().map(|model| statistics(model)).collect();
    Ok(Json(json!({ "model_stats": stats })))
}

fn statistics(model: &LoadedModel) -> Value {
    let s = model.engine.stats();
    let success = s.answered();
    let duration = |count: u64, ns: u64| json!({ "count": count, "ns": ns });
    json!({
        "name": model.name,
        "version": model.version.to_string(),
        "last_inference": s.last_answer_unix_ms,
        "inference_count": success,
        "execution_count": s.steps,
        "inference_stats": {
            "success": duration(success, s.queue_ns + s.compute_ns),
            "fail": duration(s.failed + s.refused, 0),
            "queue": duration(success, s.queue_ns),
            "compute_input": duration(success, 0),
            "compute_infer": duration(success, s.compute_ns),
            "compute_output": duration(success, 0),
        },
        "batch_stats": [],
    })
}

async fn model_stats_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> V2Result<Json<Value>> {
    check_version(&state, &name, &version)?;
    model_stats(state, Path(name)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Request {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    inputs: Vec<V2Input>,
    #[serde(default)]
    outputs: Vec<V2RequestedOutput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Input {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V2RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
}

async fn infer_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&state, &name, Some(&version), &headers, body).await
}

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&state, &name, None, &headers, body).await
}

/// Runs an inference request. The id may come from the body (`id`), else from `x-request-id`;
/// either way it is echoed in `x-request-id`, errors included.
async fn answer(
    state: &ServerState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut call =
        Call::arrive("kserve-http", Some(name), header_id(headers), telemetry::http_parent(headers));
    let decode = |call: &mut Call, model: &Arc<LoadedModel>| {
        if let Some(version) = version {
            check_version(state, name, version)?;
        }
        let body = read_body(body)?;
        let decoded = decode_body(headers, &body)?;
        call.adopt_id(decoded.id.as_deref());
        let DecodedBody { parameters, inputs, requested, binary_outputs, .. } = decoded;
        let spec = request_spec(&model.contract, inputs, &parameters)?;
        let binary_output =
            parameters.get("binary_data_output").and_then(Parameter::as_bool).unwrap_or(false);
        Ok((anytime_request(model, spec, call.arrived())?, (requested, binary_outputs, binary_output)))
    };
    let answered = call.answer(state, decode).await.and_then(|answered| {
        let Answered { model, answer, decoded: (requested, binary_outputs, binary_output), .. } = answered;
        let outputs =
            select_outputs(answer_outputs(&model, &answer), &requested).map_err(|e| call.failed(e))?;
        let binary_for = |o: &OutputTensor| binary_outputs.get(o.name).copied().unwrap_or(binary_output);
        Ok(response(&model, call.id(), outputs, &answer_parameters(&answer), binary_for))
    });
    let response = answered.unwrap_or_else(|error| call.in_span(|| V2Error(error).into_response()));
    with_request_id(response, call.id())
}

/// An inference request's body, decoded and checked as far as it can be without the model.
pub struct DecodedBody {
    pub id: Option<String>,
    pub parameters: BTreeMap<String, Parameter>,
    pub inputs: Vec<InputTensor>,
    /// The outputs asked for (all when empty).
    pub requested: Vec<String>,
    /// Outputs asked for in binary form (or explicitly not).
    pub binary_outputs: BTreeMap<String, bool>,
}

/// Decodes an inference request: JSON, or JSON followed by binary tensor data when the headers
/// carry `Inference-Header-Content-Length`. Pure, so that it is fuzzed as the server runs it.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<DecodedBody, ApiError> {
    let (request, binary) = split_body(headers, body)?;
    let parameters = parameters(&request.parameters, "parameters")?;
    let requested: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
    let mut binary_outputs = BTreeMap::new();
    for output in &request.outputs {
        if let Some(value) = output.parameters.get("binary_data") {
            let flag = value.as_bool().ok_or_else(|| {
                ApiError::InvalidField(format!(
                    "outputs[{}].parameters.binary_data: must be a boolean",
                    output.name
                ))
            })?;
            binary_outputs.insert(output.name.clone(), flag);
        }
    }
    select_outputs(Vec::new(), &requested)?;
    let inputs = inputs(request.inputs, binary)?;
    Ok(DecodedBody { id: request.id, parameters, inputs, requested, binary_outputs })
}

/// The JSON part and the binary part of the body.
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(V2Request, &'a [u8]), ApiError> {
    let header_length = headers
        .get(HEADER_LENGTH)
        .map(|v| {
            v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()).ok_or_else(|| {
                ApiError::InvalidField(format!("{HEADER_LENGTH}: must be a number of bytes, found {v:?}"))
            })
        })
        .transpose()?;
    let (json_part, binary) = match header_length {
        Some(length) if length > body.len() => {
            return Err(ApiError::InvalidField(format!(
                "{HEADER_LENGTH}: {length} is longer than the {}-byte body",
                body.len()
            )))
        }
        Some(length) => body.split_at(length),
        None => {
            if let Some(value) = headers.get(header::CONTENT_TYPE) {
                let text = value.to_str().unwrap_or("<not text>");
                if !text.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
                {
                    return Err(ApiError::UnsupportedMediaType(format!(
                        "{text:?} (send application/json, or binary data with {HEADER_LENGTH})"
                    )));
                }
            }
            (body, &body[body.len()..])
        }
    };
    Ok((crate::api::body::parse_json(json_part)?, binary))
}

fn parameters(raw: &BTreeMap<String, Value>, place: &str) -> Result<BTreeMap<String, Parameter>, ApiError> {
    raw.iter()
        .map(|(key, value)| {
            let parameter = match value {
                Value::Bool(b) => Parameter::Bool(*b),
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    Parameter::Int(n.as_i64().unwrap_or(i64::MAX))
                }
                Value::Number(n) => Parameter::Float(n.as_f64().unwrap_or(f64::NAN)),
                Value::String(s) => Parameter::Text(s.clone()),
                other => {
                    return Err(ApiError::InvalidField(format!(
                        "{place}.{key}: must be a boolean, number or string, found {other}"
                    )))
                }
            };
            Ok((key.clone(), parameter))
        })
        .collect()
}

/// Each input's values, from its JSON `data` or its slice of the binary part.
fn inputs(raw: Vec<V2Input>, mut binary: &[u8]) -> Result<Vec<InputTensor>, ApiError> {
    let mut inputs = Vec::with_capacity(raw.len());
    for input in raw {
        let place = format!("inputs[{}]", input.name);
        if element_size(&input.datatype).is_none() {
            return Err(ApiError::InvalidField(format!(
                "{place}: datatype {} is not supported; send FP32 (or INT64 for events)",
                input.datatype
            )));
        }
        let size = match input.parameters.get("binary_data_size") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ApiError::InvalidField(format!(
                    "{place}.parameters.binary_data_size: must be a byte count, found {v}"
                ))
            })? as usize),
        };
        let values = match (size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidField(format!(
                    "{place}: has both `data` and `binary_data_size`"
                )))
            }
            (None, None) => return Err(ApiError::InvalidField(format!("{place}: has no `data`"))),
            (None, Some(data)) => {
                let mut values = Vec::new();
                flatten(data, &place, &mut values)?;
                values
            }
            (Some(size), None) => {
                if size > binary.len() {
                    return Err(ApiError::InvalidField(format!(
                        "{place}.parameters.binary_data_size: {size} bytes, but only {} bytes of binary data are left",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                let expected = element_count(&input.shape)
                    .zip(element_size(&input.datatype))
                    .map(|(n, s)| n.saturating_mul(s));
                if expected.is_some_and(|e| e != size) {
                    return Err(ApiError::InvalidField(format!(
                        "{place}.parameters.binary_data_size: {size} bytes, but shape {:?} of {} needs {}",
                        input.shape,
                        input.datatype,
                        expected.unwrap_or(0)
                    )));
                }
                decode_binary(&place, &input.datatype, mine)?
            }
        };
        inputs.push(InputTensor { name: input.name, datatype: input.datatype, shape: input.shape, values });
    }
    if !binary.is_empty() {
        return Err(ApiError::InvalidField(format!(
            "binary data: {} bytes are left over after every input's binary_data_size",
            binary.len()
        )));
    }
    Ok(inputs)
}

fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)))
}

fn flatten(value: &Value, place: &str, out: &mut Vec<f64>) -> Result<(), ApiError> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, place, out)),
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN));
            Ok(())
        }
        Value::Bool(b) => {
            out.push(f64::from(u8::from(*b)));
            Ok(())
        }
        other => Err(ApiError::InvalidField(format!(
            "{place}.data[{}]: expected a number, found {}",
            out.len(),
            match other {
                Value::String(_) => "a string",
                Value::Object(_) => "an object",
                _ => "null",
            }
        ))),
    }
}

fn response(
    model: &LoadedModel,
    id: &str,
    outputs: Vec<OutputTensor>,
    answer_parameters: &[(&str, Parameter)],
    binary_for: impl Fn(&OutputTensor) -> bool,
) -> Response {
    let mut binary = Vec::new();
    let outputs: Vec<Value> = outputs
        .iter()
        .map(|o| {
            let mut entry = json!({ "name": o.name, "datatype": o.datatype(), "shape": o.shape });
            if binary_for(o) {
                let bytes = o.to_bytes();
                entry["parameters"] = json!({ "binary_data_size": bytes.len() });
                binary.extend(bytes);
            } else {
                entry["data"] = match &o.data {
                    OutputData::Fp32(v) => json!(v),
                    OutputData::Int64(v) => json!(v),
                    OutputData::Bytes(v) => json!(v),
                };
            }
            entry
        })
        .collect();
    let parameters: serde_json::Map<String, Value> =
        answer_parameters.iter().map(|(name, value)| ((*name).to_owned(), value.to_json())).collect();
    let body = json!({
        "model_name": model.name,
        "model_version": model.version.to_string(),
        "id": id,
        "parameters": parameters,
        "outputs": outputs,
    });
    if binary.is_empty() {
        Json(body).into_response()
    } else {
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        let json_length = bytes.len();
        bytes.extend(binary);
        let mut response = bytes.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        headers.insert(HEADER_LENGTH, HeaderValue::from(json_length));
        response
    }
}
