//! Request inputs: decoding tensors from JSON and shaping them into per-timestep frames.

pub mod tensor;

pub use tensor::{decode_json_tensor, into_frames, DenseTensor, InputError};
