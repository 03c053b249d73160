//! The KServe v2 / Open Inference Protocol, with Triton's extensions: what the HTTP and gRPC forms
//! share. Requests become the same [`RequestSpec`] as every other door; answers become the same
//! named output tensors.
//!
//! Inputs: `x` (FP32, or any numeric type), the model's frame for static models or `[n, *frame]`
//! frames, optionally with a leading batch dimension of 1; or, for event models, `events` (INT64
//! `[N, 4]` rows of x, y, t_us, p, or `[1, N, 4]` with a batch dimension, as a batching server such as
//! Triton takes them). Parameters: `threshold`, `min_timesteps`, `max_timesteps`,
//! `max_variance`, `priority` (0 to 3, higher first), `max_accuracy_drop` (percentage points, instead of
//! `threshold`: picks the model's calibrated threshold) and `timeout` (microseconds) as the latency budget.
//! Answers carry the response parameters `threshold` (what the request ran with) and, for a budget,
//! `max_accuracy_drop` (the calibration row used).
//!
//! Outputs: `probabilities` (FP32 `[1, classes]`), `class_index` (INT64 `[1]`), `label` (BYTES
//! `[1]`), `confidence` (FP32 `[1]`), `timesteps` (INT64 `[1]`), `exit_reason` (BYTES `[1]`), and
//! `uncertainty` (FP32 `[1]`) for ensembles.

pub mod grpc;
pub mod http;

use std::collections::BTreeMap;

use super::error::ApiError;
use super::request::{PolicyParams, RequestInput, RequestSpec};
use super::state::ServerState;
use crate::engine::{AnytimeAnswer, Partial};
use crate::input::{DenseTensor, EventError};
use crate::model::contract::INPUT_NAME;
use crate::model::{InputKind, LoadedModel, ModelContract};

/// The extensions implemented, as listed by server metadata.
pub const EXTENSIONS: &[&str] =
    &["binary_tensor_data", "parameters", "model_configuration", "statistics", "model_repository"];
pub const EVENTS_INPUT: &str = "events";
pub const OUTPUTS: &[&str] =
    &["probabilities", "class_index", "label", "confidence", "timesteps", "exit_reason", "uncertainty"];

/// `version` must be the version serving now (the empty version means "the latest"). Versions
/// count up from 1 with every reload; requests in flight on an older one finish on it, but new
/// requests cannot ask for it.
pub fn check_version(state: &ServerState, name: &str, version: &str) -> Result<(), ApiError> {
    if version.is_empty() {
        return Ok(());
    }
    let serving = state.model_info(name)?.version;
    if version == serving.to_string() {
        Ok(())
    } else {
        Err(ApiError::ModelNotFound {
            name: format!("{name}/versions/{version}"),
            loaded: format!("{name} has version {serving} only"),
        })
    }
}

/// A tensor's values as numbers, whatever its wire datatype (f64 holds FP32 and the integers
/// a request can meaningfully carry exactly).
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub values: Vec<f64>,
}

/// A request parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Parameter {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Parameter {
    fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(v) => Some(*v as f64),
            Self::Float(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(v) => Some(*v),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Bool(v) => serde_json::json!(v),
            Self::Int(v) => serde_json::json!(v),
            Self::Float(v) => serde_json::json!(v),
            Self::Text(v) => serde_json::json!(v),
        }
    }
}

/// Bytes per element of a datatype, for binary data; `None` for BYTES and unknown types.
pub fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

/// Decodes little-endian binary tensor data of `datatype`.
pub fn decode_binary(name: &str, datatype: &str, bytes: &[u8]) -> Result<Vec<f64>, ApiError> {
    fn chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        bytes.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }
    let size = element_size(datatype).ok_or_else(|| {
        ApiError::InvalidField(format!("{name}: datatype {datatype} cannot be sent as binary data"))
    })?;
    if !bytes.len().is_multiple_of(size) {
        return Err(ApiError::InvalidField(format!(
            "{name}: {} bytes of binary data is not a whole number of {datatype} elements ({size} bytes each)",
            bytes.len()
        )));
    }
    Ok(match datatype {
        "FP32" => chunks::<4>(bytes).map(|b| f64::from(f32::from_le_bytes(b))).collect(),
        "FP64" => chunks::<8>(bytes).map(f64::from_le_bytes).collect(),
        "INT64" => chunks::<8>(bytes).map(|b| i64::from_le_bytes(b) as f64).collect(),
        "INT32" => chunks::<4>(bytes).map(|b| f64::from(i32::from_le_bytes(b))).collect(),
        "UINT8" => bytes.iter().map(|&b| f64::from(b)).collect(),
        "INT8" => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
        "UINT16" => chunks::<2>(bytes).map(|b| f64::from(u16::from_le_bytes(b))).collect(),
        "INT16" => chunks::<2>(bytes).map(|b| f64::from(i16::from_le_bytes(b))).collect(),
        "UINT32" => chunks::<4>(bytes).map(|b| f64::from(u32::from_le_bytes(b))).collect(),
        "UINT64" => chunks::<8>(bytes).map(|b| u64::from_le_bytes(b) as f64).collect(),
        other => {
            return Err(ApiError::InvalidField(format!(
                "{name}: datatype {other} is not supported; send FP32"
            )))
        }
    })
}

