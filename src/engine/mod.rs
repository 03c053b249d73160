//! The anytime engine: one scheduler per model steps its requests with continuous batching at the
//! timestep and decides, every timestep, which requests stop and why.
//!
//! It steps whatever implements [`Stepper`] (the backend's ONNX Runtime session in the server, a
//! scripted stepper in the tests) and never imports the backend: the model layer puts the two
//! together.

pub mod admission;
pub mod exit_policy;
#[cfg(test)]
mod fake_stepper;
pub mod frames;
mod idle;
pub mod policy;
pub mod prediction;
pub mod request;
mod scheduler;
pub mod stats;
pub mod stepper;

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

pub use admission::{Admission, Priority, WarmupBatches};
pub use frames::{FrameSender, StreamError};
// The frames are the input layer's; re-exported where the engine's callers have always found them.
pub use crate::input::{FrameBuffer, RequestFrames};
pub use exit_policy::{Dense, ExitRule, Feature, PolicyKind, StopScore};
pub use policy::{CutoffPolicy, ExitReason};
pub use prediction::{EnsemblePrediction, RunningPrediction};
use request::{AnswerReceiver, Job, Message};
pub use request::{
    AnytimeAnswer, AnytimeRequest, EngineConfig, EngineError, Partial, StartError, TRACE_TARGET,
};
pub use stats::{EngineStats, StatsSnapshot};
pub use stepper::{StepError, Stepper};

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
        self.open_traced_stream(policy, deadline, priority, record_confidences, partials, None)
    }

    /// [`Engine::open_stream`] for a caller whose trace is exported (see [`AnytimeRequest::trace`]).
    pub fn open_traced_stream(
        &self,
        policy: CutoffPolicy,
        deadline: Option<Instant>,
        priority: Priority,
        record_confidences: bool,
        partials: Option<tokio::sync::mpsc::UnboundedSender<Partial>>,
        trace: Option<tracing::Span>,
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
            trace,
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
        let queued = request
            .trace
            .as_ref()
            .map(|span| tracing::trace_span!(target: TRACE_TARGET, parent: span, "queued"));
        let job = Job { request, enqueued: Instant::now(), sequence, reply, queued };
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

#[cfg(test)]
mod tests {
    use super::fake_stepper::{FakeStepper, Script};
    use super::*;

    /// The whole engine (thread, channel, handle) on a scripted stepper: unsure, then class 1.
    #[test]
    fn an_engine_on_a_scripted_stepper_answers_through_its_handle() {
        let script: Script =
            Arc::new(|_: &[f32], t: usize| if t == 0 { vec![0.0; 3] } else { vec![0.0, 20.0, 0.0] });
        let config = EngineConfig { max_batch: 2, warmup: WarmupBatches::Off, ..EngineConfig::default() };
        let engine = Engine::start("scripted", vec![FakeStepper::new(4, 3, script)], config).expect("starts");
        let request = AnytimeRequest {
            frames: RequestFrames::Static(vec![1.0; 4]),
            policy: CutoffPolicy::cutoff(0.99, 1, 8),
            deadline: None,
            record_confidences: false,
            partials: None,
            priority: Priority::DEFAULT,
            trace: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let answer = runtime.block_on(engine.infer(request)).expect("answered");
        assert_eq!((answer.exit_reason, answer.timesteps, answer.class_index), (ExitReason::Confident, 2, 1));
        assert_eq!(engine.stats().exits.confident, 1);
    }
}
