//! The anytime engine: one scheduler per model steps its requests with continuous batching at the
//! timestep and decides, every timestep, which requests stop and why.

pub mod admission;
#[cfg(test)]
mod fake_stepper;
pub mod frames;
pub mod policy;
mod scheduler;
pub mod stats;
pub mod stepper;

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use admission::{Admission, Priority, WarmupBatches};
pub use frames::{FrameSender, StreamError};
// The frames are the input layer's; re-exported where the engine's callers have always found them.
pub use crate::input::{FrameBuffer, RequestFrames};
pub use policy::{CutoffPolicy, EnsemblePrediction, ExitReason, RunningPrediction};
pub use stats::{EngineStats, StatsSnapshot};
pub use stepper::{StepError, Stepper};

#[derive(Debug, Clone)]
pub struct AnytimeRequest {
    pub frames: RequestFrames,
    pub policy: CutoffPolicy,
    /// The latency budget: at this instant the request gets its best answer so far.
    pub deadline: Option<Instant>,
    /// Report the confidence after every timestep.
    pub record_confidences: bool,
    /// Receives the prediction after every timestep, for streaming APIs.
    pub partials: Option<tokio::sync::mpsc::UnboundedSender<Partial>>,
    /// Higher classes are admitted first and refused last under overload.
    pub priority: Priority,
}

/// The prediction after one timestep, sent while the request is still stepping.
#[derive(Debug, Clone)]
pub struct Partial {
    pub timestep: usize,
    pub class_index: usize,
    pub confidence: f64,
    pub uncertainty: Option<f64>,
    pub probabilities: Vec<f64>,
    /// The request stops at this timestep (its answer follows). Requests that stop between steps
    /// (deadline, end of a stream) get their answer after a partial not marked last.
    pub last: bool,
}

#[derive(Debug, Clone)]
pub struct AnytimeAnswer {
    pub class_index: usize,
    pub confidence: f64,
    /// For ensembles: the members' variance on the chosen class.
    pub uncertainty: Option<f64>,
    pub probabilities: Vec<f64>,
    pub timesteps: usize,
    pub exit_reason: ExitReason,
    /// The confidence threshold this request ran with.
    pub threshold: f64,
    /// The accuracy-drop budget whose calibrated threshold it was, when the request gave one.
    pub max_accuracy_drop: Option<f64>,
    /// Synaptic operations spent on this request (all members, all timesteps), when the model
    /// reports them.
    pub synaptic_ops: Option<f64>,
    pub confidences: Option<Vec<f64>>,
    /// Time from admission into a batch slot to the answer (queue excluded).
    pub compute_time: Duration,
    /// Time spent waiting for a slot.
    pub queue_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the model's queue is full ({0} requests waiting); retry later")]
    Overloaded(usize),
    /// The queue was full and a request of a higher priority class took this one's place.
    #[error(
        "the model's queue is full ({capacity} requests waiting) and a request of a higher priority took this \
         one's place (priority {priority}, the lowest waiting); retry later"
    )]
    Displaced { priority: u8, capacity: usize },
    /// Refused at admission: at the measured step time the budget cannot cover `min_timesteps`.
    #[error(
        "the latency budget cannot be met: {left_ms:.3} ms left, and {min_timesteps} timestep(s) take about \
         {needed_ms:.3} ms at the current batch size (refused before taking a batch slot)"
    )]
    BudgetTooShort { left_ms: f64, needed_ms: f64, min_timesteps: usize },
    #[error("the model's scheduler has stopped")]
    Stopped,
    #[error("the latency budget ran out before the first timestep (waited {waited_ms:.3} ms for a slot)")]
    DeadlineBeforeFirstStep { waited_ms: f64 },
    #[error("the frame stream ended before its first frame")]
    NoFrames,
    /// The server's shutdown grace period ran out before this request finished.
    #[error("the server shut down before this request finished (its shutdown grace period ran out); retry elsewhere")]
    ShutDown,
    #[error(transparent)]
    Step(#[from] StepError),
}

