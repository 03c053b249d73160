//! The anytime cutoff: a running mean of logits, its softmax, and when to stop.

use serde::Serialize;

use super::exit_policy::{ExitRule, PolicyKind};

/// Why a request stopped stepping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The softmax confidence reached the threshold.
    Confident,
    /// The request ran every timestep it was allowed.
    MaxTimesteps,
    /// The latency budget ran out; the answer is the best one so far.
    Deadline,
    /// The caller went away; nobody receives this answer.
    Cancelled,
    /// An exit policy other than the plain cutoff (a per-timestep threshold, a learned stop score)
    /// said stop.
    Policy,
}

impl ExitReason {
    pub const ALL: [Self; 5] =
        [Self::Confident, Self::MaxTimesteps, Self::Deadline, Self::Cancelled, Self::Policy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confident => "confident",
            Self::MaxTimesteps => "max_timesteps",
            Self::Deadline => "deadline",
            Self::Cancelled => "cancelled",
            Self::Policy => "policy",
        }
    }
}

/// When to stop, per request.
#[derive(Debug, Clone, PartialEq)]
pub struct CutoffPolicy {
    /// Stop once the max softmax probability is at least this. `1.0` disables the confidence exit,
    /// so the request always runs `max_timesteps` (float rounding could otherwise make a
    /// saturated softmax read exactly 1.0).
    pub threshold: f64,
    /// Never stop on confidence before this many timesteps (1..=max_timesteps).
    pub min_timesteps: usize,
    /// Never step more than this many timesteps (1..=T).
    pub max_timesteps: usize,
    /// For ensembles: stop on confidence only once the members' variance on the chosen class is
    /// at most this as well.
    pub max_variance: Option<f64>,
    /// When `threshold` came from the model's calibration table: that row's accuracy-drop budget
    /// (percentage points), echoed in the answer.
    pub calibrated_for: Option<f64>,
    /// The rule besides the timestep bounds: the cutoff on `threshold`, or a model's exit policy.
    pub rule: ExitRule,
    /// The policy the request asked for (or the model chose), named in the answer and the metrics.
    pub policy: PolicyKind,
    /// When the row came from a guaranteed calibration: its level (the probability over the
    /// calibration data that the disagreement with the answer at T stays within the budget).
    pub guarantee: Option<f64>,
}

impl CutoffPolicy {
    /// The plain cutoff with this threshold and bounds: what a `threshold` request runs.
    pub const fn cutoff(threshold: f64, min_timesteps: usize, max_timesteps: usize) -> Self {
        Self {
            threshold,
            min_timesteps,
            max_timesteps,
            max_variance: None,
            calibrated_for: None,
            rule: ExitRule::Cutoff,
            policy: PolicyKind::Cutoff,
            guarantee: None,
        }
    }

    /// The exit decision for a row after its latest timestep: the request's rule, within its
    /// timestep bounds and variance bound. Reads only the row (no allocation).
    pub fn decide_row(&self, row: &EnsemblePrediction) -> Option<ExitReason> {
        match &self.rule {
            ExitRule::Cutoff => self.decide(row.timesteps(), row.confidence(), row.variance()),
            rule => {
                let timestep = row.timesteps();
                let agreed = self.max_variance.is_none_or(|bound| row.variance() <= bound);
                if timestep >= self.min_timesteps && agreed && rule.says_stop(row) {
                    Some(ExitReason::Policy)
                } else if timestep >= self.max_timesteps {
                    Some(ExitReason::MaxTimesteps)
                } else {
                    None
                }
            }
        }
    }

    /// The threshold to report for an answer after `timestep` steps: the cutoff's, the schedule's
    /// at that timestep, or the learned score's (1.0 where the row never stops early).
    pub fn reported_threshold(&self, timestep: usize) -> f64 {
        match &self.rule {
            ExitRule::Cutoff => self.threshold,
            ExitRule::Schedule(thresholds) => {
                thresholds.get(timestep.saturating_sub(1)).copied().unwrap_or(self.threshold)
            }
            ExitRule::Learned { threshold, .. } => threshold.unwrap_or(1.0),
        }
    }

    /// The exit decision after `timestep` steps (1-based) with the given confidence and members'
    /// variance (0 for a single model), by the plain cutoff.
    pub fn decide(&self, timestep: usize, confidence: f64, variance: f64) -> Option<ExitReason> {
        let agreed = self.max_variance.is_none_or(|bound| variance <= bound);
        if self.threshold < 1.0 && timestep >= self.min_timesteps && confidence >= self.threshold && agreed {
            Some(ExitReason::Confident)
        } else if timestep >= self.max_timesteps {
            Some(ExitReason::MaxTimesteps)
        } else {
            None
        }
    }
}

