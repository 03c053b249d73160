//! The models directory: every `<dir>/<name>/model.onnx` is opened, checked against the contract
//! and given its own engine. A model that fails is refused with its reason; the others still load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::contract::{ContractError, ModelContract};
use crate::backend::{OrtRuntime, StepError, StepSession};
use crate::engine::{Engine, EngineConfig};

/// The file each model directory must hold.
pub const MODEL_FILE: &str = "model.onnx";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Open(#[from] StepError),
    #[error("{path} breaks the step-model contract: {source}")]
    Contract { path: String, source: ContractError },
    #[error("cannot start the model's worker thread: {0}")]
    Worker(#[from] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("models directory {path} cannot be read: {source}")]
    Directory { path: String, source: std::io::Error },
}

/// Per-model serving options.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// ONNX Runtime intra-op threads per model.
    pub intra_threads: usize,
    /// How each model's scheduler batches and queues.
    pub engine: EngineConfig,
}

pub struct LoadedModel {
    pub name: String,
    pub path: PathBuf,
    pub contract: Arc<ModelContract>,
    pub engine: Engine,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefusedModel {
    pub name: String,
    pub path: String,
    pub reason: String,
}

#[derive(Default)]
pub struct ModelRegistry {
    models: BTreeMap<String, Arc<LoadedModel>>,
    refused: Vec<RefusedModel>,
}

/// Opens `path` and checks it against the contract, without starting an engine.
pub fn inspect(runtime: &OrtRuntime, path: &Path) -> Result<ModelContract, LoadError> {
    let (_, contract) = open_checked(runtime, path, 1)?;
    Ok(contract)
}

fn open_checked(
    runtime: &OrtRuntime,
    path: &Path,
    intra_threads: usize,
) -> Result<(ort::session::Session, ModelContract), LoadError> {
    let (session, signature) = StepSession::open(runtime, path, intra_threads)?;
    let contract = ModelContract::from_signature(&signature)
        .map_err(|source| LoadError::Contract { path: path.display().to_string(), source })?;
    Ok((session, contract))
}

impl ModelRegistry {
    /// Loads every model directory under `dir`.
    pub fn load_dir(runtime: &OrtRuntime, dir: &Path, options: LoadOptions) -> Result<Self, RegistryError> {
        let directory_error = |source| RegistryError::Directory { path: dir.display().to_string(), source };
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir).map_err(directory_error)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        let mut registry = Self::default();
        for entry in entries {
            let path = entry.join(MODEL_FILE);
            let Some(name) = entry.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if !entry.is_dir() || name.starts_with('.') {
                continue;
            }
            if !path.is_file() {
                tracing::warn!(dir = %entry.display(), "skipping a directory without {MODEL_FILE}");
                continue;
            }
            match registry.load_model(runtime, &name, &path, options) {
                Ok(()) => {}
                Err(error) => {
                    tracing::error!(model = %name, %error, "model refused");
                    registry.refused.push(RefusedModel {
                        name,
                        path: path.display().to_string(),
                        reason: error.to_string(),
                    });
                }
            }
        }
        Ok(registry)
    }

    fn load_model(
        &mut self,
        runtime: &OrtRuntime,
        name: &str,
        path: &Path,
        options: LoadOptions,
    ) -> Result<(), LoadError> {
        let (session, contract) = open_checked(runtime, path, options.intra_threads)?;
        let contract = Arc::new(contract);
        let engine = Engine::start(name, StepSession::new(session, (*contract).clone()), options.engine)?;
        tracing::info!(
            model = %name,
            timesteps = contract.timesteps,
            classes = contract.num_classes,
            input_kind = ?contract.input_kind,
            frame_shape = ?contract.frame_shape,
            states = contract.states.len(),
            "model loaded"
        );
        let model = LoadedModel { name: name.to_owned(), path: path.to_path_buf(), contract, engine };
        self.models.insert(name.to_owned(), Arc::new(model));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<LoadedModel>> {
        self.models.get(name)
    }

    pub fn models(&self) -> impl Iterator<Item = &Arc<LoadedModel>> {
        self.models.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }

    pub fn refused(&self) -> &[RefusedModel] {
        &self.refused
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}