impl EngineError {
    /// A stable, machine-readable name (the API's error code).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Overloaded(_) | Self::Displaced { .. } => "overloaded",
            Self::BudgetTooShort { .. } => "deadline_exceeded",
            Self::Stopped => "unavailable",
            Self::DeadlineBeforeFirstStep { .. } => "deadline_exceeded",
            Self::NoFrames => "no_frames",
            Self::ShutDown => "shutting_down",
            Self::Step(_) => "inference_failed",
        }
    }
}

/// Why a model's engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot reserve the batch slots: {0}")]
    Slots(#[from] StepError),
    #[error("cannot start the scheduler thread: {0}")]
    Thread(std::io::Error),
    #[error("the warm-up step failed: {0}")]
    Warmup(StepError),
}

/// How a model's scheduler batches and admits.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Batch slots: requests stepped together in one timestep.
    pub max_batch: usize,
    /// When the scheduler is idle and a request arrives, how long to wait for more to fill the
    /// batch before the first step. Zero steps at once.
    pub batch_wait: Duration,
    /// Requests that may wait for a slot; beyond this a request is refused as overload (or, if a
    /// lower priority class is waiting, takes the place of its newest request).
    pub queue_capacity: usize,
    /// In which order waiting requests get a slot.
    pub admission: Admission,
    /// Refuse at admission a request whose budget cannot cover its `min_timesteps` at the measured
    /// step time, instead of letting it take a slot it cannot use in time.
    pub early_refusal: bool,
    /// Batch sizes stepped once at start-up (and at each reload) before the model is served.
    pub warmup: WarmupBatches,
}

/// The server's own defaults (`spikeserve serve --help`), for engines built without it.
impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            batch_wait: Duration::ZERO,
            queue_capacity: 256,
            admission: Admission::Deadline,
            early_refusal: true,
            warmup: WarmupBatches::PowersOfTwo,
        }
    }
}

pub(crate) struct Job {
    request: AnytimeRequest,
    enqueued: Instant,
    /// Arrival order, the last tie-breaker of admission.
    sequence: u64,
    reply: oneshot::Sender<Result<AnytimeAnswer, EngineError>>,
}

/// What the scheduler's channel carries: requests, wake-ups when a stream's frames arrive, and the
/// end of a shutdown's grace period.
#[derive(Debug)]
pub(crate) enum Message {
    Job(Box<Job>),
    Wake,
    /// Answer every request queued or stepping with [`EngineError::ShutDown`].
    Abort,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("enqueued", &self.enqueued).finish_non_exhaustive()
    }
}

type AnswerReceiver = oneshot::Receiver<Result<AnytimeAnswer, EngineError>>;

/// A handle to one model's scheduler thread. Cheap to clone; the scheduler stops when every handle
/// is gone and its last request is answered.
#[derive(Clone)]
pub struct Engine {
    messages: Sender<Message>,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    frame_len: usize,
    sequence: Arc<std::sync::atomic::AtomicU64>,
}

impl Engine {
    /// Starts the scheduler thread that owns `sessions`: an ensemble's members, stepped in
    /// lockstep, or a single model's one session.
    pub fn start<S: Stepper>(name: &str, sessions: Vec<S>, config: EngineConfig) -> Result<Self, StartError> {
        let config = EngineConfig { max_batch: config.max_batch.max(1), ..config };
        let frame_len = sessions.first().map_or(0, Stepper::frame_len);
        let (messages, receiver) = mpsc::channel();
        let stats =
            Arc::new(EngineStats::with_metrics(crate::metrics::ModelMetrics::new(name, config.max_batch)));
        let mut scheduler = scheduler::Scheduler::new(sessions, config, stats.clone())?;
        // Before the engine is handed out (and so before the model is ready): ONNX Runtime's first
        // run at each batch size is slow, and the first clients should not pay for it.
        let warm = scheduler.warm_up(&config.warmup.sizes(config.max_batch)).map_err(StartError::Warmup)?;
        if !warm.is_zero() {
            tracing::info!(model = name, seconds = warm.as_secs_f64(), "warmed up");
            crate::metrics::warmup(name, warm);
        }
        std::thread::Builder::new()
            .name(format!("step-{name}"))
            .spawn(move || scheduler.run(receiver))
            .map_err(StartError::Thread)?;
        Ok(Self { messages, config, stats, frame_len, sequence: Arc::default() })
    }

