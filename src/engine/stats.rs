//! Counters and gauges of one model's scheduler, shared lock-free with the API.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use super::admission::Priority;
use super::exit_policy::PolicyKind;
use super::policy::ExitReason;
use super::request::AnytimeAnswer;
use crate::metrics::{ModelMetrics, Outcome};

#[derive(Debug, Default)]
pub struct EngineStats {
    queued: AtomicUsize,
    /// `queued` by priority class: a full queue takes a request only while a lower class waits.
    queued_by_priority: [AtomicUsize; Priority::MAX as usize + 1],
    active_slots: AtomicUsize,
    steps: AtomicU64,
    stepped_samples: AtomicU64,
    largest_batch: AtomicUsize,
    refused: AtomicU64,
    failed: AtomicU64,
    exits: [AtomicU64; 5],
    /// Exits by policy (see [`PolicyKind::index`]) and reason (see [`index`]).
    exits_by_policy: [[AtomicU64; 5]; 3],
    queue_ns: AtomicU64,
    compute_ns: AtomicU64,
    step_ns: AtomicU64,
    last_answer_unix_ms: AtomicU64,
    /// The same events for Prometheus (absent when the engine runs without a model name).
    metrics: Option<ModelMetrics>,
}

/// A point-in-time copy of the stats, as the API reports them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Slots holding a request now.
    pub active_slots: usize,
    /// Batched steps run.
    pub steps: u64,
    /// Sum over steps of the batch size: `stepped_samples / steps` is the mean batch.
    pub stepped_samples: u64,
    pub largest_batch: usize,
    /// Requests refused because the queue was full.
    pub refused: u64,
    /// Requests that failed in ONNX Runtime or hit their deadline before the first step.
    pub failed: u64,
    pub exits: ExitCounts,
    /// Total time answered requests waited for a slot, in nanoseconds.
    pub queue_ns: u64,
    /// Total time answered requests held a slot, in nanoseconds.
    pub compute_ns: u64,
    /// Total time spent in batched steps, in nanoseconds.
    pub step_ns: u64,
    /// When the last answer was sent, in milliseconds since the Unix epoch (0: never).
    pub last_answer_unix_ms: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExitCounts {
    pub confident: u64,
    pub max_timesteps: u64,
    pub deadline: u64,
    pub cancelled: u64,
    /// Stopped by an exit policy other than the plain cutoff.
    pub policy: u64,
    /// Answers (and cancellations) by the policy that ran, then by exit reason.
    pub by_policy: PolicyExitCounts,
}

/// Exits of each exit policy, by reason.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyExitCounts {
    pub cutoff: ReasonCounts,
    pub schedule: ReasonCounts,
    pub learned: ReasonCounts,
}

/// Exits by reason.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReasonCounts {
    pub confident: u64,
    pub max_timesteps: u64,
    pub deadline: u64,
    pub cancelled: u64,
    pub policy: u64,
}

fn index(reason: ExitReason) -> usize {
    match reason {
        ExitReason::Confident => 0,
        ExitReason::MaxTimesteps => 1,
        ExitReason::Deadline => 2,
        ExitReason::Cancelled => 3,
        ExitReason::Policy => 4,
    }
}

impl StatsSnapshot {
    /// Requests answered (every exit but `cancelled`).
    pub fn answered(&self) -> u64 {
        self.exits.confident + self.exits.max_timesteps + self.exits.deadline + self.exits.policy
    }
}

impl EngineStats {
    pub fn with_metrics(metrics: ModelMetrics) -> Self {
        Self { metrics: Some(metrics), ..Self::default() }
    }

    fn occupancy(&self) {
        if let Some(m) = &self.metrics {
            m.occupancy(self.queued.load(Ordering::Relaxed), self.active_slots.load(Ordering::Relaxed));
        }
    }

    /// Counts a request of class `priority` as queued unless `capacity` are queued already and
    /// no lower class is waiting (the scheduler then gives up the newest request of the lowest
    /// class to bring the queue back to `capacity`).
    pub(super) fn try_enqueue(&self, capacity: usize, priority: Priority) -> bool {
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        let lower_waiting =
            || self.queued_by_priority[..priority.index()].iter().any(|q| q.load(Ordering::Acquire) > 0);
        if before >= capacity && !lower_waiting() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.queued_by_priority[priority.index()].fetch_add(1, Ordering::AcqRel);
        self.occupancy();
        true
    }

