//! Prometheus metrics: every name, help text and bucket set in one place.
//!
//! Per model: requests by status and exit reason, a histogram of timesteps used (the average is
//! `_sum / _count`), request, queue, time-to-first-partial and step durations, batch size per step,
//! gauges of queue depth, slots and requests in flight, synaptic operations and ensemble
//! uncertainty; plus Triton's `nv_inference_*` series where they map, so that existing dashboards
//! and autoscaling recipes keep working. Without an installed recorder (the engine used as a
//! library) every call is a no-op.

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "spikeserve_requests_total";
pub const TIMESTEPS: &str = "spikeserve_timesteps_used";
pub const REQUEST_DURATION: &str = "spikeserve_request_duration_seconds";
pub const QUEUE_DURATION: &str = "spikeserve_queue_duration_seconds";
pub const FIRST_PARTIAL: &str = "spikeserve_time_to_first_partial_seconds";
pub const STEP_DURATION: &str = "spikeserve_step_duration_seconds";
pub const BATCH_SIZE: &str = "spikeserve_batch_size";
pub const QUEUE_DEPTH: &str = "spikeserve_queue_depth";
pub const SLOTS_IN_USE: &str = "spikeserve_slots_in_use";
pub const SLOTS_CAPACITY: &str = "spikeserve_slots_capacity";
pub const IN_FLIGHT: &str = "spikeserve_requests_in_flight";
pub const SYNAPTIC_OPS: &str = "spikeserve_synaptic_ops";
pub const UNCERTAINTY: &str = "spikeserve_ensemble_uncertainty";
pub const UNAUTHENTICATED: &str = "spikeserve_unauthenticated_total";
pub const MODEL_CHANGES: &str = "spikeserve_model_changes_total";
pub const LOG_LINES_DROPPED: &str = "spikeserve_log_lines_dropped_total";
pub const TRACE_SPANS_DROPPED: &str = "spikeserve_trace_spans_dropped_total";
pub const TRACE_SPANS_EXPORTED: &str = "spikeserve_trace_spans_exported_total";
pub const OUTCOMES: &str = "spikeserve_request_outcomes_total";
pub const POLICY_EXITS: &str = "spikeserve_policy_exits_total";
pub const POLICY_TIMESTEPS: &str = "spikeserve_policy_timesteps_total";
pub const QUEUE_WAIT_BY_PRIORITY: &str = "spikeserve_queue_wait_by_priority_seconds";
pub const WARMUP: &str = "spikeserve_warmup_seconds";
pub const EVENTS_DROPPED: &str = "spikeserve_events_dropped_total";
pub const NV_SUCCESS: &str = "nv_inference_request_success";
pub const NV_FAILURE: &str = "nv_inference_request_failure";
pub const NV_COUNT: &str = "nv_inference_count";
pub const NV_EXEC_COUNT: &str = "nv_inference_exec_count";
pub const NV_QUEUE_US: &str = "nv_inference_queue_duration_us";
pub const NV_REQUEST_US: &str = "nv_inference_request_duration_us";

/// Timestep buckets: every step up to 10, then coarser up to 32 (T of the paper's models).
const TIMESTEP_BUCKETS: &[f64] =
    &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0];
/// Seconds, from 50 µs (one small step) to 10 s.
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const SYNAPTIC_OPS_BUCKETS: &[f64] = &[1e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8, 1e9];
const UNCERTAINTY_BUCKETS: &[f64] = &[0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2];

/// Exit reasons as labelled, indexed as the engine's stats index them (the engine's
/// `ExitReason::as_str`, which a unit test keeps in step).
pub const EXIT_REASON_LABELS: [&str; 5] = ["confident", "max_timesteps", "deadline", "cancelled", "policy"];
/// Exit policies as labelled, indexed by the engine's `PolicyKind::index`.
pub const POLICY_LABELS: [&str; 3] = ["cutoff", "schedule", "learned"];

