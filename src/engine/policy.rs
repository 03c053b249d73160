//! The anytime cutoff: a running mean of logits, its softmax, and when to stop.

use serde::Serialize;

use super::exit_policy::{ExitRule, PolicyKind};
use super::prediction::EnsemblePrediction;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::prediction::RunningPrediction;

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
