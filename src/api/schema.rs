//! JSON bodies of the `/v1` HTTP API.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::engine::{AnytimeAnswer, EngineConfig, ExitReason, Partial, PolicyKind, StatsSnapshot};
use crate::input::JsonEvents;
use crate::model::exit_policies::PoliciesSummary;
use crate::model::{LoadedModel, ModelContract, RefusedModel};

/// `POST /v1/models/{name}/infer`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// Nested arrays in the model's input shape, or a flat array together with `shape`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<NestedNumbers>>)]
    pub input: Option<Value>,
    /// For `events` models instead of `input`: raw events `[[x, y, t_us, p], ...]`, binned by the
    /// server exactly as the model was trained.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Vec<i64>>>)]
    pub events: Option<JsonEvents>,
    /// The shape of a flat `input`.
    #[serde(default)]
    pub shape: Option<Vec<usize>>,
    /// Stop once the softmax confidence reaches this, in (0, 1]; `1.0` runs every allowed timestep.
    /// Defaults to the model's `default_threshold`.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Never stop on confidence before this many timesteps, 1..=max_timesteps. Defaults to 1.
    #[serde(default)]
    pub min_timesteps: Option<usize>,
    /// At most this many timesteps, 1..=T. Defaults to T.
    #[serde(default)]
    pub max_timesteps: Option<usize>,
    /// Latency budget in milliseconds, counted from arrival: when it runs out the answer is the
    /// best one so far (exit reason `deadline`), checked every timestep.
    #[serde(default)]
    pub latency_budget_ms: Option<f64>,
    /// Ensembles: stop on confidence only when the members' variance on the chosen class is at
    /// most this as well. Defaults to the model's `default_max_variance`, if any.
    #[serde(default)]
    pub max_variance: Option<f64>,
    /// Priority class, 0 to 3 (default 1): higher classes get a batch slot first and, when the
    /// queue is full, are refused last. Within a class, the earliest deadline goes first.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3)]
    pub priority: Option<u64>,
    /// Instead of a threshold: the accuracy you accept to lose against the model at T, in
    /// percentage points. The server uses the threshold calibrated for the largest budget in the
    /// model's table (`calibration` in `/v1/models/{model}`) that does not exceed this one.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub max_accuracy_drop: Option<f64>,
    /// The exit policy: `cutoff`, `schedule` or `learned` (`exit_policies` in `/v1/models/{model}`
    /// lists what the model ships). Defaults to the model's choice for `max_accuracy_drop`; with no
    /// budget, a named policy runs at 0.5 points. Only the cutoff takes a `threshold`.
    #[serde(default)]
    pub policy: Option<String>,
    /// With `max_accuracy_drop`: the probability (e.g. 0.9), over the calibration data, with which the
    /// budget holds; the server picks a guaranteed calibration row of the smallest level at or above it.
    #[serde(default)]
    pub guarantee: Option<f64>,
    /// Also return the confidence after every timestep.
    #[serde(default)]
    pub return_confidences: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model: String,
    /// The request's id: the client's `x-request-id` when given, else one made by the server.
    pub request_id: String,
    pub label: String,
    pub class_index: usize,
    pub confidence: f64,
    /// Ensembles only: variance across members of the chosen class's probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<f64>,
    pub probabilities: Vec<f64>,
    pub timesteps: usize,
    pub max_timesteps: usize,
    pub exit_reason: ExitReason,
    /// The confidence threshold the request ran with.
    pub threshold: f64,
    /// The calibration table's budget (percentage points) whose threshold was used, when the
    /// request gave `max_accuracy_drop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_accuracy_drop: Option<f64>,
    /// The exit policy that ran.
    pub policy: PolicyKind,
    /// The guarantee level of the calibration row used, when it was a guaranteed one (else the row,
    /// if any, was point-calibrated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guarantee: Option<f64>,
    /// Synaptic operations spent on the request, when the model reports them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synaptic_ops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidences: Option<Vec<f64>>,
    /// Time from taking a batch slot to the answer, in milliseconds.
    pub compute_ms: f64,
    /// Time spent waiting for a batch slot, in milliseconds.
    pub queue_ms: f64,
}

impl InferResponse {
    pub fn new(model: &LoadedModel, request_id: String, answer: AnytimeAnswer, max_timesteps: usize) -> Self {
        Self {
            model: model.name.clone(),
            request_id,
            label: model.contract.label(answer.class_index),
            class_index: answer.class_index,
            confidence: answer.confidence,
            uncertainty: answer.uncertainty,
            probabilities: answer.probabilities,
            timesteps: answer.timesteps,
            max_timesteps,
            exit_reason: answer.exit_reason,
            threshold: answer.threshold,
            max_accuracy_drop: answer.max_accuracy_drop,
            policy: answer.policy,
            guarantee: answer.guarantee,
            synaptic_ops: answer.synaptic_ops,
            confidences: answer.confidences,
            compute_ms: answer.compute_time.as_secs_f64() * 1e3,
            queue_ms: answer.queue_time.as_secs_f64() * 1e3,
        }
    }
}