/// The only model version served (KServe's and Triton's `version` label).
const VERSION: &str = "1";

/// Installs the global recorder with our buckets and describes every metric.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in [
        (TIMESTEPS, TIMESTEP_BUCKETS),
        (REQUEST_DURATION, DURATION_BUCKETS),
        (QUEUE_DURATION, DURATION_BUCKETS),
        (FIRST_PARTIAL, DURATION_BUCKETS),
        (STEP_DURATION, DURATION_BUCKETS),
        (BATCH_SIZE, BATCH_BUCKETS),
        (SYNAPTIC_OPS, SYNAPTIC_OPS_BUCKETS),
        (UNCERTAINTY, UNCERTAINTY_BUCKETS),
    ] {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)?;
    }
    let handle = builder.install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(REQUESTS, "Requests finished, by model, status (ok or an error code) and exit reason");
    describe_histogram!(TIMESTEPS, "Timesteps each answered request used; the average is _sum / _count");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "From arrival at the engine to the answer");
    describe_histogram!(QUEUE_DURATION, Unit::Seconds, "Time a request waited for a batch slot");
    describe_histogram!(
        FIRST_PARTIAL,
        Unit::Seconds,
        "From arrival at the engine to the first timestep's prediction"
    );
    describe_histogram!(STEP_DURATION, Unit::Seconds, "One batched timestep (all ensemble members)");
    describe_histogram!(BATCH_SIZE, "Requests stepped together in one timestep");
    describe_gauge!(QUEUE_DEPTH, "Requests waiting for a batch slot");
    describe_gauge!(SLOTS_IN_USE, "Batch slots holding a request");
    describe_gauge!(SLOTS_CAPACITY, "Batch slots of the model's scheduler");
    describe_gauge!(IN_FLIGHT, "Requests queued or holding a slot");
    describe_histogram!(
        SYNAPTIC_OPS,
        "Synaptic operations spent per answered request (models that report them)"
    );
    describe_histogram!(UNCERTAINTY, "Ensembles: variance across members of the answer's probability");
    describe_counter!(
        UNAUTHENTICATED,
        "Requests refused for a missing, malformed or invalid bearer token, by door and reason"
    );
    describe_counter!(
        MODEL_CHANGES,
        "Model loads, reloads and unloads after start-up, by model and outcome (loaded, refused, unloaded)"
    );
    describe_counter!(
        LOG_LINES_DROPPED,
        "Log lines dropped because the reader of the server's stderr fell behind (requests are never held up by logging)"
    );
    describe_counter!(
        TRACE_SPANS_DROPPED,
        "Trace spans not delivered to the OTLP collector, by reason: queue_full (the collector fell behind) or \
         export_failed (it refused or did not answer); requests are never held up by tracing"
    );
    describe_counter!(TRACE_SPANS_EXPORTED, "Trace spans the OTLP collector accepted");
    describe_counter!(
        EVENTS_DROPPED,
        "Raw events left out of a request because every bin was full, by model (count-binned models: events past \
         bins x events_per_bin)"
    );
    describe_counter!(
        OUTCOMES,
        "Requests the engine took or refused, by model, priority class, whether they had a latency budget \
         (budget: yes/no) and outcome: within_budget, deadline_exit, answered (no budget), refused_at_admission \
         (the budget could not cover min_timesteps), expired_in_queue, overloaded, cancelled, failed"
    );
    describe_counter!(
        POLICY_EXITS,
        "Requests answered, by model, the exit policy that ran (cutoff, schedule, learned) and exit reason \
         (policy: the schedule or learned score said stop; confident: the cutoff's threshold)"
    );
    describe_counter!(
        POLICY_TIMESTEPS,
        "Timesteps spent by answered requests, by model and exit policy: divided by spikeserve_policy_exits_total, \
         each policy's average timesteps"
    );
    describe_histogram!(
        QUEUE_WAIT_BY_PRIORITY,
        Unit::Seconds,
        "Time a request waited for a batch slot, by priority class"
    );
    describe_gauge!(
        WARMUP,
        Unit::Seconds,
        "Time the model's last load spent stepping its warm-up batch sizes"
    );
    describe_counter!(NV_SUCCESS, "Triton-compatible: successful inference requests");
    describe_counter!(NV_FAILURE, "Triton-compatible: failed inference requests");
    describe_counter!(NV_COUNT, "Triton-compatible: inferences performed (one per request)");
    describe_counter!(NV_EXEC_COUNT, "Triton-compatible: model executions (batched timesteps)");
    describe_counter!(NV_QUEUE_US, Unit::Microseconds, "Triton-compatible: cumulative queue time");
    describe_counter!(NV_REQUEST_US, Unit::Microseconds, "Triton-compatible: cumulative request time");
}

