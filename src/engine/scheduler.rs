//! The scheduler: continuous batching at the timestep (the SNN analogue of an LLM server's
//! iteration-level scheduling).
//!
//! Every timestep it admits waiting requests into free batch slots, retires those that were
//! cancelled, ran out of time or ran out of streamed frames, runs one batched step over the
//! requests whose next frame is there, whatever timestep each is at, and retires those whose cutoff
//! policy says stop. Slots are kept dense and the ready ones first (rows `0..r`): a retiring
//! request's slot is filled by moving the last one into it, so each step feeds ONNX Runtime the
//! first `r` rows of preallocated buffers with no gathering of states.
//!
//! It runs on its own OS thread so that inference never blocks the async runtime.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::admission::{displace_first, Admission, Rank};
use super::idle::IdlePoll;
use super::policy::ExitReason;
use super::prediction::EnsemblePrediction;
use super::request::{
    AnytimeAnswer, AnytimeRequest, EngineConfig, EngineError, Job, Message, Partial, TRACE_TARGET,
};
use super::stats::EngineStats;
use super::stepper::{StepError, Stepper};
use crate::input::Readiness;
use crate::metrics::Outcome;

type Reply = oneshot::Sender<Result<AnytimeAnswer, EngineError>>;

/// While streams wait for frames, how often the scheduler looks for callers that went away (a
/// dropped answer does not wake it).
const STREAM_POLL: Duration = Duration::from_millis(20);

/// A request holding a batch slot.
struct Slot {
    request: AnytimeRequest,
    reply: Reply,
    prediction: EnsemblePrediction,
    confidences: Option<Vec<f64>>,
    /// A streamed request's frame for its next step, once it has arrived.
    next_frame: Option<Vec<f32>>,
    /// Synaptic operations so far, when the model reports them.
    synaptic_ops: Option<f64>,
    admitted: Instant,
    queue_time: Duration,
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
            threshold: self.request.policy.reported_threshold(self.prediction.timesteps()),
            max_accuracy_drop: self.request.policy.calibrated_for,
            policy: self.request.policy.policy,
            guarantee: self.request.policy.guarantee,
            synaptic_ops: self.synaptic_ops,
            confidences: self.confidences,
            compute_time: self.admitted.elapsed(),
            queue_time: self.queue_time,
        };
        (self.reply, answer)
    }

    fn readiness(&mut self) -> Readiness {
        self.request.frames.next_ready(&mut self.next_frame)
    }
}

pub(super) struct Scheduler<S> {
    /// The members, stepped in lockstep on the same frames (K = 1 for a single model).
    /// Each owns its slot-indexed frame, state and output buffers: row `i` belongs to `slots[i]`.
    members: Vec<S>,
    config: EngineConfig,
    stats: Arc<EngineStats>,
    slots: Vec<Slot>,
    /// Requests received and waiting for a free slot, in arrival order (admission picks from it
    /// by `config.admission`).
    pending: VecDeque<Job>,
    frame_len: usize,
    classes: usize,
    /// Measured time of one step, by batch size (index = batch size; `None` until measured):
    /// what early refusal and deadline-aware admission go by.
    step_time: Vec<Option<Duration>>,
    /// `step_time` with the gaps filled (see [`Scheduler::step_time_at`]).
    step_estimate: Vec<Option<Duration>>,
    /// Running mean of one step's time per row, over steps of any size: what the batch limit
    /// predicts a larger batch's step by. Unlike `step_time`, it is fresh whatever size the batch
    /// is held at (an entry for a size the limit keeps the batch below would never be measured
    /// again, and one slow measurement there would hold the batch small for good).
    row_time: Option<Duration>,
    /// Running mean of the timesteps answered requests used: how many steps a request is
    /// expected to need, for deadline-aware admission.
    mean_steps: Option<f64>,
    /// Whether to poll before sleeping when there is nothing to do (see [`IdlePoll`]).
    idle: IdlePoll,
}

/// How much a new step's time moves the running estimate at its batch size.
const STEP_TIME_WEIGHT: f64 = 0.2;

impl Job {
    fn rank(&self) -> Rank {
        Rank { priority: self.request.priority, deadline: self.request.deadline, sequence: self.sequence }
    }

    fn budgeted(&self) -> bool {
        self.request.deadline.is_some()
    }
}

/// What an error says about a request's outcome, for the per-class metrics.
fn outcome_of(error: &EngineError) -> Outcome {
    match error {
        EngineError::DeadlineBeforeFirstStep { .. } => Outcome::ExpiredInQueue,
        EngineError::BudgetTooShort { .. } => Outcome::RefusedAtAdmission,
        EngineError::Overloaded(_) | EngineError::Displaced { .. } => Outcome::Overloaded,
        EngineError::Stopped | EngineError::ShutDown | EngineError::NoFrames | EngineError::Step(_) => {
            Outcome::Failed
        }
    }
}

impl<S: Stepper> Scheduler<S> {
    /// `sessions` are an ensemble's members (one for a single model); the registry has checked
    /// that they agree on frames and classes.
    pub(super) fn new(
        mut sessions: Vec<S>,
        config: EngineConfig,
        stats: Arc<EngineStats>,
    ) -> Result<Self, StepError> {
        let slots = config.max_batch;
        let (frame_len, classes) = sessions.first().map_or((0, 0), |s| (s.frame_len(), s.classes()));
        for session in &mut sessions {
            session.reserve_slots(slots)?;
        }
        Ok(Self {
            members: sessions,
            config,
            stats,
            slots: Vec::with_capacity(slots),
            pending: VecDeque::new(),
            frame_len,
            classes,
            step_time: vec![None; slots + 1],
            step_estimate: vec![None; slots + 1],
            row_time: None,
            mean_steps: None,
            idle: IdlePoll::for_this_process(config.idle_poll),
        })
    }

    /// Steps each of `sizes` once on zero frames (then clears the rows), so that ONNX Runtime's
    /// slow first run at each batch size happens before the first request, and the step-time
    /// table starts measured. Returns the time it took.
    pub(super) fn warm_up(&mut self, sizes: &[usize]) -> Result<Duration, StepError> {
        let started = Instant::now();
        for &batch in sizes {
            let batch = batch.clamp(1, self.config.max_batch);
            for member in &mut self.members {
                for row in 0..batch {
                    member.zero_row(row);
                    member.frame_mut(row)?.fill(0.0);
                }
            }
            // The first run pays for allocations; the second is what a step costs.
            for run in 0..2 {
                let step_started = Instant::now();
                self.members.iter_mut().try_for_each(|m| m.step(batch, batch))?;
                if run == 1 {
                    self.record_step_time(batch, step_started.elapsed());
                }
            }
            for member in &mut self.members {
                (0..batch).for_each(|row| member.zero_row(row));
            }
        }
        Ok(if sizes.is_empty() { Duration::ZERO } else { started.elapsed() })
    }