/// One Server-Sent Event `partial`: the prediction after a timestep.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartialResponse {
    pub timestep: usize,
    pub label: String,
    pub class_index: usize,
    pub confidence: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<f64>,
    pub probabilities: Vec<f64>,
}

impl PartialResponse {
    pub fn new(model: &LoadedModel, partial: Partial) -> Self {
        Self {
            timestep: partial.timestep,
            label: model.contract.label(partial.class_index),
            class_index: partial.class_index,
            confidence: partial.confidence,
            uncertainty: partial.uncertainty,
            probabilities: partial.probabilities,
        }
    }
}

/// `{"error": {"code", "message"}}`, the body of every error (and the SSE `error` event).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable name: `invalid_input`, `overloaded`, `model_not_found`, ...
    /// (every code: `docs/errors.md`).
    pub code: String,
    pub message: String,
}

impl ErrorResponse {
    pub fn new(code: &str, message: String) -> Self {
        Self { error: ErrorDetail { code: code.to_owned(), message } }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    pub name: String,
    /// 1 when first loaded, one more with every reload (see the repository API).
    pub version: u64,
    #[serde(flatten)]
    pub contract: ModelContract,
    /// The exit policies the model ships (`exit-policies.json`): what `policy`, `max_accuracy_drop`
    /// and `guarantee` can ask for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_policies: Option<PoliciesSummary>,
}

impl From<&LoadedModel> for ModelInfo {
    fn from(model: &LoadedModel) -> Self {
        Self {
            name: model.name.clone(),
            version: model.version,
            contract: (*model.contract).clone(),
            exit_policies: model.exit_policies.as_ref().map(|p| p.summary.clone()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelInfo>,
    /// Models found in the models directory but refused at load, with the reason.
    pub refused: Vec<RefusedModel>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when at least one model is loaded; `loading`, `no_models` or `draining` otherwise.
    pub status: &'static str,
    pub models: Vec<String>,
    pub refused: usize,
}

/// `GET /v1/models/{name}/stats`: the scheduler's configuration, gauges and counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelStats {
    pub name: String,
    pub max_batch: usize,
    pub batch_wait_us: u64,
    pub queue_capacity: usize,
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

impl ModelStats {
    pub fn new(name: &str, config: EngineConfig, stats: StatsSnapshot) -> Self {
        Self {
            name: name.to_owned(),
            max_batch: config.max_batch,
            batch_wait_us: config.batch_wait.as_micros() as u64,
            queue_capacity: config.queue_capacity,
            stats,
        }
    }
}

// Schemas that serde's derive cannot express, written by hand for the OpenAPI document.

/// A number, or an array of these: a tensor written as nested JSON arrays in the model's input
/// shape (a flat array of numbers too, with `shape`).
pub struct NestedNumbers;

impl PartialSchema for NestedNumbers {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ArrayBuilder::new().items(Ref::from_schema_name("NestedNumbers")))
            .description(Some("A number, or an array of numbers or of such arrays."))
            .into()
    }
}

impl ToSchema for NestedNumbers {}

/// One Server-Sent Event of `POST /v1/models/{name}/infer` with `Accept: text/event-stream`, as
/// its `event:` name and the JSON of its `data:` line.
pub struct InferEventStream;

impl PartialSchema for InferEventStream {
    fn schema() -> RefOr<Schema> {
        let event = |name: &str, data: &str, what: &str| {
            ObjectBuilder::new()
                .title(Some(name))
                .description(Some(what))
                .property("event", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([name])))
                .property("data", Ref::from_schema_name(data))
                .required("event")
                .required("data")
        };
        OneOfBuilder::new()
            .item(event("partial", "PartialResponse", "After every timestep: the prediction so far."))
            .item(event("final", "InferResponse", "Once, last: the answer, as the JSON response would be."))
            .item(event(
                "error",
                "ErrorResponse",
                "Instead of `final` when the request fails after the stream began, e.g. \
                 `deadline_exceeded` when the latency budget runs out before the first timestep.",
            ))
            .description(Some(
                "The stream's events, each written as `event: <name>` and `data: <JSON>`; comment lines \
                 keep the connection alive while the request waits.",
            ))
            .into()
    }
}

impl ToSchema for InferEventStream {}
