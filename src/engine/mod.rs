//! The anytime engine: one worker per model steps requests and decides when each one stops.

pub mod policy;
mod worker;

use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use policy::{CutoffPolicy, ExitReason, RunningPrediction};

use crate::backend::{StepError, StepSession};

/// The input of one request, already checked against the model's shapes.
#[derive(Debug, Clone)]
pub enum RequestFrames {
    /// One frame fed at every timestep.
    Static(Vec<f32>),
    /// `count` frames back to back, one per timestep.
    Sequence { data: Vec<f32>, count: usize },
}

impl RequestFrames {
    /// The frame for `timestep` (0-based). Sequence length is checked against the policy at admission.
    fn frame(&self, timestep: usize, frame_len: usize) -> &[f32] {
        match self {
            Self::Static(data) => data,
            Self::Sequence { data, .. } => &data[timestep * frame_len..(timestep + 1) * frame_len],
        }
    }
}

#[derive(Debug, Clone)]
pub struct AnytimeRequest {
    pub frames: RequestFrames,
    pub policy: CutoffPolicy,
    /// Report the confidence after every timestep.
    pub record_confidences: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnytimeAnswer {
    pub class_index: usize,
    pub confidence: f64,
    pub probabilities: Vec<f64>,
    pub timesteps: usize,
    pub exit_reason: ExitReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidences: Option<Vec<f64>>,
    /// Time spent stepping, excluding the queue.
    #[serde(skip)]
    pub compute_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the model's queue is full ({0} requests waiting); retry later")]
    Overloaded(usize),
    #[error("the model's worker has stopped")]
    Stopped,
    #[error(transparent)]
    Step(#[from] StepError),
}

struct Job {
    request: AnytimeRequest,
    reply: oneshot::Sender<Result<AnytimeAnswer, EngineError>>,
}

/// A handle to one model's worker thread. Cheap to clone; the worker stops when all handles drop.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    queue_capacity: usize,
}

impl Engine {
    /// Starts the worker thread that owns `session`. At most `queue_capacity` requests wait.
    pub fn start(name: &str, session: StepSession, queue_capacity: usize) -> std::io::Result<Self> {
        let (jobs, receiver) = mpsc::channel(queue_capacity.max(1));
        std::thread::Builder::new()
            .name(format!("step-{name}"))
            .spawn(move || worker::run(session, receiver))?;
        Ok(Self {
            jobs,
            queue_capacity,
        })
    }

    pub async fn infer(&self, request: AnytimeRequest) -> Result<AnytimeAnswer, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job { request, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EngineError::Overloaded(self.queue_capacity),
                mpsc::error::TrySendError::Closed(_) => EngineError::Stopped,
            })?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }
}
