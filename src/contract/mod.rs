//! The step-model contract: what an ONNX graph must look like for the server to step it, and the
//! event binning an events model describes. The bottom layer: it imports no other module of the
//! crate, and every other layer may use it.
//!
//! Validation is a pure function of the graph's signature and its `metadata_props`, so every rule
//! is unit-tested without ONNX Runtime. The prose version lives in `docs/MODEL-CONTRACT.md`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

pub mod binning;

pub use binning::{Binned, BinningMode, Event, EventBinning, EventError};

/// Contract versions this server understands.
pub const CONTRACT_VERSION: &str = "1";
/// Prefix of every metadata key the contract defines.
pub const METADATA_PREFIX: &str = "spikeserve.";
pub const INPUT_NAME: &str = "x";
pub const LOGITS_NAME: &str = "logits";
pub const STATE_IN_PREFIX: &str = "state_in.";
pub const STATE_OUT_PREFIX: &str = "state_out.";
/// Optional output: the synaptic operations this step caused, per sample (`[B]`).
pub const SYNAPTIC_OPS_NAME: &str = "synaptic_ops";

/// Element type of a graph input or output, as far as the contract cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementType {
    Float32,
    Other(String),
}

/// One graph input or output: its name, element type and dimensions (`-1` where dynamic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub element: ElementType,
    pub dims: Vec<i64>,
}

impl TensorSpec {
    pub fn f32(name: &str, dims: &[i64]) -> Self {
        Self { name: name.to_owned(), element: ElementType::Float32, dims: dims.to_vec() }
    }
}

/// What ONNX Runtime reports about a graph: inputs, outputs and metadata.
#[derive(Debug, Clone, Default)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub metadata: BTreeMap<String, String>,
}

/// How a request's input becomes one frame per timestep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// One frame, fed at every timestep (a static image).
    Static,
    /// A sequence of frames, one per timestep.
    Frames,
    /// Raw events `(x, y, t, p)`, binned by the server into one frame per timestep as described by
    /// the model's `spikeserve.events` metadata (or frames already binned, as for `Frames`).
    Events,
}

impl InputKind {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "static" => Ok(Self::Static),
            "frames" => Ok(Self::Frames),
            "events" => Ok(Self::Events),
            other => {
                Err(format!("unknown input kind {other:?}; expected \"static\", \"frames\" or \"events\""))
            }
        }
    }
}

/// One recurrent state tensor: fed back from `state_out.i` to `state_in.i` every timestep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StateSpec {
    pub input: String,
    pub output: String,
    /// Per-sample shape (no batch dimension).
    pub shape: Vec<usize>,
}

impl StateSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A model that satisfies the contract, with everything the engine and the API need to know.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelContract {
    pub contract_version: String,
    pub timesteps: usize,
    pub num_classes: usize,
    pub labels: Vec<String>,
    pub input_kind: InputKind,
    /// Per-sample shape of one timestep's frame (no batch dimension).
    pub frame_shape: Vec<usize>,
    pub default_threshold: f64,
    pub accuracy_per_timestep: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_description: Option<String>,
    /// How the model was trained, as the training job wrote it (free-form JSON).
    #[schema(value_type = Object)]
    pub training: Value,
    pub states: Vec<StateSpec>,
    /// How raw events become frames, for `events` models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventBinning>,
    /// Whether the graph reports its synaptic operations per step (output `synaptic_ops`).
    pub reports_synaptic_ops: bool,
    /// Members stepped in lockstep: 1 for a single model, K for an ensemble.
    pub members: usize,
    /// For ensembles: the default bound on the members' variance for a confident exit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_max_variance: Option<f64>,
    /// Calibrated exits: the threshold chosen for each accuracy-drop budget (ascending budgets;
    /// empty when the model has no table). A request's `max_accuracy_drop` picks a row.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calibration: Vec<CalibratedThreshold>,
}

