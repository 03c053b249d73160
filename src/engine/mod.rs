//! The anytime engine: one scheduler per model steps its requests with continuous batching at the
//! timestep and decides, every timestep, which requests stop and why.

pub mod policy;
mod scheduler;
pub mod stats;

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

pub use policy::{CutoffPolicy, EnsemblePrediction, ExitReason, RunningPrediction};
pub use stats::{EngineStats, StatsSnapshot};

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
    /// The frame for `timestep` (0-based). A sequence caps `max_timesteps` at its length when the
    /// request is built, so `timestep < count` here.
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
    /// The latency budget: at this instant the request gets its best answer so far.
    pub deadline: Option<Instant>,
    /// Report the confidence after every timestep.
    pub record_confidences: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnytimeAnswer {
    pub class_index: usize,
    pub confidence: f64,
    /// For ensembles: the members' variance on the chosen class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<f64>,
    pub probabilities: Vec<f64>,
    pub timesteps: usize,
    pub exit_reason: ExitReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidences: Option<Vec<f64>>,
    /// Time from admission into a batch slot to the answer (queue excluded).
    #[serde(skip)]
    pub compute_time: Duration,
    /// Time spent waiting for a slot.
    #[serde(skip)]
    pub queue_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the model's queue is full ({0} requests waiting); retry later")]
    Overloaded(usize),
    #[error("the model's scheduler has stopped")]
    Stopped,
    #[error("the latency budget ran out before the first timestep (waited {waited_ms:.3} ms for a slot)")]
    DeadlineBeforeFirstStep { waited_ms: f64 },
    #[error(transparent)]
    Step(#[from] StepError),
}

/// How a model's scheduler batches.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Batch slots: requests stepped together in one timestep.
    pub max_batch: usize,
    /// When the scheduler is idle and a request arrives, how long to wait for more to fill the
    /// batch before the first step. Zero steps at once.
    pub batch_wait: Duration,
    /// Requests that may wait for a slot; beyond this a request is refused as overload.
    pub queue_capacity: usize,
}

struct Job {
    request: AnytimeRequest,
    enqueued: Instant,
    reply: oneshot::Sender<Result<AnytimeAnswer, EngineError>>,
}

/// A handle to one model's scheduler thread. Cheap to clone; the scheduler stops when every handle
/// is gone and its last request is answered.
#[derive(Clone)]
pub struct Engine {
    jobs: SyncSender<Job>,
    config: EngineConfig,
    stats: Arc<EngineStats>,
}

impl Engine {
    /// Starts the scheduler thread that owns `sessions`: an ensemble's members, stepped in
    /// lockstep, or a single model's one session.
    pub fn start(name: &str, sessions: Vec<StepSession>, config: EngineConfig) -> std::io::Result<Self> {
        let config = EngineConfig { max_batch: config.max_batch.max(1), ..config };
        let (jobs, receiver) = mpsc::sync_channel(config.queue_capacity.max(1));
        let stats = Arc::new(EngineStats::default());
        let scheduler = scheduler::Scheduler::new(sessions, config, stats.clone());
        std::thread::Builder::new().name(format!("step-{name}")).spawn(move || scheduler.run(receiver))?;
        Ok(Self { jobs, config, stats })
    }

    /// Queues `request` and waits for its answer. Dropping the future cancels the request: it
    /// leaves its slot at the next timestep.
    pub async fn infer(&self, request: AnytimeRequest) -> Result<AnytimeAnswer, EngineError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { request, enqueued: Instant::now(), reply };
        // Count the request as queued before the scheduler can see it, so the gauge never dips below 0.
        self.stats.enqueued();
        if let Err(error) = self.jobs.try_send(job) {
            self.stats.dequeued();
            return Err(match error {
                TrySendError::Full(_) => {
                    self.stats.refused();
                    EngineError::Overloaded(self.config.queue_capacity)
                }
                TrySendError::Disconnected(_) => EngineError::Stopped,
            });
        }
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    pub fn config(&self) -> EngineConfig {
        self.config
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}