/// Turns the protocol's inputs and parameters into the request every door runs.
pub fn request_spec(
    contract: &ModelContract,
    inputs: Vec<InputTensor>,
    parameters: &BTreeMap<String, Parameter>,
) -> Result<RequestSpec, ApiError> {
    let mut inputs = inputs.into_iter();
    let (Some(input), None) = (inputs.next(), inputs.next()) else {
        return Err(ApiError::InvalidField(format!(
            "inputs: exactly one input is taken (\"{INPUT_NAME}\"{}), found {}",
            if contract.events.is_some() { " or \"events\"" } else { "" },
            inputs.len() + 2
        )));
    };
    let shape = dims(&input)?;
    let input = match input.name.as_str() {
        INPUT_NAME => {
            numeric(&input)?;
            check_count(
                &input,
                shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(usize::MAX),
            )?;
            let shape = strip_batch(shape, contract);
            let data: Vec<f32> = input.values.iter().map(|&v| v as f32).collect();
            RequestInput::Tensor(DenseTensor::from_parts(INPUT_NAME, shape, data)?)
        }
        EVENTS_INPUT => {
            if !matches!(input.datatype.as_str(), "INT64" | "INT32" | "UINT32" | "UINT64") {
                return Err(ApiError::InvalidField(format!(
                    "inputs[events]: datatype must be INT64, found {}",
                    input.datatype
                )));
            }
            // A leading batch dimension of 1 (`[1, N, 4]`) is dropped, as for `x`.
            let shape = if shape.len() == 3 && shape[0] == 1 { shape[1..].to_vec() } else { shape };
            if shape.len() != 2 || shape[1] != 4 {
                return Err(ApiError::InvalidField(format!(
                    "inputs[events]: shape must be [N, 4] (x, y, t_us, p) or [1, N, 4], found {shape:?}"
                )));
            }
            check_count(&input, shape[0].saturating_mul(4))?;
            // Events are integers: a fraction is refused, not cut (as on `/v1`).
            if let Some(at) = input.values.iter().position(|v| !v.is_finite() || v.fract() != 0.0) {
                return Err(EventError::NotAnEvent { index: at / 4 }.into());
            }
            RequestInput::Events(
                input
                    .values
                    .chunks_exact(4)
                    .map(|e| [e[0] as i64, e[1] as i64, e[2] as i64, e[3] as i64])
                    .collect(),
            )
        }
        other => {
            return Err(ApiError::InvalidField(format!(
                "inputs: unknown input \"{other}\"; the model takes \"{INPUT_NAME}\"{}",
                if contract.events.is_some() { " or \"events\"" } else { "" }
            )))
        }
    };
    Ok(RequestSpec { input, policy: policy_params(parameters)?, return_confidences: false })
}

fn dims(input: &InputTensor) -> Result<Vec<usize>, ApiError> {
    input.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<_, _>>().map_err(|_| {
        ApiError::InvalidField(format!(
            "inputs[{}]: shape {:?} has a negative dimension",
            input.name, input.shape
        ))
    })
}

fn numeric(input: &InputTensor) -> Result<(), ApiError> {
    match input.datatype.as_str() {
        "FP32" | "FP64" | "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
            Ok(())
        }
        other => Err(ApiError::InvalidField(format!(
            "inputs[{}]: datatype must be FP32 (or another numeric type), found {other}",
            input.name
        ))),
    }
}

fn check_count(input: &InputTensor, expected: usize) -> Result<(), ApiError> {
    if input.values.len() == expected {
        Ok(())
    } else {
        Err(ApiError::InvalidField(format!(
            "inputs[{}]: shape {:?} holds {expected} elements but {} were sent",
            input.name,
            input.shape,
            input.values.len()
        )))
    }
}

/// Drops a leading batch dimension of 1 that KServe clients add (`[1, *frame]` for a static model,
/// `[1, n, *frame]` for frames).
fn strip_batch(shape: Vec<usize>, contract: &ModelContract) -> Vec<usize> {
    let rank = contract.frame_shape.len() + usize::from(contract.input_kind != InputKind::Static);
    if shape.len() == rank + 1 && shape.first() == Some(&1) {
        shape[1..].to_vec()
    } else {
        shape
    }
}