/// The prediction so far: softmax of the mean of the logits seen up to now, in f64.
///
/// f64 and the same order of operations as the training job's offline evaluation
/// (`spiketrain.anytime`), so both agree on exit timesteps.
#[derive(Debug, Clone)]
pub struct RunningPrediction {
    logit_sum: Vec<f64>,
    probabilities: Vec<f64>,
    timesteps: usize,
}

impl RunningPrediction {
    pub fn new(classes: usize) -> Self {
        Self { logit_sum: vec![0.0; classes], probabilities: vec![0.0; classes], timesteps: 0 }
    }

    /// Adds one timestep's logits and returns the new confidence (max probability).
    pub fn add(&mut self, logits: &[f32]) -> f64 {
        debug_assert_eq!(logits.len(), self.logit_sum.len());
        for (sum, &l) in self.logit_sum.iter_mut().zip(logits) {
            *sum += f64::from(l);
        }
        self.timesteps += 1;
        let steps = self.timesteps as f64;
        let max = self.logit_sum.iter().map(|s| s / steps).fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for (p, sum) in self.probabilities.iter_mut().zip(&self.logit_sum) {
            *p = (sum / steps - max).exp();
            total += *p;
        }
        for p in &mut self.probabilities {
            *p /= total;
        }
        self.confidence()
    }

    pub fn timesteps(&self) -> usize {
        self.timesteps
    }

    pub fn probabilities(&self) -> &[f64] {
        &self.probabilities
    }

    /// The most probable class (the first on ties, like numpy's argmax).
    pub fn best_class(&self) -> usize {
        argmax(&self.probabilities)
    }

    pub fn confidence(&self) -> f64 {
        self.probabilities.get(self.best_class()).copied().unwrap_or(0.0)
    }
}

/// The prediction of an ensemble of K members stepped in lockstep (K = 1 for a single model): the
/// mean over members of each member's running-mean softmax, and the members' variance on the chosen
/// class as the uncertainty. Same arithmetic, in the same order, as `spiketrain.anytime`.
#[derive(Debug, Clone)]
pub struct EnsemblePrediction {
    members: Vec<RunningPrediction>,
    mean: Vec<f64>,
    best: usize,
    variance: f64,
    /// Whether `best` differs from the previous timestep's (true after the first).
    changed: bool,
    /// Timesteps in a row, ending now, whose prediction was `best`.
    run_length: usize,
}

impl EnsemblePrediction {
    pub fn new(members: usize, classes: usize) -> Self {
        Self {
            members: (0..members.max(1)).map(|_| RunningPrediction::new(classes)).collect(),
            mean: vec![0.0; classes],
            best: 0,
            variance: 0.0,
            changed: true,
            run_length: 0,
        }
    }

    /// Adds one member's logits for the current timestep; call [`Self::combine`] once all are in.
    pub fn add(&mut self, member: usize, logits: &[f32]) {
        if let Some(m) = self.members.get_mut(member) {
            m.add(logits);
        }
    }

    /// Combines the members after a timestep; returns the confidence.
    pub fn combine(&mut self) -> f64 {
        let k = self.members.len() as f64;
        self.mean.fill(0.0);
        for member in &self.members {
            for (mean, p) in self.mean.iter_mut().zip(member.probabilities()) {
                *mean += p;
            }
        }
        for mean in &mut self.mean {
            *mean /= k;
        }
        let previous = self.best;
        self.best = argmax(&self.mean);
        self.changed = self.run_length == 0 || self.best != previous;
        self.run_length = if self.changed { 1 } else { self.run_length + 1 };
        let centre = self.mean[self.best];
        self.variance =
            self.members.iter().map(|m| (m.probabilities()[self.best] - centre).powi(2)).sum::<f64>() / k;
        centre
    }

    pub fn members(&self) -> usize {
        self.members.len()
    }

    pub fn timesteps(&self) -> usize {
        self.members.first().map_or(0, RunningPrediction::timesteps)
    }

    pub fn probabilities(&self) -> &[f64] {
        &self.mean
    }

    pub fn best_class(&self) -> usize {
        self.best
    }

    pub fn confidence(&self) -> f64 {
        self.mean.get(self.best).copied().unwrap_or(0.0)
    }

    /// Variance across members of the chosen class's probability.
    pub fn variance(&self) -> f64 {
        self.variance
    }

