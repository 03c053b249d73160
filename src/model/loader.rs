//! Loading a model directory: its graph (or its ensemble's members) opened, checked against the
//! contract, and its engine put together over the sessions. The repository loads through this;
//! the registry holds what was loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::backend::{Device, OrtRuntime, StepError, StepSession};
use crate::contract::{
    check_max_variance, check_threshold, checked_calibration, CalibratedThreshold, ContractError,
    ModelContract,
};
use crate::engine::{Engine, EngineConfig};

/// The file a single model's directory holds.
pub const MODEL_FILE: &str = "model.onnx";
/// The file an ensemble's directory holds instead: its members, trained with different seeds.
pub const ENSEMBLE_FILE: &str = "ensemble.json";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path} holds neither {MODEL_FILE} nor {ENSEMBLE_FILE}")]
    NotAModel { path: String },
    #[error(transparent)]
    Open(#[from] StepError),
    #[error("{path} breaks the step-model contract: {source}")]
    Contract { path: String, source: ContractError },
    #[error(transparent)]
    Engine(#[from] crate::engine::StartError),
    #[error("ensemble {path}: {reason}")]
    Ensemble { path: String, reason: String },
    #[error("{path}: {source}")]
    Policies { path: String, source: super::exit_policies::PolicyFileError },
}

/// `ensemble.json`: the members of an ensemble, stepped in lockstep on the same input.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSpec {
    /// Member graphs, relative to the ensemble's directory. Each follows the contract, and all
    /// agree on timesteps, labels, input kind and frame shape.
    pub members: Vec<PathBuf>,
    /// Overrides the members' default threshold.
    #[serde(default)]
    pub default_threshold: Option<f64>,
    /// Default bound on the members' variance for a confident exit.
    #[serde(default)]
    pub default_max_variance: Option<f64>,
    /// The ensemble's own held-out accuracy per timestep (else the first member's).
    #[serde(default)]
    pub accuracy_per_timestep: Option<Vec<f64>>,
    /// How the ensemble was made (free-form).
    #[serde(default)]
    pub training: Option<serde_json::Value>,
    /// The ensemble's own calibration table (a member's does not hold for the ensemble).
    #[serde(default)]
    pub calibration: Option<Vec<CalibratedThreshold>>,
}

/// Per-model serving options.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// ONNX Runtime intra-op threads per model.
    pub intra_threads: usize,
    /// Where the models run.
    pub device: Device,
    /// How each model's scheduler batches and queues.
    pub engine: EngineConfig,
}

