//! Models: the step-model contract, the registry of loaded models, and the repository that
//! changes it while the server runs.

pub mod contract;
pub mod registry;
pub mod repository;

pub use contract::{
    CalibratedThreshold, ContractError, InputKind, ModelContract, ModelSignature, TensorSpec,
};
pub use registry::{LoadedModel, ModelRegistry, RefusedModel};
pub use repository::{Repository, RepositoryError};