    fn record_step_time(&mut self, batch: usize, took: Duration) {
        if batch > 0 {
            self.row_time = Some(blend(self.row_time, took / batch as u32));
        }
        if let Some(entry) = self.step_time.get_mut(batch) {
            *entry = Some(blend(*entry, took));
            self.update_step_estimate();
        }
    }

    /// The measured time of one step at `batch` rows: at that size, else the nearest larger size
    /// measured (conservative), else the largest smaller one; `None` before any step. A table
    /// lookup: admission asks for every waiting request.
    fn step_time_at(&self, batch: usize) -> Option<Duration> {
        let last = self.step_estimate.len().saturating_sub(1);
        self.step_estimate.get(batch.clamp(1, last.max(1))).copied().flatten()
    }

    /// Refills `step_estimate` from `step_time` (after each measurement).
    fn update_step_estimate(&mut self) {
        let mut larger = None;
        for batch in (0..self.step_time.len()).rev() {
            larger = self.step_time[batch].or(larger);
            self.step_estimate[batch] = larger;
        }
        let mut smaller = None;
        for batch in 0..self.step_time.len() {
            smaller = self.step_time[batch].or(smaller);
            if self.step_estimate[batch].is_none() {
                self.step_estimate[batch] = smaller;
            }
        }
    }

    /// `Some(error)` when `request`'s budget cannot cover its `min_timesteps` at the step time
    /// measured for `batch` rows (early refusal on, a budget given, a step time known).
    fn too_late(&self, request: &AnytimeRequest, batch: usize, now: Instant) -> Option<EngineError> {
        if !self.config.early_refusal {
            return None;
        }
        let deadline = request.deadline?;
        if now >= deadline {
            // Already out of time: the expiry path says so (`DeadlineBeforeFirstStep`).
            return None;
        }
        let needed = self.step_time_at(batch)?.mul_f64(request.policy.min_timesteps as f64);
        let left = deadline.saturating_duration_since(now);
        (left < needed).then_some(EngineError::BudgetTooShort {
            left_ms: left.as_secs_f64() * 1e3,
            needed_ms: needed.as_secs_f64() * 1e3,
            min_timesteps: request.policy.min_timesteps,
        })
    }

    /// Refuses a job that never got a slot, with `error`. One displaced from a full queue counts
    /// as refused for the full queue (as one turned away at the door), anything else as failed.
    fn refuse_waiting(&self, job: Job, error: EngineError) {
        self.stats.dequeued(job.request.priority);
        if matches!(error, EngineError::Displaced { .. }) {
            self.stats.refused(job.request.priority, job.budgeted());
        } else {
            self.count_failed(&job.request, &error);
        }
        let _ = job.reply.send(Err(error));
    }

    /// Counts `request` as failed with `error`, in the stats and the per-class outcomes.
    fn count_failed(&self, request: &AnytimeRequest, error: &EngineError) {
        self.stats.failed(error.code());
        self.stats.outcome(request.priority, request.deadline.is_some(), outcome_of(error));
    }

    pub(super) fn run(mut self, messages: Receiver<Message>) {
        let mut open = true;
        loop {
            open = self.receive(&messages, open);
            self.admit_pending();
            self.retire_before_step(Instant::now());
            let ready = self.ready_first();
            if ready > 0 {
                self.step(ready);
                continue;
            }
            if !open && self.slots.is_empty() && self.pending.is_empty() {
                break;
            }
            open = self.wait(&messages, open);
        }
        tracing::debug!("scheduler stopping: no handles left and no requests in flight");
    }

