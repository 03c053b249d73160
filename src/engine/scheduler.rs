//! The scheduler: continuous batching at the timestep (the SNN analogue of an LLM server's
//! iteration-level scheduling).
//!
//! Every timestep it admits waiting requests into free batch slots, retires those that were
//! cancelled or ran out of time, runs one batched step over the requests left, whatever timestep
//! each is at, and retires those whose cutoff policy says stop. Slots are kept dense (rows
//! `0..n`): a retiring request's slot is filled by moving the last one into it, so each step feeds
//! ONNX Runtime the first `n` rows of preallocated buffers with no gathering of states.
//!
//! It runs on its own OS thread so that inference never blocks the async runtime.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{AnytimeAnswer, AnytimeRequest, EngineConfig, EngineError, EngineStats, ExitReason, Job};
use crate::backend::StepSession;
use crate::engine::EnsemblePrediction;

type Reply = oneshot::Sender<Result<AnytimeAnswer, EngineError>>;

/// How long an idle scheduler polls for the next request before it sleeps. Waking a sleeping
/// thread costs tens of microseconds, as much as a whole timestep of a small model; a client that
/// sends its next request right after an answer finds the scheduler still awake.
const IDLE_SPIN: Duration = Duration::from_micros(200);

/// Waits for the next request: polls for `IDLE_SPIN`, then blocks. `None` once every handle is gone.
fn wait_for_job(jobs: &Receiver<Job>) -> Option<Job> {
    let spin_until = Instant::now() + IDLE_SPIN;
    while Instant::now() < spin_until {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
    jobs.recv().ok()
}

/// A request holding a batch slot.
struct Slot {
    request: AnytimeRequest,
    reply: Reply,
    prediction: EnsemblePrediction,
    confidences: Option<Vec<f64>>,
    admitted: Instant,
    queue_time: std::time::Duration,
}

impl Slot {
    fn answer(self, exit_reason: ExitReason) -> (Reply, AnytimeAnswer) {
        let answer = AnytimeAnswer {
            class_index: self.prediction.best_class(),
            confidence: self.prediction.confidence(),
            uncertainty: (self.prediction.members() > 1).then(|| self.prediction.variance()),
            probabilities: self.prediction.probabilities().to_vec(),
            timesteps: self.prediction.timesteps(),
            exit_reason,
            confidences: self.confidences,
            compute_time: self.admitted.elapsed(),
            queue_time: self.queue_time,
        };
        (self.reply, answer)
    }
}

/// One member of the model (a single model has one) with its slot-indexed state buffers.
struct Member {
    session: StepSession,
    /// One buffer per state tensor, `max_batch` rows; row `i` belongs to `slots[i]`.
    states: Vec<Vec<f32>>,
    state_lens: Vec<usize>,
    logits: Vec<f32>,
}

impl Member {
    fn new(session: StepSession, slots: usize) -> Self {
        let contract = session.contract();
        let state_lens: Vec<usize> = contract.states.iter().map(|s| s.len()).collect();
        let states = state_lens.iter().map(|len| vec![0.0; len * slots]).collect();
        let logits = Vec::with_capacity(contract.num_classes * slots);
        Self { session, states, state_lens, logits }
    }

    fn zero_row(&mut self, row: usize) {
        for (buffer, len) in self.states.iter_mut().zip(&self.state_lens) {
            buffer[row * len..(row + 1) * len].fill(0.0);
        }
    }

    fn move_row(&mut self, from: usize, to: usize) {
        for (buffer, len) in self.states.iter_mut().zip(&self.state_lens) {
            buffer.copy_within(from * len..(from + 1) * len, to * len);
        }
    }
}

pub(super) struct Scheduler {
    /// The members, stepped in lockstep on the same frames (K = 1 for a single model).
    members: Vec<Member>,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    slots: Vec<Slot>,
    /// This timestep's frames, row `i` for `slots[i]`.
    frames: Vec<f32>,
    frame_len: usize,
    classes: usize,
}

impl Scheduler {
    /// `sessions` are an ensemble's members (one for a single model); the registry has checked
    /// that they agree on frames and classes.
    pub(super) fn new(sessions: Vec<StepSession>, config: EngineConfig, stats: Arc<EngineStats>) -> Self {
        let slots = config.max_batch;
        let (frame_len, classes) =
            sessions.first().map_or((0, 0), |s| (s.contract().frame_len(), s.contract().num_classes));
        Self {
            members: sessions.into_iter().map(|s| Member::new(s, slots)).collect(),
            config,
            stats,
            slots: Vec::with_capacity(slots),
            frames: vec![0.0; frame_len * slots],
            frame_len,
            classes,
        }
    }

    pub(super) fn run(mut self, jobs: Receiver<Job>) {
        let mut open = true;
        loop {
            if self.slots.is_empty() {
                if !open {
                    break;
                }
                match wait_for_job(&jobs) {
                    Some(job) => self.admit(job),
                    None => break,
                }
                open = self.fill_batch(&jobs);
            }
            open = open && self.admit_waiting(&jobs);
            self.retire_before_step(Instant::now());
            if !self.slots.is_empty() {
                self.step();
            }
        }
        tracing::debug!("scheduler stopping: no handles left and no requests in flight");
    }

    /// After an idle period, waits up to `batch_wait` for more requests before the first step.
    fn fill_batch(&mut self, jobs: &Receiver<Job>) -> bool {
        let until = Instant::now() + self.config.batch_wait;
        while self.slots.len() < self.config.max_batch {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match jobs.recv_timeout(left) {
                Ok(job) => self.admit(job),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        true
    }

    /// Moves waiting requests into free slots without blocking. Returns false once every handle is gone.
    fn admit_waiting(&mut self, jobs: &Receiver<Job>) -> bool {
        while self.slots.len() < self.config.max_batch {
            match jobs.try_recv() {
                Ok(job) => self.admit(job),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn admit(&mut self, job: Job) {
        self.stats.dequeued();
        if job.reply.is_closed() {
            // The caller left while it waited: don't spend a step on it.
            self.stats.exited(ExitReason::Cancelled);
            return;
        }
        let row = self.slots.len();
        self.members.iter_mut().for_each(|m| m.zero_row(row));
        let policy = job.request.policy;
        let record = job.request.record_confidences;
        self.slots.push(Slot {
            prediction: EnsemblePrediction::new(self.members.len(), self.classes),
            confidences: record.then(|| Vec::with_capacity(policy.max_timesteps)),
            request: job.request,
            reply: job.reply,
            admitted: Instant::now(),
            queue_time: job.enqueued.elapsed(),
        });
        self.stats.set_active_slots(self.slots.len());
    }

    /// Frees slot `row` by moving the last slot (and its state rows) into it.
    fn remove(&mut self, row: usize) -> Slot {
        let last = self.slots.len() - 1;
        if row != last {
            self.members.iter_mut().for_each(|m| m.move_row(last, row));
        }
        let slot = self.slots.swap_remove(row);
        self.stats.set_active_slots(self.slots.len());
        slot
    }

    fn finish(&mut self, row: usize, reason: ExitReason) {
        let slot = self.remove(row);
        self.stats.exited(reason);
        let (reply, answer) = slot.answer(reason);
        // An error here means the caller left during this very step; nothing to do.
        let _ = reply.send(Ok(answer));
    }

    /// Retires cancelled requests and those whose deadline has passed. Rows are visited from the
    /// last down, so the slot moved into a freed row has already been visited.
    fn retire_before_step(&mut self, now: Instant) {
        for row in (0..self.slots.len()).rev() {
            let slot = &self.slots[row];
            if slot.reply.is_closed() {
                self.remove(row);
                self.stats.exited(ExitReason::Cancelled);
            } else if slot.request.deadline.is_some_and(|deadline| now >= deadline) {
                if slot.prediction.timesteps() == 0 {
                    let slot = self.remove(row);
                    self.stats.failed();
                    let waited_ms = slot.queue_time.as_secs_f64() * 1e3;
                    let _ = slot.reply.send(Err(EngineError::DeadlineBeforeFirstStep { waited_ms }));
                } else {
                    self.finish(row, ExitReason::Deadline);
                }
            }
        }
    }

    /// One batched timestep over every slot, then the exit decisions.
    fn step(&mut self) {
        let batch = self.slots.len();
        let frame_len = self.frame_len;
        for (row, slot) in self.slots.iter().enumerate() {
            let frame = slot.request.frames.frame(slot.prediction.timesteps(), frame_len);
            self.frames[row * frame_len..(row + 1) * frame_len].copy_from_slice(frame);
        }
        let frames = &self.frames[..batch * frame_len];
        let stepped = self
            .members
            .iter_mut()
            .try_for_each(|m| m.session.step(batch, frames, &mut m.states, &mut m.logits));
        if let Err(error) = stepped {
            tracing::error!(%error, batch, "step failed; failing every request in the batch");
            while let Some(slot) = self.slots.pop() {
                self.stats.failed();
                let _ = slot.reply.send(Err(EngineError::Step(error.clone())));
            }
            self.stats.set_active_slots(0);
            return;
        }
        self.stats.stepped(batch);
        let classes = self.classes;
        for row in (0..batch).rev() {
            let slot = &mut self.slots[row];
            for (k, member) in self.members.iter().enumerate() {
                slot.prediction.add(k, &member.logits[row * classes..(row + 1) * classes]);
            }
            let confidence = slot.prediction.combine();
            if let Some(c) = slot.confidences.as_mut() {
                c.push(confidence);
            }
            let variance = slot.prediction.variance();
            if let Some(reason) =
                slot.request.policy.decide(slot.prediction.timesteps(), confidence, variance)
            {
                self.finish(row, reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Drives the scheduler by hand, with the real ONNX Runtime and the shipped digits model, so
    //! that deadlines and cancellation are tested without depending on how fast a step runs.

    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::backend::OrtRuntime;
    use crate::engine::{CutoffPolicy, RequestFrames};
    use crate::model::ModelContract;

    /// ONNX Runtime allows one environment per process, so the tests share it.
    fn runtime() -> &'static OrtRuntime {
        static RUNTIME: std::sync::OnceLock<OrtRuntime> = std::sync::OnceLock::new();
        RUNTIME.get_or_init(|| {
            let library =
                std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH (run the tests with `make test`)");
            OrtRuntime::load(Some(Path::new(&library))).expect("ONNX Runtime loads")
        })
    }

    fn digits_session() -> StepSession {
        let runtime = runtime();
        let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/digits/model.onnx");
        let (session, signature) =
            StepSession::open(runtime, &model, 1, crate::backend::Device::Cpu).expect("model opens");
        let contract = ModelContract::from_signature(&signature).expect("valid contract");
        StepSession::new(session, contract)
    }

    fn scheduler(max_batch: usize) -> Scheduler {
        let config = EngineConfig { max_batch, batch_wait: Duration::ZERO, queue_capacity: 8 };
        Scheduler::new(vec![digits_session()], config, Arc::new(EngineStats::default()))
    }

    type Answer = oneshot::Receiver<Result<AnytimeAnswer, EngineError>>;

    fn job(deadline: Option<Instant>) -> (Job, Answer) {
        let (reply, answer) = oneshot::channel();
        let request = AnytimeRequest {
            frames: RequestFrames::Static(vec![8.0; 64]),
            policy: CutoffPolicy { threshold: 1.0, min_timesteps: 1, max_timesteps: 8, max_variance: None },
            deadline,
            record_confidences: true,
        };
        (Job { request, enqueued: Instant::now(), reply }, answer)
    }

    fn received(mut answer: Answer) -> Result<AnytimeAnswer, EngineError> {
        answer.try_recv().expect("an answer was sent")
    }

    #[test]
    fn a_deadline_between_steps_returns_the_best_answer_so_far() {
        let mut s = scheduler(4);
        let start = Instant::now();
        let (j, answer) = job(Some(start + Duration::from_secs(3600)));
        s.stats.enqueued();
        s.admit(j);
        s.step();
        s.step();
        s.retire_before_step(start + Duration::from_secs(3601));
        assert!(s.slots.is_empty());
        let answer = received(answer).expect("answered");
        assert_eq!(answer.exit_reason, ExitReason::Deadline);
        assert_eq!(answer.timesteps, 2);
        assert_eq!(answer.confidences.map(|c| c.len()), Some(2));
        assert_eq!(s.stats.snapshot().exits.deadline, 1);
    }

    #[test]
    fn a_deadline_before_the_first_step_is_an_error() {
        let mut s = scheduler(4);
        let (j, answer) = job(Some(Instant::now()));
        s.stats.enqueued();
        s.admit(j);
        s.retire_before_step(Instant::now());
        assert!(matches!(received(answer), Err(EngineError::DeadlineBeforeFirstStep { .. })));
        assert_eq!(s.stats.snapshot().active_slots, 0);
        assert_eq!(s.stats.snapshot().failed, 1);
    }

    #[test]
    fn a_cancelled_request_leaves_at_the_next_timestep_and_its_neighbours_keep_their_state() {
        let mut s = scheduler(4);
        let (a, answer_a) = job(None);
        let (b, answer_b) = job(None);
        let (c, answer_c) = job(None);
        for j in [a, b, c] {
            s.stats.enqueued();
            s.admit(j);
        }
        s.step();
        drop(answer_a); // the caller in row 0 goes away
        s.retire_before_step(Instant::now());
        assert_eq!(s.slots.len(), 2);
        assert_eq!(s.stats.snapshot().exits.cancelled, 1);
        // A fresh request joins mid-flight; everyone steps to the end.
        let (d, answer_d) = job(None);
        s.stats.enqueued();
        s.admit(d);
        for _ in 0..8 {
            s.retire_before_step(Instant::now());
            if !s.slots.is_empty() {
                s.step();
            }
        }
        assert!(s.slots.is_empty());
        assert_eq!(s.stats.snapshot().active_slots, 0);
        let (b, c, d) =
            (received(answer_b).expect("b"), received(answer_c).expect("c"), received(answer_d).expect("d"));
        // Same input, so the same answer, whoever shared the batch and whichever row moved.
        for other in [&c, &d] {
            assert_eq!(other.timesteps, 8);
            for (x, y) in b.probabilities.iter().zip(&other.probabilities) {
                assert!((x - y).abs() < 1e-5, "{x} vs {y}");
            }
        }
        assert_eq!(b.exit_reason, ExitReason::MaxTimesteps);
    }
}
