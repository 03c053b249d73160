//! The ONNX Runtime side: loading the library, and a session that runs one timestep of a model
//! (the engine's `Stepper`).

pub mod device;
pub mod row_gather;
pub mod runtime;
pub mod step_session;

pub use device::{Device, DeviceError};
pub use runtime::{OrtRuntime, RuntimeError};
pub use step_session::{OpenedStep, StateMemory, StepError, StepSession};