/// One row of a model's calibration table: on data the model was not tuned on, this threshold kept
/// the accuracy drop against the model at T within the budget (see `docs/MODEL-CONTRACT.md`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibratedThreshold {
    /// The budget, in percentage points of accuracy against the model at T.
    pub max_accuracy_drop: f64,
    /// The confidence threshold chosen for it, in (0, 1].
    pub threshold: f64,
}

/// The rule for a confidence threshold, wherever one comes from (a request, model metadata, an
/// ensemble's configuration, a calibration row): in (0, 1]. A softmax confidence never exceeds 1,
/// and a threshold of 0 would exit before any evidence. `Err` says why, for the caller to prefix.
pub fn check_threshold(threshold: f64) -> Result<f64, String> {
    if threshold > 0.0 && threshold <= 1.0 {
        Ok(threshold)
    } else {
        Err(format!("must be in (0, 1], found {threshold}"))
    }
}

/// The rule for an ensemble-variance bound (a request's, or a model's default): a finite number, not
/// negative. `Err` says why.
pub fn check_max_variance(bound: f64) -> Result<f64, String> {
    if bound.is_finite() && bound >= 0.0 {
        Ok(bound)
    } else {
        Err(format!("must be a non-negative number, found {bound}"))
    }
}

/// Checks a calibration table and sorts it by budget: budgets finite, non-negative and distinct,
/// thresholds in (0, 1].
pub fn checked_calibration(mut table: Vec<CalibratedThreshold>) -> Result<Vec<CalibratedThreshold>, String> {
    for row in &table {
        if !(row.max_accuracy_drop.is_finite() && row.max_accuracy_drop >= 0.0) {
            return Err(format!("budget {} is not a non-negative number", row.max_accuracy_drop));
        }
        if let Err(reason) = check_threshold(row.threshold) {
            return Err(format!("threshold for budget {}: {reason}", row.max_accuracy_drop));
        }
    }
    table.sort_by(|a, b| a.max_accuracy_drop.total_cmp(&b.max_accuracy_drop));
    if let Some(pair) = table.windows(2).find(|w| w[0].max_accuracy_drop == w[1].max_accuracy_drop) {
        return Err(format!("budget {} appears twice", pair[0].max_accuracy_drop));
    }
    Ok(table)
}

impl ModelContract {
    /// The label of class `index` (empty for an index the model does not have).
    pub fn label(&self, index: usize) -> String {
        self.labels.get(index).cloned().unwrap_or_default()
    }

    pub fn frame_len(&self) -> usize {
        self.frame_shape.iter().product()
    }

    /// The shape a request's input must have: the frame for static models, `[n, *frame]` for frames.
    pub fn describe_request_shape(&self) -> String {
        match self.input_kind {
            InputKind::Static => format!("{:?}", self.frame_shape),
            InputKind::Frames | InputKind::Events => {
                format!("[n <= {}, {}]", self.timesteps, join_dims(&self.frame_shape))
            }
        }
    }
}

