//! What goes in and out of an engine: the request, its partials and answer, the errors, the
//! engine's configuration, and the messages its scheduler thread receives. Shared by the handle,
//! the scheduler and the stats, so it sits below them all.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::admission::{Admission, Priority, WarmupBatches};
use super::exit_policy::PolicyKind;
use super::policy::{CutoffPolicy, ExitReason};
use super::stepper::StepError;
use crate::input::RequestFrames;

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
    /// The caller's span, only when its trace is exported: the scheduler then records the request's
    /// wait for a slot (a `queued` span) and each timestep batch it rides in (a `step` event) under
    /// [`TRACE_TARGET`]. `None` for every other request, whose steps then pay nothing for tracing.
    pub trace: Option<tracing::Span>,
}

/// The target of the spans and events the engine records on a traced request (see
/// [`AnytimeRequest::trace`]): TRACE level, so that log lines never carry them unless asked for.
pub const TRACE_TARGET: &str = "spikeserve::trace";

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
    /// The exit policy that ran.
    pub policy: PolicyKind,
    /// The guarantee level of the calibration row that served it, when it was a guaranteed one.
    pub guarantee: Option<f64>,
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
    /// How long an idle scheduler may poll for its next request before it sleeps; it polls only
    /// with a second core to spare and while requests have been arriving within this window.
    pub idle_poll: Duration,
    /// Requests that may wait for a slot; beyond this a request is refused as overload (or, if a
    /// lower priority class is waiting, takes the place of its newest request).
    pub queue_capacity: usize,
    /// In which order waiting requests get a slot.
    pub admission: Admission,
    /// Refuse at admission a request whose budget cannot cover its `min_timesteps` at the measured
    /// step time, instead of letting it take a slot it cannot use in time.
    pub early_refusal: bool,
    /// With deadline-aware admission: stop adding rows to a batch where its step would become too
    /// slow for a budgeted request that can still finish (off by default: every free slot is
    /// filled).
    pub budget_batch_limit: bool,
    /// Batch sizes stepped once at start-up (and at each reload) before the model is served.
    pub warmup: WarmupBatches,
}

/// The server's own defaults (`spikeserve serve --help`), for engines built without it.
impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            batch_wait: Duration::ZERO,
            idle_poll: Duration::from_micros(200),
            queue_capacity: 256,
            admission: Admission::Deadline,
            early_refusal: true,
            budget_batch_limit: false,
            warmup: WarmupBatches::PowersOfTwo,
        }
    }
}

pub(crate) struct Job {
    pub(crate) request: AnytimeRequest,
    pub(crate) enqueued: Instant,
    /// Arrival order, the last tie-breaker of admission.
    pub(crate) sequence: u64,
    pub(crate) reply: oneshot::Sender<Result<AnytimeAnswer, EngineError>>,
    /// A traced request's time waiting for a slot: the span ends when the job leaves the queue
    /// (admitted or refused), as it is dropped.
    pub(crate) queued: Option<tracing::Span>,
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

pub(crate) type AnswerReceiver = oneshot::Receiver<Result<AnytimeAnswer, EngineError>>;