/// How a request the engine took (or refused) ended, for goodput: the share of requests with a
/// budget answered within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered before its budget ran out (or, without a budget, answered: see `budget`).
    Answered,
    /// Answered with the best so far when its budget ran out.
    DeadlineExit,
    /// Refused before taking a slot: the budget could not cover `min_timesteps`.
    RefusedAtAdmission,
    /// Its budget ran out while it waited for a slot.
    ExpiredInQueue,
    /// Refused for a full queue (or displaced by a higher class).
    Overloaded,
    Cancelled,
    Failed,
}

impl Outcome {
    const ALL: [Self; 7] = [
        Self::Answered,
        Self::DeadlineExit,
        Self::RefusedAtAdmission,
        Self::ExpiredInQueue,
        Self::Overloaded,
        Self::Cancelled,
        Self::Failed,
    ];

    fn label(self, budgeted: bool) -> &'static str {
        match self {
            Self::Answered if budgeted => "within_budget",
            Self::Answered => "answered",
            Self::DeadlineExit => "deadline_exit",
            Self::RefusedAtAdmission => "refused_at_admission",
            Self::ExpiredInQueue => "expired_in_queue",
            Self::Overloaded => "overloaded",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&o| o == self).unwrap_or(0)
    }
}

/// The priority classes' label values (the engine's `Priority` 0 to 3).
pub const PRIORITY_LABELS: [&str; 4] = ["0", "1", "2", "3"];

/// The stepping time ONNX Runtime's first runs took at load (warm-up), per model.
pub fn warmup(model: &str, took: Duration) {
    metrics::gauge!(WARMUP, "model" => model.to_owned()).set(took.as_secs_f64());
}

/// One model's metric handles, made once so that the hot path only updates atomics.
#[derive(Clone)]
pub struct ModelMetrics {
    model: String,
    ok: [Counter; 5],
    timesteps: Histogram,
    request_duration: Histogram,
    queue_duration: Histogram,
    first_partial: Histogram,
    step_duration: Histogram,
    batch_size: Histogram,
    queue_depth: Gauge,
    slots_in_use: Gauge,
    in_flight: Gauge,
    synaptic_ops: Histogram,
    uncertainty: Histogram,
    nv_success: Counter,
    nv_count: Counter,
    nv_exec_count: Counter,
    nv_queue_us: Counter,
    nv_request_us: Counter,
    /// `[priority][budgeted][outcome]`.
    outcomes: Vec<Counter>,
    /// `[policy][exit reason]` (answered requests), in [`POLICY_LABELS`] and [`EXIT_REASON_LABELS`] order.
    policy_exits: Vec<Counter>,
    /// `[policy]`.
    policy_timesteps: Vec<Counter>,
    queue_wait_by_priority: Vec<Histogram>,
}

impl std::fmt::Debug for ModelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelMetrics").field("model", &self.model).finish_non_exhaustive()
    }
}

