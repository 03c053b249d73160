//! JSON bodies of the `/v1` HTTP API.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::ExitReason;
use crate::model::{LoadedModel, ModelContract, RefusedModel};

/// `POST /v1/models/{name}/infer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// Nested arrays in the model's input shape, or a flat array together with `shape`.
    pub input: Value,
    /// The shape of a flat `input`.
    #[serde(default)]
    pub shape: Option<Vec<usize>>,
    /// Stop once the softmax confidence reaches this, in (0, 1]; `1.0` runs every allowed timestep.
    /// Defaults to the model's `default_threshold`.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// At most this many timesteps, 1..=T. Defaults to T.
    #[serde(default)]
    pub max_timesteps: Option<usize>,
    /// Also return the confidence after every timestep.
    #[serde(default)]
    pub return_confidences: bool,
}

#[derive(Debug, Serialize)]
pub struct InferResponse {
    pub model: String,
    pub label: String,
    pub class_index: usize,
    pub confidence: f64,
    pub probabilities: Vec<f64>,
    pub timesteps: usize,
    pub max_timesteps: usize,
    pub exit_reason: ExitReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidences: Option<Vec<f64>>,
    /// Time spent stepping the model, in milliseconds (queue excluded).
    pub compute_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ModelInfo {
    pub name: String,
    #[serde(flatten)]
    pub contract: ModelContract,
}

impl From<&LoadedModel> for ModelInfo {
    fn from(model: &LoadedModel) -> Self {
        Self {
            name: model.name.clone(),
            contract: (*model.contract).clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub models: Vec<ModelInfo>,
    /// Models found in the models directory but refused at load, with the reason.
    pub refused: Vec<RefusedModel>,
}

#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` when at least one model is loaded, `no_models` otherwise.
    pub status: &'static str,
    pub models: Vec<String>,
    pub refused: usize,
}
