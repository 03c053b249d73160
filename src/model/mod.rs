//! Models: the step-model contract and the registry of loaded models.

pub mod contract;
pub mod registry;

pub use contract::{ContractError, InputKind, ModelContract, ModelSignature, TensorSpec};
pub use registry::{LoadedModel, ModelRegistry, RefusedModel};