fn join_dims(dims: &[usize]) -> String {
    dims.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Why a model breaks the contract. Each message names the input, output or key at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContractError {
    #[error("graph has no input named \"{0}\"")]
    MissingInput(String),
    #[error("graph has no output named \"{0}\"")]
    MissingOutput(String),
    #[error("graph input \"{0}\" is not part of the contract (expected \"x\" and \"state_in.<i>\")")]
    UnexpectedInput(String),
    #[error("\"{name}\" must be float32, found {found}")]
    NotFloat32 { name: String, found: String },
    #[error("\"{name}\" must have a dynamic batch dimension first, found dims {dims:?}")]
    BatchNotDynamic { name: String, dims: Vec<i64> },
    #[error("\"{name}\" must have fixed positive dimensions after the batch, found dims {dims:?}")]
    DynamicFeatureDims { name: String, dims: Vec<i64> },
    #[error("state input \"{input}\" has no matching output \"{output}\"")]
    UnpairedStateInput { input: String, output: String },
    #[error("state output \"{output}\" has no matching input \"{input}\"")]
    UnpairedStateOutput { input: String, output: String },
    #[error("state indices must run 0..{count} without gaps; \"{name}\" is out of place")]
    StateIndexGap { name: String, count: usize },
    #[error("state \"{input}\" has dims {input_dims:?} but \"{output}\" has dims {output_dims:?}")]
    StateShapeMismatch { input: String, output: String, input_dims: Vec<i64>, output_dims: Vec<i64> },
    #[error("output \"logits\" must have shape [batch, classes], found dims {0:?}")]
    LogitsShape(Vec<i64>),
    #[error("output \"synaptic_ops\" must have shape [batch], found dims {0:?}")]
    SynapticOpsShape(Vec<i64>),
    #[error("metadata key \"{0}\" is missing")]
    MissingMetadata(String),
    #[error("metadata key \"{key}\" is invalid: {reason}")]
    InvalidMetadata { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ContractError {
    ContractError::InvalidMetadata { key: format!("{METADATA_PREFIX}{key}"), reason: reason.into() }
}

struct Metadata<'a>(&'a BTreeMap<String, String>);

impl Metadata<'_> {
    fn optional(&self, key: &str) -> Option<&str> {
        self.0.get(&format!("{METADATA_PREFIX}{key}")).map(String::as_str)
    }

    fn required(&self, key: &str) -> Result<&str, ContractError> {
        self.optional(key).ok_or_else(|| ContractError::MissingMetadata(format!("{METADATA_PREFIX}{key}")))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, key: &str, expected: &str) -> Result<T, ContractError> {
        let text = self.required(key)?;
        serde_json::from_str(text)
            .map_err(|e| invalid(key, format!("expected {expected}, got {text:?} ({e})")))
    }
}

impl ModelContract {
    /// Checks `signature` against the contract and extracts the model's description.
    pub fn from_signature(signature: &ModelSignature) -> Result<Self, ContractError> {
        let meta = Metadata(&signature.metadata);
        let version = meta.required("contract_version")?;
        if version != CONTRACT_VERSION {
            return Err(invalid(
                "contract_version",
                format!("this server supports version {CONTRACT_VERSION}, found {version:?}"),
            ));
        }

        let x = find(&signature.inputs, INPUT_NAME)
            .ok_or_else(|| ContractError::MissingInput(INPUT_NAME.into()))?;
        let frame_shape = per_sample_shape(x)?;
        let logits = find(&signature.outputs, LOGITS_NAME)
            .ok_or_else(|| ContractError::MissingOutput(LOGITS_NAME.into()))?;
        let logits_shape =
            per_sample_shape(logits).map_err(|_| ContractError::LogitsShape(logits.dims.clone()))?;
        let [logit_classes] = logits_shape[..] else {
            return Err(ContractError::LogitsShape(logits.dims.clone()));
        };
        let states = pair_states(signature)?;
        let reports_synaptic_ops = match find(&signature.outputs, SYNAPTIC_OPS_NAME) {
            None => false,
            Some(spec) => {
                let shape = per_sample_shape(spec)?;
                if !shape.is_empty() {
                    return Err(ContractError::SynapticOpsShape(spec.dims.clone()));
                }
                true
            }
        };

        let timesteps: usize = meta.json("timesteps", "a positive integer")?;
        if timesteps == 0 {
            return Err(invalid("timesteps", "must be at least 1"));
        }
        let num_classes: usize = meta.json("num_classes", "a positive integer")?;
        if num_classes != logit_classes {
            return Err(invalid(
                "num_classes",
                format!("says {num_classes} but \"logits\" has {logit_classes} classes"),
            ));
        }
        let labels: Vec<String> = meta.json("labels", "a JSON array of strings")?;
        if labels.len() != num_classes {
            return Err(invalid("labels", format!("has {} labels for {num_classes} classes", labels.len())));
        }
        let input_kind =
            InputKind::parse(meta.required("input_kind")?).map_err(|reason| invalid("input_kind", reason))?;
        let default_threshold: f64 = meta.json("default_threshold", "a number in (0, 1]")?;
        check_threshold(default_threshold).map_err(|reason| invalid("default_threshold", reason))?;
        let accuracy_per_timestep: Vec<f64> =
            meta.json("accuracy_per_timestep", "a JSON array of numbers")?;
        if accuracy_per_timestep.len() != timesteps {
            return Err(invalid(
                "accuracy_per_timestep",
                format!("has {} entries for {timesteps} timesteps", accuracy_per_timestep.len()),
            ));
        }
        if let Some(bad) = accuracy_per_timestep.iter().find(|a| !(0.0..=1.0).contains(*a)) {
            return Err(invalid("accuracy_per_timestep", format!("{bad} is not a fraction in [0, 1]")));
        }
        let events = match input_kind {
            InputKind::Events => {
                let binning: EventBinning = meta.json(
                    "events",
                    "a JSON object {width, height, polarities, window_us, bins[, mode, events_per_bin]}",
                )?;
                binning.check().map_err(|reason| invalid("events", reason))?;
                if binning.frame_shape()[..] != frame_shape[..] {
                    return Err(invalid(
                        "events",
                        format!(
                            "bins events into frames {:?} but \"x\" takes {frame_shape:?}",
                            binning.frame_shape()
                        ),
                    ));
                }
                if binning.bins != timesteps {
                    return Err(invalid(
                        "events",
                        format!("has {} bins for {timesteps} timesteps", binning.bins),
                    ));
                }
                Some(binning)
            }
            _ => None,
        };
        let calibration = match meta.optional("calibration") {
            None => Vec::new(),
            Some(text) => {
                let table: Vec<CalibratedThreshold> = serde_json::from_str(text).map_err(|e| {
                    invalid(
                        "calibration",
                        format!(
                            "expected a JSON array of {{max_accuracy_drop, threshold}}, got {text:?} ({e})"
                        ),
                    )
                })?;
                checked_calibration(table).map_err(|reason| invalid("calibration", reason))?
            }
        };
        let training = match meta.optional("training") {
            Some(text) => {
                serde_json::from_str(text).map_err(|e| invalid("training", format!("not JSON: {e}")))?
            }
            None => Value::Null,
        };

        Ok(Self {
            contract_version: version.to_owned(),
            timesteps,
            num_classes,
            labels,
            input_kind,
            frame_shape,
            default_threshold,
            accuracy_per_timestep,
            input_description: meta.optional("input_description").map(str::to_owned),
            training,
            states,
            events,
            reports_synaptic_ops,
            members: 1,
            default_max_variance: None,
            calibration,
        })
    }
}

fn find<'a>(specs: &'a [TensorSpec], name: &str) -> Option<&'a TensorSpec> {
    specs.iter().find(|s| s.name == name)
}