pub struct LoadedModel {
    pub name: String,
    pub path: PathBuf,
    pub contract: Arc<ModelContract>,
    pub engine: Engine,
    /// The exit policies the directory ships (`exit-policies.json`), checked against the contract.
    pub exit_policies: Option<Arc<super::exit_policies::ExitPolicies>>,
    /// 1 when first loaded, one more with every reload that took over.
    pub version: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RefusedModel {
    pub name: String,
    pub path: String,
    pub reason: String,
}

/// Opens `path` and checks it against the contract, without starting an engine.
pub fn inspect(runtime: &OrtRuntime, path: &Path) -> Result<ModelContract, LoadError> {
    let opened = StepSession::open(runtime, path, 1, Device::Cpu)?;
    ModelContract::from_signature(&opened.signature)
        .map_err(|source| LoadError::Contract { path: path.display().to_string(), source })
}

fn open_checked(
    runtime: &OrtRuntime,
    path: &Path,
    intra_threads: usize,
    device: Device,
) -> Result<StepSession, LoadError> {
    let opened = StepSession::open(runtime, path, intra_threads, device)?;
    let contract = ModelContract::from_signature(&opened.signature)
        .map_err(|source| LoadError::Contract { path: path.display().to_string(), source })?;
    Ok(StepSession::new(opened, contract)?)
}

/// The file that makes `dir` a model: its ensemble description, else its graph.
pub fn model_file(dir: &Path) -> Option<PathBuf> {
    let (ensemble, single) = (dir.join(ENSEMBLE_FILE), dir.join(MODEL_FILE));
    if ensemble.is_file() {
        Some(ensemble)
    } else if single.is_file() {
        Some(single)
    } else {
        None
    }
}

/// The refusal of the model `name` in `dir`, logged (one line with name, path and reason).
pub fn refusal(name: &str, dir: &Path, error: &LoadError) -> RefusedModel {
    let path = model_file(dir).unwrap_or_else(|| dir.to_path_buf()).display().to_string();
    tracing::error!(model = %name, %path, %error, "model refused");
    RefusedModel { name: name.to_owned(), path, reason: error.to_string() }
}

/// Opens the model in `dir` (a graph or an ensemble), checks it against the contract and puts
/// its engine together over its sessions. Blocking: ONNX Runtime builds its sessions here.
pub fn load(
    runtime: &OrtRuntime,
    name: &str,
    dir: &Path,
    options: LoadOptions,
    version: u64,
) -> Result<LoadedModel, LoadError> {
    let Some(path) = model_file(dir) else {
        return Err(LoadError::NotAModel { path: dir.display().to_string() });
    };
    let (contract, sessions) = if path.ends_with(ENSEMBLE_FILE) {
        open_ensemble(runtime, &path, options)?
    } else {
        let session = open_checked(runtime, &path, options.intra_threads, options.device)?;
        (session.contract().clone(), vec![session])
    };
    let exit_policies = super::exit_policies::ExitPolicies::load(dir, &contract)
        .map_err(|source| LoadError::Policies { path: dir.display().to_string(), source })?
        .map(Arc::new);
    let contract = Arc::new(contract);
    let engine = Engine::start(name, sessions, options.engine)?;
    tracing::info!(
        model = %name,
        version,
        members = contract.members,
        timesteps = contract.timesteps,
        classes = contract.num_classes,
        input_kind = ?contract.input_kind,
        frame_shape = ?contract.frame_shape,
        states = contract.states.len(),
        exit_policies = exit_policies.as_ref().map_or(0, |p| p.policies.len()),
        "model loaded"
    );
    Ok(LoadedModel { name: name.to_owned(), path, contract, engine, exit_policies, version })
}

/// An ensemble's members, opened and checked to agree, and its contract.
fn open_ensemble(
    runtime: &OrtRuntime,
    path: &Path,
    options: LoadOptions,
) -> Result<(ModelContract, Vec<StepSession>), LoadError> {
    let fail = |reason: String| LoadError::Ensemble { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let spec: EnsembleSpec = serde_json::from_str(&text).map_err(|e| fail(format!("invalid: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut sessions: Vec<StepSession> = Vec::with_capacity(spec.members.len());
    for member in &spec.members {
        let session = open_checked(runtime, &dir.join(member), options.intra_threads, options.device)?;
        if let Some(first) = sessions.first() {
            if let Some(difference) = incompatibility(first.contract(), session.contract()) {
                return Err(fail(format!(
                    "member {} differs from the first: {difference}",
                    member.display()
                )));
            }
        }
        sessions.push(session);
    }
    let Some(first) = sessions.first() else {
        return Err(fail("lists no members".into()));
    };
    let mut contract = first.contract().clone();
    contract.members = sessions.len();
    if let Some(bound) = spec.default_max_variance {
        let bound =
            check_max_variance(bound).map_err(|reason| fail(format!("default_max_variance: {reason}")))?;
        contract.default_max_variance = Some(bound);
    }
    if let Some(threshold) = spec.default_threshold {
        let threshold =
            check_threshold(threshold).map_err(|reason| fail(format!("default_threshold: {reason}")))?;
        contract.default_threshold = threshold;
    }
    if let Some(accuracy) = spec.accuracy_per_timestep {
        if accuracy.len() != contract.timesteps {
            return Err(fail(format!(
                "accuracy_per_timestep has {} entries for {} timesteps",
                accuracy.len(),
                contract.timesteps
            )));
        }
        contract.accuracy_per_timestep = accuracy;
    }
    if let Some(training) = spec.training {
        contract.training = training;
    }
    // A member's table was calibrated for that member alone.
    contract.calibration = match spec.calibration {
        None => Vec::new(),
        Some(table) => checked_calibration(table).map_err(|reason| fail(format!("calibration: {reason}")))?,
    };
    Ok((contract, sessions))
}

/// What makes two members unable to share requests, if anything.
fn incompatibility(a: &ModelContract, b: &ModelContract) -> Option<String> {
    if a.timesteps != b.timesteps {
        return Some(format!("timesteps {} vs {}", a.timesteps, b.timesteps));
    }
    if a.labels != b.labels {
        return Some(format!("labels {:?} vs {:?}", a.labels, b.labels));
    }
    if a.input_kind != b.input_kind {
        return Some(format!("input kind {:?} vs {:?}", a.input_kind, b.input_kind));
    }
    if a.events != b.events {
        return Some(format!("event binning {:?} vs {:?}", a.events, b.events));
    }
    if a.frame_shape != b.frame_shape {
        return Some(format!("frame shape {:?} vs {:?}", a.frame_shape, b.frame_shape));
    }
    None
}
