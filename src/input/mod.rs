//! Request inputs: decoding tensors from JSON and shaping them into per-timestep frames.

pub mod events;
pub mod json_events;
pub mod tensor;

pub use events::{decode_json_events, EventBinning, EventError};
pub use json_events::JsonEvents;
pub use tensor::{decode_json_tensor, into_frames, DenseTensor, InputError};