fn policy_params(parameters: &BTreeMap<String, Parameter>) -> Result<PolicyParams, ApiError> {
    let number = |key: &str| -> Result<Option<f64>, ApiError> {
        parameters
            .get(key)
            .map(|p| {
                p.as_f64().ok_or_else(|| {
                    ApiError::InvalidField(format!("parameters.{key}: must be a number, found {p:?}"))
                })
            })
            .transpose()
    };
    let count = |key: &str| -> Result<Option<usize>, ApiError> {
        match number(key)? {
            None => Ok(None),
            Some(v) if v >= 0.0 && v.fract() == 0.0 => Ok(Some(v as usize)),
            Some(v) => {
                Err(ApiError::InvalidField(format!("parameters.{key}: must be a whole number, found {v}")))
            }
        }
    };
    let timeout_us = number("timeout")?;
    if let Some(us) = timeout_us.filter(|us| !(us.is_finite() && *us > 0.0)) {
        return Err(ApiError::InvalidField(format!(
            "parameters.timeout: must be a positive number of microseconds, found {us}"
        )));
    }
    Ok(PolicyParams {
        threshold: number("threshold")?,
        min_timesteps: count("min_timesteps")?,
        max_timesteps: count("max_timesteps")?,
        latency_budget_ms: timeout_us.map(|us| us / 1e3),
        max_variance: number("max_variance")?,
        priority: count("priority")?.map(|p| p as u64),
        max_accuracy_drop: number("max_accuracy_drop")?,
        policy: match parameters.get("policy") {
            None => None,
            Some(Parameter::Text(name)) => Some(name.clone()),
            Some(other) => {
                return Err(ApiError::InvalidField(format!(
                    "parameters.policy: must be a string (cutoff, schedule or learned), found {other:?}"
                )))
            }
        },
        guarantee: number("guarantee")?,
    })
}

/// An output tensor's values.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    Fp32(Vec<f32>),
    Int64(Vec<i64>),
    Bytes(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: &'static str,
    pub shape: Vec<i64>,
    pub data: OutputData,
}

impl OutputTensor {
    pub fn datatype(&self) -> &'static str {
        match self.data {
            OutputData::Fp32(_) => "FP32",
            OutputData::Int64(_) => "INT64",
            OutputData::Bytes(_) => "BYTES",
        }
    }

    /// Little-endian binary data; BYTES elements are each prefixed by their length (u32).
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.data {
            OutputData::Fp32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            OutputData::Bytes(v) => {
                v.iter().flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes())).collect()
            }
        }
    }
}

fn scalar(name: &'static str, data: OutputData) -> OutputTensor {
    OutputTensor { name, shape: vec![1], data }
}

/// The answer as named outputs, in [`OUTPUTS`] order.
pub fn answer_outputs(model: &LoadedModel, answer: &AnytimeAnswer) -> Vec<OutputTensor> {
    let mut outputs = prediction_outputs(
        model,
        answer.class_index,
        answer.confidence,
        &answer.probabilities,
        answer.timesteps,
        answer.uncertainty,
    );
    outputs.insert(5, scalar("exit_reason", OutputData::Bytes(vec![answer.exit_reason.as_str().to_owned()])));
    outputs
}

/// The answer's response-level parameters: the threshold the request ran with, the exit policy
/// and, when it gave a budget, the calibration row's `max_accuracy_drop` (and `guarantee` level).
pub fn answer_parameters(answer: &AnytimeAnswer) -> Vec<(&'static str, Parameter)> {
    let mut parameters = vec![
        ("threshold", Parameter::Float(answer.threshold)),
        ("policy", Parameter::Text(answer.policy.as_str().to_owned())),
    ];
    if let Some(budget) = answer.max_accuracy_drop {
        parameters.push(("max_accuracy_drop", Parameter::Float(budget)));
    }
    if let Some(level) = answer.guarantee {
        parameters.push(("guarantee", Parameter::Float(level)));
    }
    parameters
}

/// A partial prediction (one timestep) as named outputs; like the answer without `exit_reason`.
pub fn partial_outputs(model: &LoadedModel, partial: &Partial) -> Vec<OutputTensor> {
    prediction_outputs(
        model,
        partial.class_index,
        partial.confidence,
        &partial.probabilities,
        partial.timestep,
        partial.uncertainty,
    )
}

fn prediction_outputs(
    model: &LoadedModel,
    class_index: usize,
    confidence: f64,
    probabilities: &[f64],
    timesteps: usize,
    uncertainty: Option<f64>,
) -> Vec<OutputTensor> {
    let mut outputs = vec![
        OutputTensor {
            name: "probabilities",
            shape: vec![1, probabilities.len() as i64],
            data: OutputData::Fp32(probabilities.iter().map(|&p| p as f32).collect()),
        },
        scalar("class_index", OutputData::Int64(vec![class_index as i64])),
        scalar("label", OutputData::Bytes(vec![model.contract.label(class_index)])),
        scalar("confidence", OutputData::Fp32(vec![confidence as f32])),
        scalar("timesteps", OutputData::Int64(vec![timesteps as i64])),
    ];
    if let Some(u) = uncertainty {
        outputs.push(scalar("uncertainty", OutputData::Fp32(vec![u as f32])));
    }
    outputs
}

