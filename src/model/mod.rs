//! Models: loading a model directory into an engine, the registry of loaded models, and the
//! repository that changes it while the server runs. The top of the serving layers: it puts
//! together the backend's sessions and the engine.

pub mod exit_policies;
pub mod loader;
pub mod registry;
pub mod repository;

// The contract is its own layer, below this one; `model::contract` stays its path for the API.
pub use crate::contract;
pub use crate::contract::{
    CalibratedThreshold, ContractError, InputKind, ModelContract, ModelSignature, TensorSpec,
};
pub use exit_policies::{ExitPolicies, PolicyAsk, PolicyFileError, PolicyRow};
pub use registry::{LoadedModel, ModelRegistry, RefusedModel};
pub use repository::{Repository, RepositoryError};
