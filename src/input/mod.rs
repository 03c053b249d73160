//! Request inputs: decoding tensors and events from requests and shaping them into per-timestep
//! frames. Above the contract (which says what a model takes), below the engine (which steps them).

pub mod events;
pub mod frames;
pub mod json_events;
pub mod tensor;

pub use events::{EventBinning, EventError};
pub(crate) use frames::Readiness;
pub use frames::{FrameBuffer, RequestFrames};
pub use json_events::{decode_json_events, JsonEvents};
pub use tensor::{decode_json_tensor, into_frames, DenseTensor, InputError};