impl ModelMetrics {
    pub fn new(model: &str, slots: usize) -> Self {
        let m = || [("model", model.to_owned())];
        let nv = || [("model", model.to_owned()), ("version", VERSION.to_owned())];
        let ok = |reason: &'static str| metrics::counter!(REQUESTS, "model" => model.to_owned(), "status" => "ok", "exit_reason" => reason);
        metrics::gauge!(SLOTS_CAPACITY, &m()).set(slots as f64);
        Self {
            model: model.to_owned(),
            ok: EXIT_REASON_LABELS.map(ok),
            policy_exits: POLICY_LABELS
                .iter()
                .flat_map(|&policy| {
                    EXIT_REASON_LABELS.iter().map(move |&reason| {
                        metrics::counter!(
                            POLICY_EXITS,
                            "model" => model.to_owned(),
                            "policy" => policy,
                            "exit_reason" => reason
                        )
                    })
                })
                .collect(),
            policy_timesteps: POLICY_LABELS
                .iter()
                .map(|&policy| metrics::counter!(POLICY_TIMESTEPS, "model" => model.to_owned(), "policy" => policy))
                .collect(),
            timesteps: metrics::histogram!(TIMESTEPS, &m()),
            request_duration: metrics::histogram!(REQUEST_DURATION, &m()),
            queue_duration: metrics::histogram!(QUEUE_DURATION, &m()),
            first_partial: metrics::histogram!(FIRST_PARTIAL, &m()),
            step_duration: metrics::histogram!(STEP_DURATION, &m()),
            batch_size: metrics::histogram!(BATCH_SIZE, &m()),
            queue_depth: metrics::gauge!(QUEUE_DEPTH, &m()),
            slots_in_use: metrics::gauge!(SLOTS_IN_USE, &m()),
            in_flight: metrics::gauge!(IN_FLIGHT, &m()),
            synaptic_ops: metrics::histogram!(SYNAPTIC_OPS, &m()),
            uncertainty: metrics::histogram!(UNCERTAINTY, &m()),
            nv_success: metrics::counter!(NV_SUCCESS, &nv()),
            nv_count: metrics::counter!(NV_COUNT, &nv()),
            nv_exec_count: metrics::counter!(NV_EXEC_COUNT, &nv()),
            nv_queue_us: metrics::counter!(NV_QUEUE_US, &nv()),
            nv_request_us: metrics::counter!(NV_REQUEST_US, &nv()),
            outcomes: PRIORITY_LABELS
                .iter()
                .flat_map(|&priority| {
                    [false, true].into_iter().flat_map(move |budgeted| {
                        Outcome::ALL.into_iter().map(move |outcome| {
                            metrics::counter!(
                                OUTCOMES,
                                "model" => model.to_owned(),
                                "priority" => priority,
                                "budget" => if budgeted { "yes" } else { "no" },
                                "outcome" => outcome.label(budgeted)
                            )
                        })
                    })
                })
                .collect(),
            queue_wait_by_priority: PRIORITY_LABELS
                .iter()
                .map(|&priority| metrics::histogram!(QUEUE_WAIT_BY_PRIORITY, "model" => model.to_owned(), "priority" => priority))
                .collect(),
        }
    }

    /// How a request of class `priority` (an index into [`PRIORITY_LABELS`]) ended; `budgeted`: it
    /// had a latency budget.
    pub fn outcome(&self, priority: usize, budgeted: bool, outcome: Outcome) {
        let index = (priority * 2 + usize::from(budgeted)) * Outcome::ALL.len() + outcome.index();
        if let Some(counter) = self.outcomes.get(index) {
            counter.increment(1);
        }
    }

    pub fn waited(&self, priority: usize, waited: Duration) {
        if let Some(histogram) = self.queue_wait_by_priority.get(priority) {
            histogram.record(waited.as_secs_f64());
        }
    }