/// Checks float32, a dynamic batch first and fixed dims after it; returns the per-sample shape.
fn per_sample_shape(spec: &TensorSpec) -> Result<Vec<usize>, ContractError> {
    if let ElementType::Other(found) = &spec.element {
        return Err(ContractError::NotFloat32 { name: spec.name.clone(), found: found.clone() });
    }
    match spec.dims.first() {
        Some(d) if *d < 0 => {}
        _ => return Err(ContractError::BatchNotDynamic { name: spec.name.clone(), dims: spec.dims.clone() }),
    }
    spec.dims[1..]
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ContractError::DynamicFeatureDims { name: spec.name.clone(), dims: spec.dims.clone() })
}

fn state_index(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.parse().ok()
}

fn pair_states(signature: &ModelSignature) -> Result<Vec<StateSpec>, ContractError> {
    let mut inputs = BTreeMap::new();
    for spec in &signature.inputs {
        if spec.name == INPUT_NAME {
            continue;
        }
        match state_index(&spec.name, STATE_IN_PREFIX) {
            Some(i) => {
                inputs.insert(i, spec);
            }
            None => return Err(ContractError::UnexpectedInput(spec.name.clone())),
        }
    }
    let outputs: BTreeMap<usize, &TensorSpec> = signature
        .outputs
        .iter()
        .filter_map(|s| state_index(&s.name, STATE_OUT_PREFIX).map(|i| (i, s)))
        .collect();
    if let Some((&i, spec)) = outputs.iter().find(|(i, _)| !inputs.contains_key(i)) {
        return Err(ContractError::UnpairedStateOutput {
            input: format!("{STATE_IN_PREFIX}{i}"),
            output: spec.name.clone(),
        });
    }
    let count = inputs.len();
    let mut states = Vec::with_capacity(count);
    for (position, (&i, input)) in inputs.iter().enumerate() {
        if i != position {
            return Err(ContractError::StateIndexGap { name: input.name.clone(), count });
        }
        let output = outputs.get(&i).ok_or_else(|| ContractError::UnpairedStateInput {
            input: input.name.clone(),
            output: format!("{STATE_OUT_PREFIX}{i}"),
        })?;
        let shape = per_sample_shape(input)?;
        let output_shape = per_sample_shape(output)?;
        if shape != output_shape {
            return Err(ContractError::StateShapeMismatch {
                input: input.name.clone(),
                output: output.name.clone(),
                input_dims: input.dims.clone(),
                output_dims: output.dims.clone(),
            });
        }
        states.push(StateSpec { input: input.name.clone(), output: output.name.clone(), shape });
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ModelSignature {
        let mut metadata = BTreeMap::new();
        for (k, v) in [
            ("contract_version", "1"),
            ("timesteps", "4"),
            ("num_classes", "3"),
            ("labels", r#"["a","b","c"]"#),
            ("input_kind", "static"),
            ("default_threshold", "0.9"),
            ("accuracy_per_timestep", "[0.5,0.6,0.7,0.8]"),
            ("training", r#"{"loss":"tet"}"#),
        ] {
            metadata.insert(format!("{METADATA_PREFIX}{k}"), v.to_owned());
        }
        ModelSignature {
            inputs: vec![
                TensorSpec::f32("x", &[-1, 1, 8, 8]),
                TensorSpec::f32("state_in.0", &[-1, 16]),
                TensorSpec::f32("state_in.1", &[-1, 4, 2]),
            ],
            outputs: vec![
                TensorSpec::f32("logits", &[-1, 3]),
                TensorSpec::f32("state_out.0", &[-1, 16]),
                TensorSpec::f32("state_out.1", &[-1, 4, 2]),
            ],
            metadata,
        }
    }

    #[test]
    fn calibration_tables_are_read_exactly_sorted_and_checked() {
        let mut s = valid();
        // A threshold whose shortest decimal form the default float parser lands one ulp off.
        let table = r#"[{"max_accuracy_drop": 2, "threshold": 0.761025},
                        {"max_accuracy_drop": 0.1, "threshold": 0.9843158845656281}]"#;
        s.metadata.insert("spikeserve.calibration".into(), table.into());
        let contract = ModelContract::from_signature(&s).expect("valid");
        let budgets: Vec<f64> = contract.calibration.iter().map(|r| r.max_accuracy_drop).collect();
        assert_eq!(budgets, [0.1, 2.0]);
        assert_eq!(contract.calibration[0].threshold.to_bits(), 0.9843158845656281f64.to_bits());
        for (bad, says) in [
            (
                r#"[{"max_accuracy_drop": 0.5, "threshold": 1.5}]"#,
                "threshold for budget 0.5: must be in (0, 1]",
            ),
            (r#"[{"max_accuracy_drop": -1, "threshold": 0.9}]"#, "not a non-negative number"),
            (
                r#"[{"max_accuracy_drop": 1, "threshold": 0.9}, {"max_accuracy_drop": 1, "threshold": 0.8}]"#,
                "twice",
            ),
            (r#"{"0.5": 0.9}"#, "expected a JSON array"),
        ] {
            s.metadata.insert("spikeserve.calibration".into(), bad.into());
            let error = error_of(&s);
            assert!(error.contains("spikeserve.calibration") && error.contains(says), "{error}");
        }
    }

    fn error_of(signature: &ModelSignature) -> String {
        match ModelContract::from_signature(signature) {
            Ok(_) => panic!("expected a contract error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn accepts_a_valid_model() {
        let contract = ModelContract::from_signature(&valid()).expect("valid");
        assert_eq!(contract.timesteps, 4);
        assert_eq!(contract.frame_shape, vec![1, 8, 8]);
        assert_eq!(contract.states.len(), 2);
        assert_eq!(contract.states[1].shape, vec![4, 2]);
        assert_eq!(contract.states[1].output, "state_out.1");
        assert_eq!(contract.input_kind, InputKind::Static);
        assert_eq!(contract.training["loss"], "tet");
    }

    #[test]
    fn names_a_missing_metadata_key() {
        let mut s = valid();
        s.metadata.remove("spikeserve.timesteps");
        assert_eq!(error_of(&s), "metadata key \"spikeserve.timesteps\" is missing");
    }

    #[test]
    fn rejects_inconsistent_metadata() {
        let mut s = valid();
        s.metadata.insert("spikeserve.num_classes".into(), "4".into());
        assert!(error_of(&s).contains("says 4 but \"logits\" has 3 classes"));
        let mut s = valid();
        s.metadata.insert("spikeserve.labels".into(), r#"["a"]"#.into());
        assert!(error_of(&s).contains("has 1 labels for 3 classes"));
        let mut s = valid();
        s.metadata.insert("spikeserve.default_threshold".into(), "1.5".into());
        assert!(error_of(&s).contains("spikeserve.default_threshold"));
        let mut s = valid();
        s.metadata.insert("spikeserve.accuracy_per_timestep".into(), "[0.5]".into());
        assert!(error_of(&s).contains("has 1 entries for 4 timesteps"));
        let mut s = valid();
        s.metadata.insert("spikeserve.input_kind".into(), "video".into());
        assert!(error_of(&s).contains("unknown input kind \"video\""));
        let mut s = valid();
        s.metadata.insert("spikeserve.contract_version".into(), "7".into());
        assert!(error_of(&s).contains("supports version 1"));
        let mut s = valid();
        s.metadata.insert("spikeserve.timesteps".into(), "eight".into());
        assert!(error_of(&s).contains("expected a positive integer"));
    }

    #[test]
    fn rejects_unpaired_or_mismatched_states() {
        let mut s = valid();
        s.outputs.retain(|o| o.name != "state_out.1");
        assert_eq!(error_of(&s), "state input \"state_in.1\" has no matching output \"state_out.1\"");
        let mut s = valid();
        s.inputs.retain(|o| o.name != "state_in.1");
        assert_eq!(error_of(&s), "state output \"state_out.1\" has no matching input \"state_in.1\"");
        let mut s = valid();
        s.outputs[2] = TensorSpec::f32("state_out.1", &[-1, 2, 4]);
        assert!(error_of(&s)
            .contains("\"state_in.1\" has dims [-1, 4, 2] but \"state_out.1\" has dims [-1, 2, 4]"));
        let mut s = valid();
        s.inputs[2].name = "state_in.5".into();
        s.outputs[2].name = "state_out.5".into();
        assert!(error_of(&s).contains("\"state_in.5\" is out of place"));
    }

    #[test]
    fn rejects_bad_graph_inputs_and_outputs() {
        let mut s = valid();
        s.inputs[0].name = "image".into();
        assert_eq!(error_of(&s), "graph has no input named \"x\"");
        let mut s = valid();
        s.inputs.push(TensorSpec::f32("mask", &[-1, 3]));
        assert!(error_of(&s).contains("\"mask\" is not part of the contract"));
        let mut s = valid();
        s.inputs[0].element = ElementType::Other("int64".into());
        assert_eq!(error_of(&s), "\"x\" must be float32, found int64");
        let mut s = valid();
        s.inputs[0].dims = vec![1, 1, 8, 8];
        assert!(error_of(&s).contains("dynamic batch dimension"));
        let mut s = valid();
        s.inputs[0].dims = vec![-1, 1, -1, 8];
        assert!(error_of(&s).contains("fixed positive dimensions"));
        let mut s = valid();
        s.outputs[0].dims = vec![-1, 3, 2];
        assert!(error_of(&s).contains("[batch, classes]"));
        let mut s = valid();
        s.outputs.remove(0);
        assert_eq!(error_of(&s), "graph has no output named \"logits\"");
    }

    #[test]
    fn an_optional_synaptic_ops_output_is_one_number_per_sample() {
        assert!(!ModelContract::from_signature(&valid()).expect("valid").reports_synaptic_ops);
        let mut s = valid();
        s.outputs.push(TensorSpec::f32("synaptic_ops", &[-1]));
        assert!(ModelContract::from_signature(&s).expect("valid").reports_synaptic_ops);
        s.outputs.last_mut().expect("pushed").dims = vec![-1, 3];
        assert_eq!(error_of(&s), "output \"synaptic_ops\" must have shape [batch], found dims [-1, 3]");
    }

    #[test]
    fn events_models_describe_their_binning() {
        let mut s = valid();
        s.inputs[0] = TensorSpec::f32("x", &[-1, 2, 8, 8]);
        s.metadata.insert("spikeserve.input_kind".into(), "events".into());
        assert_eq!(error_of(&s), "metadata key \"spikeserve.events\" is missing");
        let binning = r#"{"width": 8, "height": 8, "polarities": 2, "window_us": 1000, "bins": 4}"#;
        s.metadata.insert("spikeserve.events".into(), binning.into());
        let contract = ModelContract::from_signature(&s).expect("valid events model");
        assert_eq!(contract.events.map(|b| b.window_us), Some(1000));
        s.metadata.insert("spikeserve.events".into(), binning.replace("\"bins\": 4", "\"bins\": 5"));
        assert!(error_of(&s).contains("has 5 bins for 4 timesteps"));
        s.metadata.insert("spikeserve.events".into(), binning.replace("\"width\": 8", "\"width\": 9"));
        assert!(error_of(&s).contains("bins events into frames [2, 8, 9] but \"x\" takes [2, 8, 8]"));
        s.metadata
            .insert("spikeserve.events".into(), binning.replace("\"window_us\": 1000", "\"window_us\": 0"));
        assert!(error_of(&s).contains("every parameter must be positive"));
    }

    #[test]
    fn events_models_may_bin_by_event_count() {
        let mut s = valid();
        s.inputs[0] = TensorSpec::f32("x", &[-1, 2, 8, 8]);
        s.metadata.insert("spikeserve.input_kind".into(), "events".into());
        let time = r#"{"width": 8, "height": 8, "polarities": 2, "window_us": 1000, "bins": 4"#;
        let with = |rest: &str| format!("{time}{rest}}}");
        s.metadata.insert("spikeserve.events".into(), with(r#", "mode": "count", "events_per_bin": 50"#));
        let binning = ModelContract::from_signature(&s).expect("valid count model").events.expect("events");
        assert_eq!((binning.mode, binning.events_per_bin), (BinningMode::Count, Some(50)));
        // Written back (model info, KServe parameters) as it was read; a time binning as it always was.
        let json = serde_json::to_value(binning).expect("json");
        assert_eq!(
            (&json["mode"], &json["events_per_bin"]),
            (&serde_json::json!("count"), &serde_json::json!(50))
        );
        s.metadata.insert("spikeserve.events".into(), with(r#", "mode": "time""#));
        let binning = ModelContract::from_signature(&s).expect("valid time model").events.expect("events");
        assert_eq!(binning, EventBinning::by_time(8, 8, 2, 1000, 4));
        assert!(serde_json::to_value(binning).expect("json").get("mode").is_none());
        for (rest, message) in [
            (r#", "mode": "count""#, "events_per_bin: count binning needs a positive number"),
            (
                r#", "mode": "count", "events_per_bin": 0"#,
                "events_per_bin: count binning needs a positive number",
            ),
            (r#", "events_per_bin": 5"#, "events_per_bin: only count binning"),
            (r#", "mode": "frames""#, r#"mode: "frames" is not a binning mode ("time" or "count")"#),
            (r#", "mode": "count", "events_per_bin": -1"#, "events_per_bin"),
        ] {
            s.metadata.insert("spikeserve.events".into(), with(rest));
            let error = error_of(&s);
            assert!(error.contains("spikeserve.events") && error.contains(message), "{rest}: {error}");
        }
    }
}