    #[cfg(test)]
    pub(super) fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.queued_by_priority[Priority::DEFAULT.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn dequeued(&self, priority: Priority) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.queued_by_priority[priority.index()].fetch_sub(1, Ordering::Relaxed);
        self.occupancy();
    }

    pub(super) fn refused(&self, priority: Priority, budgeted: bool) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.failed("overloaded");
            m.outcome(priority.index(), budgeted, Outcome::Overloaded);
        }
    }

    /// How a request of class `priority` ended, for the per-class metrics (goodput).
    pub(super) fn outcome(&self, priority: Priority, budgeted: bool, outcome: Outcome) {
        if let Some(m) = &self.metrics {
            m.outcome(priority.index(), budgeted, outcome);
        }
    }

    /// How long a request of class `priority` waited for its slot.
    pub(super) fn waited(&self, priority: Priority, waited: std::time::Duration) {
        if let Some(m) = &self.metrics {
            m.waited(priority.index(), waited);
        }
    }

    /// A request the engine could not answer; `code` is the error's stable name.
    pub(super) fn failed(&self, code: &'static str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.failed(code);
        }
    }

    pub(super) fn set_active_slots(&self, slots: usize) {
        self.active_slots.store(slots, Ordering::Relaxed);
        self.occupancy();
    }

    /// The first timestep of a request is done, `since_arrival` after it was queued.
    pub(super) fn first_step(&self, since_arrival: std::time::Duration) {
        if let Some(m) = &self.metrics {
            m.first_partial(since_arrival);
        }
    }

    pub(super) fn stepped(&self, batch: usize) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.stepped_samples.fetch_add(batch as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(batch, Ordering::Relaxed);
    }

    pub(super) fn exited(&self, reason: ExitReason, policy: PolicyKind) {
        self.exits[index(reason)].fetch_add(1, Ordering::Relaxed);
        self.exits_by_policy[policy.index()][index(reason)].fetch_add(1, Ordering::Relaxed);
        if reason == ExitReason::Cancelled {
            if let Some(m) = &self.metrics {
                m.cancelled();
            }
        }
    }

    pub(super) fn answered(&self, answer: &AnytimeAnswer) {
        let (queue, compute) = (answer.queue_time, answer.compute_time);
        if let Some(m) = &self.metrics {
            let reason = index(answer.exit_reason);
            m.answered(
                reason,
                answer.policy.index(),
                answer.timesteps,
                queue,
                queue + compute,
                answer.synaptic_ops,
                answer.uncertainty,
            );
        }
        self.queue_ns.fetch_add(queue.as_nanos() as u64, Ordering::Relaxed);
        self.compute_ns.fetch_add(compute.as_nanos() as u64, Ordering::Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_answer_unix_ms.store(now.as_millis() as u64, Ordering::Relaxed);
    }

    pub(super) fn step_took(&self, batch: usize, elapsed: std::time::Duration) {
        self.step_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.stepped(batch, elapsed);
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let exit = |r| self.exits[index(r)].load(Ordering::Relaxed);
        StatsSnapshot {
            queued: self.queued.load(Ordering::Relaxed),
            active_slots: self.active_slots.load(Ordering::Relaxed),
            steps: self.steps.load(Ordering::Relaxed),
            stepped_samples: self.stepped_samples.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            exits: ExitCounts {
                confident: exit(ExitReason::Confident),
                max_timesteps: exit(ExitReason::MaxTimesteps),
                deadline: exit(ExitReason::Deadline),
                cancelled: exit(ExitReason::Cancelled),
                policy: exit(ExitReason::Policy),
                by_policy: {
                    let counts = |kind: PolicyKind| {
                        let by = |r| self.exits_by_policy[kind.index()][index(r)].load(Ordering::Relaxed);
                        ReasonCounts {
                            confident: by(ExitReason::Confident),
                            max_timesteps: by(ExitReason::MaxTimesteps),
                            deadline: by(ExitReason::Deadline),
                            cancelled: by(ExitReason::Cancelled),
                            policy: by(ExitReason::Policy),
                        }
                    };
                    PolicyExitCounts {
                        cutoff: counts(PolicyKind::Cutoff),
                        schedule: counts(PolicyKind::Schedule),
                        learned: counts(PolicyKind::Learned),
                    }
                },
            },
            queue_ns: self.queue_ns.load(Ordering::Relaxed),
            compute_ns: self.compute_ns.load(Ordering::Relaxed),
            step_ns: self.step_ns.load(Ordering::Relaxed),
            last_answer_unix_ms: self.last_answer_unix_ms.load(Ordering::Relaxed),
        }
    }
}