    /// A request answered (any exit reason but `cancelled`, which [`Self::cancelled`] counts).
    #[allow(clippy::too_many_arguments)]
    pub fn answered(
        &self,
        reason_index: usize,
        policy_index: usize,
        timesteps: usize,
        queue: Duration,
        total: Duration,
        synaptic_ops: Option<f64>,
        uncertainty: Option<f64>,
    ) {
        if let Some(counter) = self.ok.get(reason_index) {
            counter.increment(1);
        }
        if let Some(counter) = self.policy_exits.get(policy_index * EXIT_REASON_LABELS.len() + reason_index) {
            counter.increment(1);
        }
        if let Some(counter) = self.policy_timesteps.get(policy_index) {
            counter.increment(timesteps as u64);
        }
        self.timesteps.record(timesteps as f64);
        self.queue_duration.record(queue.as_secs_f64());
        self.request_duration.record(total.as_secs_f64());
        if let Some(ops) = synaptic_ops {
            self.synaptic_ops.record(ops);
        }
        if let Some(u) = uncertainty {
            self.uncertainty.record(u);
        }
        self.nv_success.increment(1);
        self.nv_count.increment(1);
        self.nv_queue_us.increment(queue.as_micros() as u64);
        self.nv_request_us.increment(total.as_micros() as u64);
    }

    /// A request whose caller left before its answer.
    pub fn cancelled(&self) {
        if let Some(counter) = self.ok.get(3) {
            counter.increment(1);
        }
    }

    pub fn first_partial(&self, since_arrival: Duration) {
        self.first_partial.record(since_arrival.as_secs_f64());
    }

    pub fn stepped(&self, batch: usize, took: Duration) {
        self.batch_size.record(batch as f64);
        self.step_duration.record(took.as_secs_f64());
        self.nv_exec_count.increment(1);
    }

    pub fn occupancy(&self, queued: usize, slots: usize) {
        self.queue_depth.set(queued as f64);
        self.slots_in_use.set(slots as f64);
        self.in_flight.set((queued + slots) as f64);
    }

    /// A request that failed, at any door or in the engine, with its error code.
    pub fn failed(&self, code: &'static str) {
        failed(&self.model, code);
    }
}

/// Counts a failed request of `model` (by name: doors know the name even when the model is unknown).
pub fn failed(model: &str, code: &'static str) {
    metrics::counter!(REQUESTS, "model" => model.to_owned(), "status" => code, "exit_reason" => "none")
        .increment(1);
    metrics::counter!(NV_FAILURE, "model" => model.to_owned(), "version" => VERSION).increment(1);
}

/// Counts a request refused by authentication (`door`: http or grpc; `reason`: missing, malformed
/// or invalid).
pub fn unauthenticated(door: &'static str, reason: &'static str) {
    metrics::counter!(UNAUTHENTICATED, "door" => door, "reason" => reason).increment(1);
}

/// Counts raw events a count-binned model had no bin left for (never an error: a live camera keeps
/// sending after the model's last timestep).
pub fn events_dropped(model: &str, dropped: usize) {
    if dropped > 0 {
        metrics::counter!(EVENTS_DROPPED, "model" => model.to_owned()).increment(dropped as u64);
    }
}

/// Brings the dropped log lines' counter up to `total` (read from the log writer when scraped).
pub fn log_lines_dropped(total: u64) {
    metrics::counter!(LOG_LINES_DROPPED).absolute(total);
}

/// Brings the trace span counters up to the totals read from the span exporter when scraped.
pub fn trace_spans(exported: u64, dropped_queue_full: u64, dropped_export_failed: u64) {
    metrics::counter!(TRACE_SPANS_EXPORTED).absolute(exported);
    metrics::counter!(TRACE_SPANS_DROPPED, "reason" => "queue_full").absolute(dropped_queue_full);
    metrics::counter!(TRACE_SPANS_DROPPED, "reason" => "export_failed").absolute(dropped_export_failed);
}

/// Counts a change of the served models after start-up (`outcome`: loaded, refused or unloaded).
pub fn model_changed(model: &str, outcome: &'static str) {
    metrics::counter!(MODEL_CHANGES, "model" => model.to_owned(), "outcome" => outcome).increment(1);
}