/// Keeps the outputs a client asked for (all when it named none); an unknown name is an error.
pub fn select_outputs(
    outputs: Vec<OutputTensor>,
    requested: &[String],
) -> Result<Vec<OutputTensor>, ApiError> {
    if let Some(unknown) = requested.iter().find(|name| !OUTPUTS.contains(&name.as_str())) {
        return Err(ApiError::InvalidField(format!(
            "outputs: unknown output \"{unknown}\"; the model answers {}",
            OUTPUTS.join(", ")
        )));
    }
    if requested.is_empty() {
        return Ok(outputs);
    }
    Ok(outputs.into_iter().filter(|o| requested.iter().any(|r| r == o.name)).collect())
}

/// The input's metadata: name, datatype and shape (-1 for the frame count of frame models).
pub fn input_metadata(model: &LoadedModel) -> Vec<(String, &'static str, Vec<i64>)> {
    let frame = model.contract.frame_shape.iter().map(|&d| d as i64);
    let shape: Vec<i64> = match model.contract.input_kind {
        InputKind::Static => frame.collect(),
        InputKind::Frames | InputKind::Events => std::iter::once(-1).chain(frame).collect(),
    };
    let mut inputs = vec![(INPUT_NAME.to_owned(), "FP32", shape)];
    if model.contract.events.is_some() {
        inputs.push((EVENTS_INPUT.to_owned(), "INT64", vec![-1, 4]));
    }
    inputs
}

/// The outputs' metadata.
pub fn output_metadata(model: &LoadedModel) -> Vec<(String, &'static str, Vec<i64>)> {
    let classes = model.contract.num_classes as i64;
    let mut outputs = vec![
        ("probabilities".to_owned(), "FP32", vec![1, classes]),
        ("class_index".to_owned(), "INT64", vec![1]),
        ("label".to_owned(), "BYTES", vec![1]),
        ("confidence".to_owned(), "FP32", vec![1]),
        ("timesteps".to_owned(), "INT64", vec![1]),
        ("exit_reason".to_owned(), "BYTES", vec![1]),
    ];
    if model.contract.members > 1 {
        outputs.push(("uncertainty".to_owned(), "FP32", vec![1]));
    }
    outputs
}

/// The model's anytime settings, as configuration parameters.
pub fn config_parameters(model: &LoadedModel) -> BTreeMap<String, String> {
    let contract = &model.contract;
    let mut parameters = BTreeMap::from([
        ("timesteps".to_owned(), contract.timesteps.to_string()),
        ("default_threshold".to_owned(), contract.default_threshold.to_string()),
        ("input_kind".to_owned(), format!("{:?}", contract.input_kind).to_lowercase()),
        ("members".to_owned(), contract.members.to_string()),
        ("labels".to_owned(), contract.labels.join(",")),
    ]);
    if let Some(binning) = &contract.events {
        parameters.insert("events".to_owned(), serde_json::to_string(binning).unwrap_or_default());
    }
    if !contract.calibration.is_empty() {
        parameters.insert(
            "calibration".to_owned(),
            serde_json::to_string(&contract.calibration).unwrap_or_default(),
        );
    }
    parameters
}

/// Triton's load parameters (a config or files instead of the directory's) are not supported.
pub fn no_parameters<'a>(mut names: impl Iterator<Item = &'a String>) -> Result<(), ApiError> {
    match names.next() {
        None => Ok(()),
        Some(name) => Err(ApiError::InvalidField(format!(
            "parameters.{name}: not supported; models load from the models directory as they are"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_data_decodes_little_endian() {
        let bytes: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode_binary("x", "FP32", &bytes).expect("fp32"), vec![1.5, -2.0]);
        let bytes: Vec<u8> = [7i64, -3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode_binary("events", "INT64", &bytes).expect("int64"), vec![7.0, -3.0]);
        let err = decode_binary("x", "FP32", &bytes[..7]).unwrap_err();
        assert!(err.to_string().contains("7 bytes of binary data is not a whole number of FP32"), "{err}");
        assert!(decode_binary("x", "BYTES", &bytes).is_err());
        assert!(decode_binary("x", "FP16", &bytes[..4]).is_err());
    }

    #[test]
    fn bytes_outputs_are_length_prefixed() {
        let output = scalar("label", OutputData::Bytes(vec!["ab".into()]));
        assert_eq!(output.to_bytes(), vec![2, 0, 0, 0, b'a', b'b']);
    }
}