    /// Whether the prediction differs from the previous timestep's (always after the first).
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// How many timesteps in a row, ending now, predicted the current class.
    pub fn run_length(&self) -> usize {
        self.run_length
    }

    /// The largest probability minus the second largest (infinite for a single class).
    pub fn margin(&self) -> f64 {
        let mut second = f64::NEG_INFINITY;
        for (c, &p) in self.mean.iter().enumerate() {
            if c != self.best && p > second {
                second = p;
            }
        }
        self.confidence() - second
    }

    /// `-sum_c p_c ln p_c` over the classes in order, skipping zero probabilities.
    pub fn entropy(&self) -> f64 {
        let mut acc = 0.0;
        for &p in &self.mean {
            if p > 0.0 {
                acc += p * p.ln();
            }
        }
        -acc
    }

    /// The fraction of members whose own prediction is the ensemble's class.
    pub fn agreement(&self) -> f64 {
        let agreeing = self.members.iter().filter(|m| m.best_class() == self.best).count();
        agreeing as f64 / self.members.len() as f64
    }
}

/// Index of the largest value, the first on ties (as numpy's argmax).
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_the_running_mean() {
        let mut p = RunningPrediction::new(2);
        let c1 = p.add(&[2.0, 0.0]);
        assert!((c1 - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-12);
        // mean logits now [1, 1]: a tie
        let c2 = p.add(&[0.0, 2.0]);
        assert!((c2 - 0.5).abs() < 1e-12);
        assert_eq!(p.best_class(), 0);
        assert_eq!(p.timesteps(), 2);
        let sum: f64 = p.probabilities().iter().sum();
        assert!((sum - 1.0).abs() < 1e-12);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let mut p = RunningPrediction::new(3);
        let c = p.add(&[1000.0, 999.0, -1000.0]);
        assert!(c.is_finite() && c > 0.7 && c < 0.74);
        assert_eq!(p.best_class(), 0);
    }

    #[test]
    fn cutoff_decisions() {
        let policy = CutoffPolicy::cutoff(0.9, 1, 4);
        assert_eq!(policy.decide(1, 0.95, 0.0), Some(ExitReason::Confident));
        assert_eq!(policy.decide(1, 0.9, 0.0), Some(ExitReason::Confident));
        assert_eq!(policy.decide(3, 0.5, 0.0), None);
        assert_eq!(policy.decide(4, 0.5, 0.0), Some(ExitReason::MaxTimesteps));
        let never_early = CutoffPolicy::cutoff(1.0, 1, 8);
        assert_eq!(never_early.decide(1, 1.0, 0.0), None);
        assert_eq!(never_early.decide(8, 1.0, 0.0), Some(ExitReason::MaxTimesteps));
        let patient = CutoffPolicy::cutoff(0.5, 3, 8);
        assert_eq!(patient.decide(2, 0.99, 0.0), None);
        assert_eq!(patient.decide(3, 0.99, 0.0), Some(ExitReason::Confident));
        let agreeing = CutoffPolicy { max_variance: Some(0.01), ..CutoffPolicy::cutoff(0.9, 1, 8) };
        assert_eq!(agreeing.decide(1, 0.95, 0.02), None);
        assert_eq!(agreeing.decide(1, 0.95, 0.01), Some(ExitReason::Confident));
        assert_eq!(agreeing.decide(8, 0.95, 0.5), Some(ExitReason::MaxTimesteps));
    }

    #[test]
    fn ensemble_mean_and_variance_by_hand() {
        let mut e = EnsemblePrediction::new(2, 2);
        e.add(0, &[0.0, 0.0]); // member 0: [0.5, 0.5]
        e.add(1, &[(3.0f64).ln() as f32, 0.0]); // member 1: [0.75, 0.25]
        let confidence = e.combine();
        assert!((confidence - 0.625).abs() < 1e-7);
        assert_eq!(e.best_class(), 0);
        // variance of [0.5, 0.75] around 0.625
        assert!((e.variance() - 0.015625).abs() < 1e-7);
        assert_eq!(e.timesteps(), 1);
        let single = {
            let mut one = EnsemblePrediction::new(1, 3);
            one.add(0, &[1.0, 2.0, 0.5]);
            one.combine();
            one
        };
        let mut reference = RunningPrediction::new(3);
        reference.add(&[1.0, 2.0, 0.5]);
        assert_eq!(single.probabilities(), reference.probabilities());
        assert_eq!(single.variance(), 0.0);
    }
}