    /// Takes every message already sent, without blocking. Returns false once every handle is gone.
    fn receive(&mut self, messages: &Receiver<Message>, mut open: bool) -> bool {
        while open {
            match messages.try_recv() {
                Ok(message) => self.take(message),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        open
    }

    fn take(&mut self, message: Message) {
        match message {
            Message::Job(job) => {
                self.pending.push_back(*job);
                if self.pending.len() > self.config.queue_capacity {
                    self.displace();
                }
            }
            Message::Wake => {}
            Message::Abort => self.abort_all(),
        }
    }

    /// The queue is over capacity (a request of a higher class was let in): the newest request of
    /// the lowest class waiting gives up its place.
    fn displace(&mut self) {
        let lowest =
            self.pending.iter().enumerate().min_by(|(_, a), (_, b)| displace_first(&a.rank(), &b.rank()));
        let Some(index) = lowest.map(|(i, _)| i) else { return };
        if let Some(job) = self.pending.remove(index) {
            let error = EngineError::Displaced {
                priority: job.request.priority.get(),
                capacity: self.config.queue_capacity,
            };
            self.refuse_waiting(job, error);
        }
    }

    /// The server's grace period ran out: every request queued or stepping gets
    /// [`EngineError::ShutDown`], counted as failed.
    fn abort_all(&mut self) {
        let (stepping, waiting) = (self.slots.len(), self.pending.len());
        for row in (0..self.slots.len()).rev() {
            self.fail(row, EngineError::ShutDown);
        }
        while let Some(job) = self.pending.pop_front() {
            self.refuse_waiting(job, EngineError::ShutDown);
        }
        if stepping + waiting > 0 {
            tracing::warn!(
                stepping,
                waiting,
                "shutdown grace period over: requests ended with `shutting_down`"
            );
        }
    }

    /// Nothing can step: sleeps until a message arrives, the earliest deadline, or (while streams
    /// wait for frames) the next look for callers that left.
    fn wait(&mut self, messages: &Receiver<Message>, open: bool) -> bool {
        if !open {
            // Only streams without a sender left can be waiting; they are exhausted by now, so
            // this is a short pause before the next round retires them.
            std::thread::sleep(Duration::from_millis(1));
            return false;
        }
        let idle = self.slots.is_empty() && self.pending.is_empty();
        if idle {
            let idle_since = Instant::now();
            let message = wait_for_message(messages, self.idle.poll_for());
            self.idle.observe(idle_since.elapsed());
            match message {
                Some(message) => self.take(message),
                None => return false,
            }
            return self.fill_batch(messages);
        }
        let now = Instant::now();
        let earliest = self
            .slots
            .iter()
            .map(|s| s.request.deadline)
            .chain(self.pending.iter().map(|j| j.request.deadline))
            .flatten()
            .min();
        let mut timeout = STREAM_POLL;
        if let Some(deadline) = earliest {
            timeout = timeout.min(deadline.saturating_duration_since(now));
        }
        match messages.recv_timeout(timeout) {
            Ok(message) => {
                self.take(message);
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// After an idle period, waits up to `batch_wait` for more requests before the first step.
    fn fill_batch(&mut self, messages: &Receiver<Message>) -> bool {
        let until = Instant::now() + self.config.batch_wait;
        while self.pending.len() < self.config.max_batch {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match messages.recv_timeout(left) {
                Ok(message) => self.take(message),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        true
    }

    /// Fills free slots from the waiting requests. FIFO takes them by arrival. Deadline-aware
    /// admission takes them by class, then earliest deadline, then arrival, but first among those
    /// that can still finish within their budget at the expected number of steps: under overload,
    /// earliest-deadline-first alone would keep serving the requests with the least time left,
    /// which then miss (the "domino effect"); those wait instead, and are refused once their budget
    /// cannot cover even `min_timesteps`.
    ///
    /// With `budget_batch_limit`, deadline-aware admission also stops growing the batch where one
    /// more row would make the step too slow for a budgeted request that can still finish (one
    /// stepping, or the one being admitted): a step's time grows with its rows, so a full batch of
    /// loose requests would otherwise carry a tight one past its budget. The waiting requests take
    /// the slots at the next steps; the price is more, smaller steps (measured in BENCHMARKS.md).
    fn admit_pending(&mut self) {
        let now = Instant::now();
        let limit_batch = self.config.budget_batch_limit;
        let mut allowance = if limit_batch { self.step_allowance(now) } else { None };
        while self.slots.len() < self.config.max_batch {
            let admission = self.config.admission;
            if admission == Admission::Fifo {
                // Arrival order is the queue's own order.
                let Some(job) = self.pending.pop_front() else { break };
                self.admit(job);
                continue;
            }
            let batch = self.slots.len() + 1;
            let key = |job: &Job| (!self.can_finish(&job.request, batch, now), job.rank());
            let next = self.pending.iter().enumerate().map(|(i, job)| (i, key(job))).min_by(
                |(_, (late_a, a)), (_, (late_b, b))| late_a.cmp(late_b).then_with(|| admission.order(a, b)),
            );
            let Some((index, (late, _))) = next else { break };
            if limit_batch {
                // A request that cannot finish anyway does not hold the batch back.
                let own = if late {
                    None
                } else {
                    self.pending.get(index).and_then(|j| self.afford(&j.request, 0, now))
                };
                let limit = min_duration(allowance, own);
                let too_slow =
                    limit.zip(self.predicted_step(batch)).is_some_and(|(limit, step)| step > limit);
                if too_slow && !self.slots.is_empty() {
                    break;
                }
                allowance = limit;
            }
            let Some(job) = self.pending.remove(index) else { break };
            self.admit(job);
        }
    }

    /// How many more steps `request` is expected to need after `done`: the running mean of steps
    /// answered requests used, within its own bounds, and at least one.
    fn expected_steps_left(&self, request: &AnytimeRequest, done: usize) -> f64 {
        let policy = &request.policy;
        let steps = self.mean_steps.unwrap_or(policy.min_timesteps as f64);
        let expected = steps.clamp(policy.min_timesteps as f64, policy.max_timesteps as f64);
        (expected - done as f64).max(1.0)
    }

    /// The longest step `request` (with `done` timesteps behind it) can afford and still finish
    /// its expected steps within its budget; `None` without a budget or once out of time.
    fn afford(&self, request: &AnytimeRequest, done: usize, now: Instant) -> Option<Duration> {
        let left = request.deadline?.checked_duration_since(now)?;
        Some(left.div_f64(self.expected_steps_left(request, done)))
    }

    /// A step's time at `batch` rows, for the batch limit: the recent time per row times the rows.
    /// A row costs more in a small batch (each step has a fixed part), so this errs on the long
    /// side when the batch grows.
    fn predicted_step(&self, batch: usize) -> Option<Duration> {
        self.row_time.map(|row| row * batch as u32)
    }

    /// The longest step every budgeted request now stepping can afford, counting only those
    /// that can still finish at the current batch's step time (one that cannot is not helped by
    /// a smaller batch and does not hold admission back). `None` when none constrains.
    fn step_allowance(&self, now: Instant) -> Option<Duration> {
        let current = self.predicted_step(self.slots.len().max(1))?;
        self.slots
            .iter()
            .filter_map(|slot| self.afford(&slot.request, slot.prediction.timesteps(), now))
            .filter(|&afford| afford >= current)
            .min()
    }

    /// Whether `request` can still finish within its budget, at the running mean of steps
    /// answered requests used (within its own bounds) and the step time measured for `batch`
    /// rows. True without a budget or before anything was measured.
    fn can_finish(&self, request: &AnytimeRequest, batch: usize, now: Instant) -> bool {
        let (Some(deadline), Some(step)) = (request.deadline, self.step_time_at(batch)) else { return true };
        deadline.saturating_duration_since(now) >= step.mul_f64(self.expected_steps_left(request, 0))
    }

    fn admit(&mut self, job: Job) {
        let priority = job.request.priority;
        if job.reply.is_closed() {
            // The caller left while it waited: don't spend a step on it.
            self.stats.dequeued(priority);
            self.stats.exited(ExitReason::Cancelled, job.request.policy.policy);
            self.stats.outcome(priority, job.budgeted(), Outcome::Cancelled);
            return;
        }
        if let Some(error) = self.too_late(&job.request, self.slots.len() + 1, Instant::now()) {
            // It could not use the slot in time: leave it to a request that can.
            self.refuse_waiting(job, error);
            return;
        }
        self.stats.waited(priority, job.enqueued.elapsed());
        // The wait ends here (a traced request's `queued` span closes as it is dropped).
        drop(job.queued);
        let row = self.slots.len();
        self.members.iter_mut().for_each(|m| m.zero_row(row));
        let max_timesteps = job.request.policy.max_timesteps;
        let record = job.request.record_confidences;
        self.slots.push(Slot {
            prediction: EnsemblePrediction::new(self.members.len(), self.classes),
            confidences: record.then(|| Vec::with_capacity(max_timesteps)),
            next_frame: None,
            synaptic_ops: None,
            request: job.request,
            reply: job.reply,
            admitted: Instant::now(),
            queue_time: job.enqueued.elapsed(),
        });
        // Slot first, queue second: `Engine::in_flight` never sees an admitted request in neither.
        self.stats.set_active_slots(self.slots.len());
        self.stats.dequeued(priority);
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
        self.stats.exited(reason, slot.request.policy.policy);
        let outcome = if reason == ExitReason::Deadline { Outcome::DeadlineExit } else { Outcome::Answered };
        self.stats.outcome(slot.request.priority, slot.request.deadline.is_some(), outcome);
        if let Some(span) = &slot.request.trace {
            tracing::trace!(
                target: TRACE_TARGET,
                parent: span,
                exit_reason = reason.as_str(),
                timesteps = slot.prediction.timesteps() as i64,
                "exit"
            );
        }
        let (reply, answer) = slot.answer(reason);
        let steps = answer.timesteps as f64;
        self.mean_steps =
            Some(self.mean_steps.map_or(steps, |m| m * (1.0 - STEP_TIME_WEIGHT) + steps * STEP_TIME_WEIGHT));
        self.stats.answered(&answer);
        // An error here means the caller left during this very step; nothing to do.
        let _ = reply.send(Ok(answer));
    }

    fn fail(&mut self, row: usize, error: EngineError) {
        let slot = self.remove(row);
        self.count_failed(&slot.request, &error);
        let _ = slot.reply.send(Err(error));
    }

    /// Retires cancelled requests, those whose deadline has passed and streams that ended. Rows
    /// are visited from the last down, so the slot moved into a freed row has been visited already.
    fn retire_before_step(&mut self, now: Instant) {
        for row in (0..self.slots.len()).rev() {
            let slot = &mut self.slots[row];
            let started = slot.prediction.timesteps() > 0;
            if slot.reply.is_closed() {
                let slot = self.remove(row);
                self.stats.exited(ExitReason::Cancelled, slot.request.policy.policy);
                self.stats.outcome(
                    slot.request.priority,
                    slot.request.deadline.is_some(),
                    Outcome::Cancelled,
                );
            } else if slot.request.deadline.is_some_and(|deadline| now >= deadline) {
                if started {
                    self.finish(row, ExitReason::Deadline);
                } else {
                    let waited_ms = slot.queue_time.as_secs_f64() * 1e3;
                    self.fail(row, EngineError::DeadlineBeforeFirstStep { waited_ms });
                }
            } else if slot.readiness() == Readiness::Exhausted {
                if started {
                    // The stream ended: like a sequence, its length is its last timestep.
                    self.finish(row, ExitReason::MaxTimesteps);
                } else {
                    self.fail(row, EngineError::NoFrames);
                }
            }
        }
        // Queued requests can run out of time or callers too, while every slot is busy; and one
        // whose budget can no longer cover its first timesteps is refused now rather than later.
        let batch = self.slots.len().max(1);
        let mut kept = VecDeque::with_capacity(self.pending.len());
        while let Some(job) = self.pending.pop_front() {
            if job.reply.is_closed() {
                self.stats.dequeued(job.request.priority);
                self.stats.exited(ExitReason::Cancelled, job.request.policy.policy);
                self.stats.outcome(job.request.priority, job.budgeted(), Outcome::Cancelled);
            } else if job.request.deadline.is_some_and(|deadline| now >= deadline) {
                let waited_ms = job.enqueued.elapsed().as_secs_f64() * 1e3;
                self.refuse_waiting(job, EngineError::DeadlineBeforeFirstStep { waited_ms });
            } else if let Some(error) = self.too_late(&job.request, batch, now) {
                self.refuse_waiting(job, error);
            } else {
                kept.push_back(job);
            }
        }
        self.pending = kept;
    }

    /// Moves the slots whose next frame is there to the front; returns how many there are.
    fn ready_first(&mut self) -> usize {
        let mut ready = 0;
        for row in 0..self.slots.len() {
            if self.slots[row].readiness() == Readiness::Ready {
                if row != ready {
                    self.slots.swap(ready, row);
                    self.members.iter_mut().for_each(|m| m.swap_rows(ready, row));
                }
                ready += 1;
            }
        }
        ready
    }

    /// One batched timestep over the first `batch` slots (those ready), then the exit decisions.
    fn step(&mut self, batch: usize) {
        let frame_len = self.frame_len;
        let live = self.slots.len();
        let started = Instant::now();
        let stepped = self.members.iter_mut().try_for_each(|member| {
            for (row, slot) in self.slots[..batch].iter().enumerate() {
                let frame =
                    slot.request.frames.frame(slot.prediction.timesteps(), frame_len, &slot.next_frame);
                member.frame_mut(row)?.copy_from_slice(frame);
            }
            member.step(batch, live)
        });
        if let Err(error) = stepped {
            tracing::error!(%error, batch, "step failed; failing every request in the batch");
            for row in (0..batch).rev() {
                self.fail(row, EngineError::Step(error.clone()));
            }
            return;
        }
        let took = started.elapsed();
        self.stats.stepped(batch);
        self.stats.step_took(batch, took);
        self.record_step_time(batch, took);
        for row in (0..batch).rev() {
            let slot = &mut self.slots[row];
            slot.next_frame = None;
            for (k, member) in self.members.iter().enumerate() {
                slot.prediction.add(k, member.logits(row));
                if let Some(ops) = member.synaptic_ops(row) {
                    *slot.synaptic_ops.get_or_insert(0.0) += f64::from(ops);
                }
            }
            let confidence = slot.prediction.combine();
            if let Some(c) = slot.confidences.as_mut() {
                c.push(confidence);
            }
            if slot.prediction.timesteps() == 1 {
                self.stats.first_step(slot.queue_time + slot.admitted.elapsed());
            }
            let decision = slot.request.policy.decide_row(&slot.prediction);
            if let Some(span) = &slot.request.trace {
                // Only a traced request pays for this (no allocation otherwise): one event per
                // timestep batch it rode in.
                // Signed: the OpenTelemetry layer exports unsigned fields as text.
                tracing::trace!(
                    target: TRACE_TARGET,
                    parent: span,
                    batch_size = batch as i64,
                    timestep = slot.prediction.timesteps() as i64,
                    confidence,
                    "step"
                );
            }
            if let Some(partials) = &slot.request.partials {
                let partial = Partial {
                    timestep: slot.prediction.timesteps(),
                    class_index: slot.prediction.best_class(),
                    confidence,
                    uncertainty: (slot.prediction.members() > 1).then(|| slot.prediction.variance()),
                    probabilities: slot.prediction.probabilities().to_vec(),
                    last: decision.is_some(),
                };
                // A closed partial stream means the caller left; its reply will say so too.
                let _ = partials.send(partial);
            }
            if let Some(reason) = decision {
                self.finish(row, reason);
            }
        }
    }
}

/// A running mean of step times: `new` moves `old` by [`STEP_TIME_WEIGHT`]; the first is taken as is.
fn blend(old: Option<Duration>, new: Duration) -> Duration {
    old.map_or(new, |old| old.mul_f64(1.0 - STEP_TIME_WEIGHT) + new.mul_f64(STEP_TIME_WEIGHT))
}

/// The smaller of two optional limits (`None` = no limit).
fn min_duration(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Waits for the next message: polls for `poll`, then blocks. `None` once every handle is gone.
fn wait_for_message(messages: &Receiver<Message>, poll: Duration) -> Option<Message> {
    let spin_until = Instant::now() + poll;
    while Instant::now() < spin_until {
        match messages.try_recv() {
            Ok(message) => return Some(message),
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
    messages.recv().ok()
}

#[cfg(test)]
mod tests {
    //! Drives the scheduler by hand on a stepper with scripted logits (no ONNX Runtime), so that
    //! deadlines, cancellation and row moves are tested without depending on how fast a step runs.

    use std::time::Duration;

    use super::*;
    use crate::engine::admission::{Admission, Priority, WarmupBatches};
    use crate::engine::fake_stepper::{FakeStepper, Script};
    use crate::engine::frames::{FrameSender, StreamError};
    use crate::engine::policy::CutoffPolicy;
    use crate::input::{FrameBuffer, RequestFrames};

    const FRAME_LEN: usize = 64;
    const CLASSES: usize = 10;

    /// Logits that depend on the frame and on the row's state (its timestep), so that a state
    /// lost in a row move changes the answer: class `c` gets `(c+1) * frame[0] / (t+1)` plus a
    /// bump on class `t % CLASSES`.
    fn default_script() -> Script {
        Arc::new(|frame: &[f32], t: usize| {
            let x = frame.first().copied().unwrap_or(0.0);
            (0..CLASSES)
                .map(|c| {
                    (c + 1) as f32 * x / (t + 1) as f32 * 0.05 + if c == t % CLASSES { 1.5 } else { 0.0 }
                })
                .collect()
        })
    }

    /// Early refusal off: these tests set deadlines by hand, whatever a step takes.
    fn scheduler(max_batch: usize) -> Scheduler<FakeStepper> {
        scheduler_with(max_batch, FakeStepper::new(FRAME_LEN, CLASSES, default_script()))
    }

    fn scheduler_with(max_batch: usize, stepper: FakeStepper) -> Scheduler<FakeStepper> {
        let config = EngineConfig {
            max_batch,
            queue_capacity: 8,
            early_refusal: false,
            warmup: WarmupBatches::Off,
            ..EngineConfig::default()
        };
        Scheduler::new(vec![stepper], config, Arc::new(EngineStats::default())).expect("slots")
    }

    /// Arrival order for hand-made jobs.
    fn next_sequence() -> u64 {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    type Answer = oneshot::Receiver<Result<AnytimeAnswer, EngineError>>;

    /// One round of the scheduler's loop after messages are in: ready slots first, then a step.
    fn step(s: &mut Scheduler<FakeStepper>) {
        let ready = s.ready_first();
        s.step(ready);
    }

    fn stream_job(
        deadline: Option<Instant>,
    ) -> (Job, FrameSender, Answer, std::sync::mpsc::Receiver<Message>) {
        let (wake, woken) = std::sync::mpsc::channel();
        let buffer = Arc::new(FrameBuffer::default());
        let sender = FrameSender::new(buffer.clone(), wake, 64, 8);
        let (reply, answer) = oneshot::channel();
        let request = AnytimeRequest {
            frames: RequestFrames::Stream(buffer),
            policy: ALL_STEPS,
            deadline,
            record_confidences: true,
            partials: None,
            priority: Priority::DEFAULT,
            trace: None,
        };
        (
            Job { request, enqueued: Instant::now(), sequence: next_sequence(), reply, queued: None },
            sender,
            answer,
            woken,
        )
    }

    /// Every request in these tests runs all 8 timesteps unless its budget or caller stops it.
    const ALL_STEPS: CutoffPolicy = CutoffPolicy::cutoff(1.0, 1, 8);

    fn job(deadline: Option<Instant>) -> (Job, Answer) {
        job_of(Priority::DEFAULT, deadline)
    }

    fn job_of(priority: Priority, deadline: Option<Instant>) -> (Job, Answer) {
        let (reply, answer) = oneshot::channel();
        let request = AnytimeRequest {
            frames: RequestFrames::Static(vec![8.0; 64]),
            policy: ALL_STEPS,
            deadline,
            record_confidences: true,
            partials: None,
            priority,
            trace: None,
        };
        (Job { request, enqueued: Instant::now(), sequence: next_sequence(), reply, queued: None }, answer)
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
        step(&mut s);
        step(&mut s);
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
        step(&mut s);
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
                step(&mut s);
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

    #[test]
    fn a_stream_steps_as_its_frames_arrive_beside_static_requests() {
        let mut s = scheduler(4);
        let (stream, sender, stream_answer, woken) = stream_job(None);
        let (fixed, fixed_answer) = job(None);
        for j in [stream, fixed] {
            s.stats.enqueued();
            s.admit(j);
        }
        // No frame yet: only the static request steps.
        step(&mut s);
        assert_eq!(s.stats.snapshot().stepped_samples, 1);
        sender.push(vec![8.0; 64]).expect("frame 0");
        assert!(matches!(woken.try_recv(), Ok(Message::Wake)), "a frame wakes the scheduler");
        step(&mut s);
        assert_eq!(s.stats.snapshot().stepped_samples, 3, "both stepped together");
        sender.push(vec![8.0; 64]).expect("frame 1");
        sender.push(vec![8.0; 64]).expect("frame 2");
        step(&mut s);
        step(&mut s);
        assert_eq!(
            sender.push(vec![1.0; 3]),
            Err(StreamError::FrameLength { index: 3, found: 3, expected: 64 })
        );
        let mut bad = vec![0.0; 64];
        bad[5] = f32::NAN;
        assert!(matches!(sender.push(bad), Err(StreamError::NotFinite { index: 3, position: 5, .. })));
        sender.finish();
        assert_eq!(sender.push(vec![8.0; 64]), Err(StreamError::Finished));
        s.retire_before_step(Instant::now());
        let streamed = received(stream_answer).expect("answered");
        assert_eq!(streamed.timesteps, 3, "the stream ends at its last frame");
        assert_eq!(streamed.exit_reason, ExitReason::MaxTimesteps);
        // The same input as the static request's: the same prediction after 3 steps.
        let mut reference = scheduler(1);
        let (j, answer) = job(None);
        reference.stats.enqueued();
        reference.admit(j);
        let mut policy_capped = reference.slots[0].request.policy.clone();
        policy_capped.max_timesteps = 3;
        reference.slots[0].request.policy = policy_capped;
        for _ in 0..3 {
            step(&mut reference);
        }
        let expected = received(answer).expect("reference");
        for (a, b) in streamed.probabilities.iter().zip(&expected.probabilities) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        drop(fixed_answer);
    }

    #[test]
    fn a_stalled_stream_meets_its_deadline_and_an_empty_one_is_an_error() {
        let mut s = scheduler(4);
        let start = Instant::now();
        let (stalled, sender, stalled_answer, _woken) = stream_job(Some(start + Duration::from_secs(3600)));
        let (empty, empty_sender, empty_answer, _woken2) = stream_job(None);
        for j in [stalled, empty] {
            s.stats.enqueued();
            s.admit(j);
        }
        sender.push(vec![8.0; 64]).expect("frame");
        step(&mut s);
        drop(empty_sender); // ends without a frame
        s.retire_before_step(start + Duration::from_secs(10));
        assert!(matches!(received(empty_answer), Err(EngineError::NoFrames)));
        assert_eq!(s.slots.len(), 1, "the stalled stream waits for its next frame");
        assert_eq!(s.ready_first(), 0);
        s.retire_before_step(start + Duration::from_secs(3601));
        let answer = received(stalled_answer).expect("answered");
        assert_eq!((answer.timesteps, answer.exit_reason), (1, ExitReason::Deadline));
        assert_eq!(s.stats.snapshot().active_slots, 0);
        assert_eq!(sender.push(vec![8.0; 64]), Err(StreamError::Gone), "frames after the answer are refused");
        assert_eq!(sender.frames_sent(), 1);
    }

    fn class(value: u8) -> Priority {
        Priority::new(value).expect("a class")
    }

    /// Queues `jobs` as the engine would (counted, then taken from the channel).
    fn queue(s: &mut Scheduler<FakeStepper>, jobs: Vec<Job>) {
        for job in jobs {
            assert!(s.stats.try_enqueue(s.config.queue_capacity, job.request.priority));
            s.take(Message::Job(Box::new(job)));
        }
    }

    #[test]
    fn waiting_requests_are_admitted_by_class_then_earliest_deadline_then_arrival() {
        let mut s = scheduler(1);
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        let near = now + Duration::from_secs(600);
        let (a, mut a_answer) = job_of(class(1), None);
        let (b, mut b_answer) = job_of(class(1), Some(far));
        let (c, mut c_answer) = job_of(class(1), Some(near));
        let (d, mut d_answer) = job_of(class(2), None);
        queue(&mut s, vec![a, b, c, d]);
        let mut order = Vec::new();
        for _ in 0..4 {
            s.admit_pending();
            assert_eq!(s.slots.len(), 1);
            while !s.slots.is_empty() {
                step(&mut s);
            }
            for (name, answer) in
                [("a", &mut a_answer), ("b", &mut b_answer), ("c", &mut c_answer), ("d", &mut d_answer)]
            {
                if !order.contains(&name) && answer.try_recv().is_ok() {
                    order.push(name);
                }
            }
        }
        assert_eq!(order, ["d", "c", "b", "a"]);
    }

    #[test]
    fn fifo_admission_keeps_arrival_order() {
        let mut s = scheduler(1);
        s.config.admission = Admission::Fifo;
        let (a, mut a_answer) = job_of(class(0), None);
        let (b, _b_answer) = job_of(class(3), Some(Instant::now() + Duration::from_secs(600)));
        queue(&mut s, vec![a, b]);
        s.admit_pending();
        while !s.slots.is_empty() {
            step(&mut s);
        }
        assert!(a_answer.try_recv().is_ok(), "the first to arrive went first");
    }

    #[test]
    fn a_full_queue_refuses_the_lowest_class_first_and_its_newest_request() {
        let mut s = scheduler(1);
        s.config.queue_capacity = 3;
        let (low_old, mut low_old_answer) = job_of(class(0), None);
        let (low_new, low_new_answer) = job_of(class(0), None);
        let (normal, mut normal_answer) = job_of(class(1), None);
        queue(&mut s, vec![low_old, low_new, normal]);
        // Full: another of the lowest class is refused at the door...
        assert!(!s.stats.try_enqueue(3, class(0)));
        // ...while a higher class gets in, and the newest low one gives up its place.
        let (high, mut high_answer) = job_of(class(3), None);
        queue(&mut s, vec![high]);
        assert_eq!(s.pending.len(), 3);
        match received(low_new_answer) {
            Err(EngineError::Displaced { priority: 0, capacity: 3 }) => {}
            other => panic!("expected the newest class-0 request displaced, got {other:?}"),
        }
        assert_eq!(EngineError::Displaced { priority: 0, capacity: 3 }.code(), "overloaded");
        let stats = s.stats.snapshot();
        assert_eq!((stats.refused, stats.failed), (1, 0), "a displaced request counts as refused");
        assert!(
            low_old_answer.try_recv().is_err()
                && normal_answer.try_recv().is_err()
                && high_answer.try_recv().is_err()
        );
        assert_eq!(s.stats.snapshot().queued, 3);
    }

    #[test]
    fn a_budget_that_cannot_cover_min_timesteps_is_refused_before_taking_a_slot() {
        let mut slow = FakeStepper::new(FRAME_LEN, CLASSES, default_script());
        // Slow enough that half a step is still ahead when the request is admitted.
        slow.delay = Duration::from_millis(20);
        let mut s = scheduler_with(4, slow);
        s.config.early_refusal = true;
        let warm = s.warm_up(&[1, 2, 4]).expect("warm-up steps");
        assert!(warm > Duration::ZERO);
        let step_time = s.step_time_at(1).expect("measured by the warm-up");
        assert!(s.slots.is_empty() && s.step_time_at(3) == s.step_time_at(4));
        // Eight timesteps in less than one step's time: refused, no slot taken.
        let (mut hopeless, answer) = job_of(class(1), Some(Instant::now() + step_time / 2));
        hopeless.request.policy.min_timesteps = 8;
        s.stats.enqueued();
        s.admit(hopeless);
        assert!(s.slots.is_empty());
        match received(answer) {
            Err(error @ EngineError::BudgetTooShort { min_timesteps: 8, .. }) => {
                assert_eq!(error.code(), "deadline_exceeded");
                assert!(error.to_string().contains("cannot be met"), "{error}");
            }
            other => panic!("expected a refusal at admission, got {other:?}"),
        }
        // A budget of an hour is admitted; so is the hopeless one with the rule turned off.
        let (fine, _fine_answer) = job_of(class(1), Some(Instant::now() + Duration::from_secs(3600)));
        s.stats.enqueued();
        s.admit(fine);
        assert_eq!(s.slots.len(), 1);
        s.config.early_refusal = false;
        let (tight, _tight_answer) = job_of(class(1), Some(Instant::now() + step_time / 2));
        s.stats.enqueued();
        s.admit(tight);
        assert_eq!(s.slots.len(), 2);
    }

    /// A scheduler of four slots whose step takes 1 ms a row, requests expected to need four
    /// steps, and waiting: one request with `first_ms` of budget, then three with an hour.
    fn first_budget_then_loose(admission: Admission, first_ms: u64) -> (Scheduler<FakeStepper>, Vec<Answer>) {
        let mut s = scheduler(4);
        s.config.admission = admission;
        for batch in 1..=4 {
            s.record_step_time(batch, Duration::from_millis(batch as u64));
        }
        s.mean_steps = Some(4.0);
        let hour = Instant::now() + Duration::from_secs(3600);
        let first = job_of(class(2), Some(Instant::now() + Duration::from_millis(first_ms)));
        let jobs = std::iter::once(first).chain((0..3).map(|_| job_of(class(1), Some(hour))));
        let (jobs, answers): (Vec<Job>, Vec<Answer>) = jobs.unzip();
        queue(&mut s, jobs);
        (s, answers)
    }

    #[test]
    fn admission_stops_growing_the_batch_where_a_tight_budget_would_miss() {
        // 10 ms for four steps: 2.5 ms a step, so a batch of two at most.
        let (mut s, _answers) = first_budget_then_loose(Admission::Deadline, 10);
        s.config.budget_batch_limit = true;
        s.admit_pending();
        assert_eq!((s.slots.len(), s.pending.len()), (2, 2), "the tight request and one loose one");
        let tight =
            |s: &Scheduler<FakeStepper>| s.slots.iter().position(|slot| slot.request.priority == class(2));
        assert!(tight(&s).is_some());
        // The tight request holds the batch back while it steps...
        s.admit_pending();
        assert_eq!(s.slots.len(), 2);
        // ...and no longer once it is gone.
        s.fail(tight(&s).expect("still stepping"), EngineError::NoFrames);
        s.admit_pending();
        assert_eq!((s.slots.len(), s.pending.len()), (3, 0));

        // One slow step at three rows long ago does not hold the batch at two for good: the limit
        // goes by the recent time per row (1 ms), and 18 ms for four steps affords four rows.
        let (mut s, _answers) = first_budget_then_loose(Admission::Deadline, 18);
        s.config.budget_batch_limit = true;
        s.record_step_time(3, Duration::from_millis(100));
        (0..40).for_each(|_| s.record_step_time(2, Duration::from_millis(2)));
        s.admit_pending();
        assert_eq!(s.slots.len(), 4);

        // A budget that no batch size can meet does not hold the others back.
        let (mut s, _answers) = first_budget_then_loose(Admission::Deadline, 2);
        s.config.budget_batch_limit = true;
        s.admit_pending();
        assert_eq!(s.slots.len(), 4);
        // Without the limit (the default), and first come, first served, which knows nothing of
        // budgets: the batch is filled.
        let (mut s, _answers) = first_budget_then_loose(Admission::Deadline, 10);
        assert!(!s.config.budget_batch_limit);
        s.admit_pending();
        assert_eq!(s.slots.len(), 4);
        let (mut s, _answers) = first_budget_then_loose(Admission::Fifo, 10);
        s.config.budget_batch_limit = true;
        s.admit_pending();
        assert_eq!(s.slots.len(), 4);
    }

    #[test]
    fn warm_up_leaves_the_rows_clean() {
        let mut alone = scheduler(4);
        let mut warmed = scheduler(4);
        warmed.warm_up(&WarmupBatches::PowersOfTwo.sizes(4)).expect("warm-up");
        let mut answers = Vec::new();
        for s in [&mut alone, &mut warmed] {
            let (j, answer) = job(None);
            s.stats.enqueued();
            s.admit(j);
            while !s.slots.is_empty() {
                step(s);
            }
            answers.push(received(answer).expect("answered").probabilities);
        }
        assert_eq!(answers[0], answers[1], "a warmed-up scheduler answers as a cold one");
    }

    /// A request whose frame is `id` everywhere (the scripted steppers below key on it).
    fn job_for(id: f32, policy: CutoffPolicy) -> (Job, Answer) {
        let (reply, answer) = oneshot::channel();
        let request = AnytimeRequest {
            frames: RequestFrames::Static(vec![id; FRAME_LEN]),
            policy,
            deadline: None,
            record_confidences: true,
            partials: None,
            priority: Priority::DEFAULT,
            trace: None,
        };
        (Job { request, enqueued: Instant::now(), sequence: next_sequence(), reply, queued: None }, answer)
    }

    fn policy(threshold: f64, min_timesteps: usize, max_timesteps: usize) -> CutoffPolicy {
        CutoffPolicy::cutoff(threshold, min_timesteps, max_timesteps)
    }

    /// Per request (keyed by its frame's value): the logits of each timestep; the last one repeats.
    fn scripted(table: &[(f32, Vec<[f32; 3]>)]) -> FakeStepper {
        let table: Vec<(f32, Vec<[f32; 3]>)> = table.to_vec();
        let script: Script = Arc::new(move |frame: &[f32], t: usize| {
            let id = frame.first().copied().unwrap_or(f32::NAN);
            let steps = table.iter().find(|(key, _)| *key == id).map(|(_, steps)| steps.as_slice());
            match steps {
                Some(steps) if !steps.is_empty() => steps[t.min(steps.len() - 1)].to_vec(),
                _ => vec![0.0; 3],
            }
        });
        FakeStepper::new(FRAME_LEN, 3, script)
    }

    /// Admits `jobs` and steps until every slot is free (at most `limit` rounds).
    fn run_all(s: &mut Scheduler<FakeStepper>, jobs: Vec<Job>, limit: usize) {
        for j in jobs {
            s.stats.enqueued();
            s.admit(j);
        }
        for _ in 0..limit {
            s.retire_before_step(Instant::now());
            if s.slots.is_empty() {
                break;
            }
            step(s);
        }
        assert!(s.slots.is_empty(), "every request finished within {limit} steps");
    }

    const UNSURE: [f32; 3] = [0.0, 0.0, 0.0];

    #[test]
    fn a_request_exits_on_its_threshold_at_the_scripted_timestep() {
        // Unsure for two steps, then class 1 by far: the running mean crosses 0.99 at step 3.
        let mut s = scheduler_with(4, scripted(&[(1.0, vec![UNSURE, UNSURE, [0.0, 20.0, 0.0]])]));
        let (j, answer) = job_for(1.0, policy(0.99, 1, 8));
        run_all(&mut s, vec![j], 8);
        let answer = received(answer).expect("answered");
        assert_eq!((answer.exit_reason, answer.timesteps, answer.class_index), (ExitReason::Confident, 3, 1));
        let confidences = answer.confidences.expect("recorded");
        assert!(confidences[1] < 0.99 && confidences[2] >= 0.99, "{confidences:?}");
        assert_eq!(s.stats.snapshot().exits.confident, 1);
        assert_eq!(s.members[0].batches, [1, 1, 1]);
    }

    #[test]
    fn a_request_that_never_gets_confident_stops_at_max_timesteps() {
        let mut s = scheduler_with(4, scripted(&[(1.0, vec![[1.0, 0.5, 0.0]])]));
        let (j, answer) = job_for(1.0, policy(0.99, 1, 5));
        run_all(&mut s, vec![j], 8);
        let answer = received(answer).expect("answered");
        assert_eq!(
            (answer.exit_reason, answer.timesteps, answer.class_index),
            (ExitReason::MaxTimesteps, 5, 0)
        );
        assert!(answer.confidence < 0.99);
        assert_eq!(s.stats.snapshot().exits.max_timesteps, 1);
    }

    #[test]
    fn min_timesteps_holds_back_a_confident_exit() {
        let sure = [30.0, 0.0, 0.0];
        let mut s = scheduler_with(4, scripted(&[(1.0, vec![sure]), (2.0, vec![sure])]));
        let (early, early_answer) = job_for(1.0, policy(0.9, 1, 8));
        let (held, held_answer) = job_for(2.0, policy(0.9, 3, 8));
        run_all(&mut s, vec![early, held], 8);
        let (early, held) = (received(early_answer).expect("early"), received(held_answer).expect("held"));
        assert_eq!((early.exit_reason, early.timesteps), (ExitReason::Confident, 1));
        assert_eq!((held.exit_reason, held.timesteps), (ExitReason::Confident, 3));
    }

    /// Several requests share the batch; one leaves (its row is filled by the last one), another
    /// joins mid-flight. Each still gets exactly the answer it gets alone: its own scripted logits,
    /// at its own timesteps, whichever row it was moved to.
    #[test]
    fn batched_requests_keep_their_own_logits_through_row_moves() {
        let table = [
            // Leaves after 2 steps (confident on class 2).
            (1.0, vec![UNSURE, [0.0, 0.0, 30.0]]),
            // Class 0 at step 1, then class 1 from step 2 on: a wrong timestep shows.
            (2.0, vec![[3.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 5.0, 0.0], [0.0, 6.0, 0.0]]),
            (3.0, vec![[0.0, 0.0, 1.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.0]]),
            (4.0, vec![[0.5, 0.0, 0.0], [0.0, 0.0, 2.5], [1.0, 1.0, 0.0]]),
        ];
        let all_steps = policy(1.0, 1, 6);
        let confident = policy(0.99, 1, 6);
        let alone = |id: f32, p: CutoffPolicy| {
            let mut s = scheduler_with(1, scripted(&table));
            let (j, answer) = job_for(id, p);
            run_all(&mut s, vec![j], 8);
            received(answer).expect("answered alone")
        };
        let mut s = scheduler_with(4, scripted(&table));
        let (a, answer_a) = job_for(1.0, confident.clone());
        let (b, answer_b) = job_for(2.0, all_steps.clone());
        let (c, answer_c) = job_for(3.0, all_steps.clone());
        for j in [a, b] {
            s.stats.enqueued();
            s.admit(j);
        }
        step(&mut s);
        // `c` joins a step later, so its state differs from that of `a`, whose row it takes.
        s.stats.enqueued();
        s.admit(c);
        step(&mut s);
        // `a` left after its second step: the last row (`c`, one step in) moved into its slot.
        assert_eq!(s.slots.len(), 2);
        assert_eq!(s.slots[0].request.frames.frame(0, FRAME_LEN, &None)[0], 3.0, "c moved to row 0");
        assert_eq!(s.slots[0].prediction.timesteps(), 1);
        let (d, answer_d) = job_for(4.0, all_steps.clone());
        s.stats.enqueued();
        s.admit(d);
        for _ in 0..8 {
            s.retire_before_step(Instant::now());
            if s.slots.is_empty() {
                break;
            }
            step(&mut s);
        }
        assert!(s.slots.is_empty());
        assert_eq!(&s.members[0].batches[..3], [2, 3, 3], "c joined a and b; d joined the two left");
        let batched = [
            (received(answer_a).expect("a"), alone(1.0, confident.clone())),
            (received(answer_b).expect("b"), alone(2.0, all_steps.clone())),
            (received(answer_c).expect("c"), alone(3.0, all_steps.clone())),
            (received(answer_d).expect("d"), alone(4.0, all_steps.clone())),
        ];
        for (together, solo) in &batched {
            assert_eq!(
                (together.exit_reason, together.timesteps, together.class_index),
                (solo.exit_reason, solo.timesteps, solo.class_index)
            );
            assert_eq!(together.probabilities, solo.probabilities);
            assert_eq!(together.confidences, solo.confidences);
        }
        assert_eq!((batched[0].0.timesteps, batched[0].0.class_index), (2, 2));
        assert_eq!((batched[1].0.timesteps, batched[1].0.class_index), (6, 1));
    }

    #[test]
    fn a_caller_that_leaves_frees_its_slot_for_the_next_request() {
        let mut s = scheduler(1);
        let (a, answer_a) = job(None);
        let (b, answer_b) = job(None);
        queue(&mut s, vec![a, b]);
        s.admit_pending();
        assert_eq!((s.slots.len(), s.pending.len()), (1, 1), "one slot: b waits");
        step(&mut s);
        drop(answer_a);
        s.retire_before_step(Instant::now());
        assert!(s.slots.is_empty(), "the cancelled request left its slot");
        s.admit_pending();
        assert_eq!((s.slots.len(), s.pending.len()), (1, 0), "b took the freed slot");
        assert_eq!(s.slots[0].prediction.timesteps(), 0, "b starts from a zeroed row");
        while !s.slots.is_empty() {
            step(&mut s);
        }
        assert_eq!(received(answer_b).expect("b").timesteps, 8);
        let stats = s.stats.snapshot();
        assert_eq!((stats.exits.cancelled, stats.active_slots, stats.queued), (1, 0, 0));
    }

    #[test]
    fn a_failed_step_fails_every_request_in_the_batch_and_the_next_ones_still_run() {
        let mut stepper = FakeStepper::new(FRAME_LEN, CLASSES, default_script());
        stepper.fail_at = Some(1);
        let mut s = scheduler_with(4, stepper);
        let (a, answer_a) = job(None);
        let (b, answer_b) = job(None);
        for j in [a, b] {
            s.stats.enqueued();
            s.admit(j);
        }
        step(&mut s);
        step(&mut s);
        assert!(s.slots.is_empty());
        for answer in [answer_a, answer_b] {
            match received(answer) {
                Err(error @ EngineError::Step(StepError::Run(_))) => {
                    assert_eq!(error.code(), "inference_failed");
                    assert!(error.to_string().contains("scripted failure"), "{error}");
                }
                other => panic!("expected the step's error, got {other:?}"),
            }
        }
        assert_eq!(s.stats.snapshot().failed, 2);
        let (c, answer_c) = job(None);
        run_all(&mut s, vec![c], 8);
        assert_eq!(received(answer_c).expect("c").timesteps, 8);
    }
}
