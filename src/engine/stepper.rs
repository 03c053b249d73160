//! What the scheduler steps: a model that runs one timestep for a batch of slot-indexed rows. The
//! engine defines it and the backend implements it (`backend::StepSession`, over ONNX Runtime), so
//! the engine never depends on the runtime and its tests run on a scripted stepper.
//!
//! The scheduler is generic over it (static dispatch): the step path stays a direct call with no
//! allocation, as it was on the concrete session.

/// Why a stepper could not be opened, reserve its slots or run a step. The errors of opening a
/// session live here too: the engine answers every request of a failed batch with the step's
/// error, and a session's opening errors share its type so that loading reports them alike.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    #[error("cannot open model {path}: {message}")]
    Open { path: String, message: String },
    /// The device the model should run on is unusable (the backend's message, as it wrote it).
    #[error("{0}")]
    Device(String),
    #[error("cannot read the model's metadata: {0}")]
    Metadata(String),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("a batch of {batch} does not fit the {slots} slots reserved")]
    Slots { batch: usize, slots: usize },
    #[error("a tensor name holds a NUL byte: {0:?}")]
    Name(String),
}

/// One member of a model's engine: frames in, one timestep, logits out, over rows `0..batch` of
/// buffers it owns. Row `i` belongs to the scheduler's slot `i`; the scheduler keeps the rows dense
/// by moving and swapping them.
pub trait Stepper: Send + 'static {
    /// Values in one frame (one row's input).
    fn frame_len(&self) -> usize;
    /// Logits per row.
    fn classes(&self) -> usize;
    /// Makes room for batches of up to `slots` rows, all zero. Called once, before the first step.
    fn reserve_slots(&mut self, slots: usize) -> Result<(), StepError>;
    /// Row `row` of the next step's input, to be filled by the scheduler.
    fn frame_mut(&mut self, row: usize) -> Result<&mut [f32], StepError>;
    /// Runs one timestep for rows `0..batch`: their frames and states in, logits and new states out.
    /// Rows `batch..live` are in use but wait for their next frame: their states must be kept.
    fn step(&mut self, batch: usize, live: usize) -> Result<(), StepError>;
    /// Row `row`'s logits from the last step.
    fn logits(&self, row: usize) -> &[f32];
    /// Row `row`'s synaptic operations in the last step, when the model reports them.
    fn synaptic_ops(&self, row: usize) -> Option<f32>;
    /// Resets row `row`'s state: a request admitted into that slot starts from zero.
    fn zero_row(&mut self, row: usize);
    /// Copies row `from`'s state over row `to`'s (a leaving request's slot is filled by the last).
    fn move_row(&mut self, from: usize, to: usize);
    /// Swaps the states of rows `a < b` (ready rows go first).
    fn swap_rows(&mut self, a: usize, b: usize);
}