    /// Queues `request` and waits for its answer. Dropping the future cancels the request: it
    /// leaves its slot at the next timestep.
    pub async fn infer(&self, request: AnytimeRequest) -> Result<AnytimeAnswer, EngineError> {
        let answer = self.submit(request)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }

    /// Queues `request` and returns its pending answer at once, so that a refusal (overload) is
    /// known before a caller commits to a streamed response. Dropping the answer cancels.
    pub fn enqueue(&self, request: AnytimeRequest) -> Result<PendingAnswer, EngineError> {
        Ok(PendingAnswer(self.submit(request)?))
    }

    /// Starts a request whose frames arrive over time: push them through the returned sender (at
    /// most `policy.max_timesteps`), and await the answer. The request steps each frame as it
    /// comes; the budget keeps running while it waits for one.
    pub fn open_stream(
        &self,
        policy: CutoffPolicy,
        deadline: Option<Instant>,
        priority: Priority,
        record_confidences: bool,
        partials: Option<tokio::sync::mpsc::UnboundedSender<Partial>>,
    ) -> Result<(FrameSender, PendingAnswer), EngineError> {
        let buffer = Arc::new(FrameBuffer::default());
        let sender =
            FrameSender::new(buffer.clone(), self.messages.clone(), self.frame_len, policy.max_timesteps);
        let request = AnytimeRequest {
            frames: RequestFrames::Stream(buffer),
            policy,
            deadline,
            record_confidences,
            partials,
            priority,
        };
        let answer = self.submit(request)?;
        Ok((sender, PendingAnswer(answer)))
    }

    fn submit(&self, request: AnytimeRequest) -> Result<AnswerReceiver, EngineError> {
        let priority = request.priority;
        // A full queue still takes a request when a lower class waits: the scheduler then refuses
        // the newest request of the lowest class waiting (`EngineError::Displaced`).
        if !self.stats.try_enqueue(self.config.queue_capacity, priority) {
            self.stats.refused(priority, request.deadline.is_some());
            return Err(EngineError::Overloaded(self.config.queue_capacity));
        }
        let (reply, answer) = oneshot::channel();
        let sequence = self.sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let job = Job { request, enqueued: Instant::now(), sequence, reply };
        if self.messages.send(Message::Job(Box::new(job))).is_err() {
            self.stats.dequeued(priority);
            return Err(EngineError::Stopped);
        }
        Ok(answer)
    }

    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Requests waiting for a slot or holding one now (open sessions included).
    pub fn in_flight(&self) -> usize {
        let stats = self.stats.snapshot();
        stats.queued + stats.active_slots
    }

    /// Ends every request still queued or stepping with [`EngineError::ShutDown`], so that each
    /// caller gets a status rather than a broken connection when the server's grace period runs
    /// out. Requests submitted afterwards are served as usual.
    pub fn abort_in_flight(&self) {
        // A send fails only when the scheduler has stopped, and then nothing is in flight.
        let _ = self.messages.send(Message::Abort);
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

/// The answer of a streamed request, once it is done. Dropping it cancels the request.
#[derive(Debug)]
pub struct PendingAnswer(AnswerReceiver);

impl PendingAnswer {
    pub async fn wait(self) -> Result<AnytimeAnswer, EngineError> {
        self.0.await.map_err(|_| EngineError::Stopped)?
    }
}
