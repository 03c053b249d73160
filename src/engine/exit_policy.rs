//! Exit policies beyond one threshold: a threshold per timestep, and a learned stop score over what
//! the row already knows. Evaluated per row after each timestep, without allocating, in f64 and in
//! the same order of operations as the training job's `spiketrain.exit_features` /
//! `spiketrain.exit_policies`, so that the server's exits equal the offline evaluation's.

use std::sync::Arc;

use serde::Serialize;

use super::prediction::EnsemblePrediction;

/// The kinds of exit policy a model can ship (`exit-policies.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// One confidence threshold for every timestep (the plain rule).
    Cutoff,
    /// A confidence threshold per timestep.
    Schedule,
    /// A small learned model's stop score against a threshold.
    Learned,
}

impl PolicyKind {
    pub const ALL: [Self; 3] = [Self::Cutoff, Self::Schedule, Self::Learned];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cutoff => "cutoff",
            Self::Schedule => "schedule",
            Self::Learned => "learned",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Index for per-policy counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a row reads after each timestep (see `spiketrain.exit_features` for the definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Confidence,
    Margin,
    Entropy,
    Progress,
    Changed,
    RunLength,
    Agreement,
    Variance,
    /// 1 at timestep `t` (1-based), else 0.
    Step(usize),
}

impl Feature {
    const NAMED: [(&'static str, Feature); 8] = [
        ("confidence", Feature::Confidence),
        ("margin", Feature::Margin),
        ("entropy", Feature::Entropy),
        ("progress", Feature::Progress),
        ("changed", Feature::Changed),
        ("run_length", Feature::RunLength),
        ("agreement", Feature::Agreement),
        ("variance", Feature::Variance),
    ];

    /// The feature a name stands for, for a model of `timesteps` steps; `Err` lists what is known.
    pub fn parse(name: &str, timesteps: usize) -> Result<Self, String> {
        if let Some((_, feature)) = Self::NAMED.iter().find(|(n, _)| *n == name) {
            return Ok(*feature);
        }
        if let Some(step) = name.strip_prefix("step_").and_then(|s| s.parse::<usize>().ok()) {
            if (1..timesteps).contains(&step) {
                return Ok(Self::Step(step));
            }
        }
        Err(format!(
            "unknown feature {name:?} (known: {}, and step_1 .. step_{})",
            Self::NAMED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            timesteps.saturating_sub(1)
        ))
    }

    fn value(self, row: &EnsemblePrediction, timesteps: usize) -> f64 {
        let t = row.timesteps();
        match self {
            Self::Confidence => row.confidence(),
            Self::Margin => row.margin(),
            Self::Entropy => row.entropy(),
            Self::Progress => t as f64 / timesteps as f64,
            Self::Changed => f64::from(u8::from(row.changed())),
            Self::RunLength => row.run_length() as f64 / timesteps as f64,
            Self::Agreement => row.agreement(),
            Self::Variance => row.variance(),
            Self::Step(step) => f64::from(u8::from(t == step)),
        }
    }
}

/// One dense layer: `out[j] = bias[j] + sum_i weights[j][i] * in[i]`, summed in order of `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Row-major `[outputs][inputs]`.
    pub weights: Vec<f64>,
    pub bias: Vec<f64>,
    pub inputs: usize,
}

impl Dense {
    fn outputs(&self) -> usize {
        self.bias.len()
    }
}

/// A learned stop score: standardised features, at most one tanh hidden layer, one linear output
/// (the logit of "the answer now is the answer at T"). Checked when the model loads.
#[derive(Debug, Clone, PartialEq)]
pub struct StopScore {
    pub features: Vec<Feature>,
    pub input_mean: Vec<f64>,
    pub input_scale: Vec<f64>,
    /// The tanh layer, if any.
    pub hidden: Option<Dense>,
    /// One output.
    pub output: Dense,
    /// The model's T (for `progress` and `run_length`).
    pub timesteps: usize,
}

/// The most features a stop score may read: its standardised inputs live in a buffer of this size on
/// the stack, computed once per row and timestep (no allocation, each feature computed once).
pub const MAX_FEATURES: usize = 64;

impl StopScore {
    /// The score of a row after its latest timestep.
    pub fn score(&self, row: &EnsemblePrediction) -> f64 {
        let n = self.features.len().min(MAX_FEATURES);
        let mut inputs = [0.0f64; MAX_FEATURES];
        for (i, input) in inputs.iter_mut().enumerate().take(n) {
            *input = (self.features[i].value(row, self.timesteps) - self.input_mean[i]) / self.input_scale[i];
        }
        let inputs = &inputs[..n];
        match &self.hidden {
            None => dot(self.output.bias[0], &self.output.weights, inputs),
            Some(hidden) => {
                let mut out = self.output.bias[0];
                for j in 0..hidden.outputs() {
                    let activation = dot(hidden.bias[j], &hidden.weights[j * n..(j + 1) * n], inputs).tanh();
                    out += self.output.weights[j] * activation;
                }
                out
            }
        }
    }
}

/// `start + sum_i weights[i] * inputs[i]`, summed in order of `i` (as the offline evaluation does).
fn dot(start: f64, weights: &[f64], inputs: &[f64]) -> f64 {
    let mut acc = start;
    for (w, x) in weights.iter().zip(inputs) {
        acc += w * x;
    }
    acc
}

/// How a request decides to stop, besides its timestep bounds.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitRule {
    /// The request's `threshold` at every timestep.
    Cutoff,
    /// A threshold per timestep (index t - 1); 1.0 never stops there.
    Schedule(Arc<[f64]>),
    /// Stop once the score reaches the threshold; `None` never stops early.
    Learned { score: Arc<StopScore>, threshold: Option<f64> },
}

impl ExitRule {
    pub fn kind(&self) -> PolicyKind {
        match self {
            Self::Cutoff => PolicyKind::Cutoff,
            Self::Schedule(_) => PolicyKind::Schedule,
            Self::Learned { .. } => PolicyKind::Learned,
        }
    }

    /// Whether a rule other than the cutoff says stop now (the cutoff is decided by the caller,
    /// from the threshold).
    pub fn says_stop(&self, row: &EnsemblePrediction) -> bool {
        match self {
            Self::Cutoff => false,
            Self::Schedule(thresholds) => {
                let threshold = thresholds.get(row.timesteps().saturating_sub(1)).copied().unwrap_or(1.0);
                threshold < 1.0 && row.confidence() >= threshold
            }
            Self::Learned { score, threshold } => threshold.is_some_and(|t| score.score(row) >= t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(steps: &[[f32; 3]]) -> EnsemblePrediction {
        let mut e = EnsemblePrediction::new(1, 3);
        for logits in steps {
            e.add(0, logits);
            e.combine();
        }
        e
    }

    #[test]
    fn features_by_hand() {
        let r = row(&[[2.0, 0.0, 0.0], [0.0, 4.0, 0.0]]);
        // mean logits [1, 2, 0]: softmax by hand
        let z: f64 = [1.0f64, 2.0, 0.0].iter().map(|l| (l - 2.0f64).exp()).sum();
        let p = [(-1.0f64).exp() / z, 1.0 / z, (-2.0f64).exp() / z];
        assert_eq!(r.best_class(), 1);
        assert!((Feature::Margin.value(&r, 4) - (p[1] - p[0])).abs() < 1e-12);
        let entropy: f64 = -p.iter().map(|q| q * q.ln()).sum::<f64>();
        assert!((Feature::Entropy.value(&r, 4) - entropy).abs() < 1e-12);
        assert_eq!(Feature::Progress.value(&r, 4), 0.5);
        assert_eq!(Feature::Changed.value(&r, 4), 1.0);
        assert_eq!(Feature::RunLength.value(&r, 4), 0.25);
        assert_eq!(Feature::Agreement.value(&r, 4), 1.0);
        assert_eq!(Feature::Step(2).value(&r, 4), 1.0);
        assert_eq!(Feature::Step(1).value(&r, 4), 0.0);
        let steady = row(&[[0.0, 3.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0]]);
        assert_eq!(Feature::Changed.value(&steady, 4), 0.0);
        assert_eq!(Feature::RunLength.value(&steady, 4), 0.75);
    }

    #[test]
    fn unknown_features_are_named() {
        assert_eq!(Feature::parse("step_3", 4), Ok(Feature::Step(3)));
        let error = Feature::parse("step_4", 4).unwrap_err();
        assert!(error.contains("\"step_4\"") && error.contains("step_3"), "{error}");
        assert!(Feature::parse("novelty", 4).unwrap_err().contains("margin"));
    }

    #[test]
    fn a_schedule_stops_on_its_own_timestep_threshold() {
        let rule = ExitRule::Schedule(Arc::from(vec![0.99, 0.5, 1.0]));
        let first = row(&[[0.0, 2.0, 0.0]]);
        assert!(!rule.says_stop(&first), "0.79 < 0.99 at t = 1");
        let second = row(&[[0.0, 2.0, 0.0], [0.0, 2.0, 0.0]]);
        assert!(rule.says_stop(&second), "0.79 >= 0.5 at t = 2");
        let third = row(&[[0.0, 9.0, 0.0], [0.0, 9.0, 0.0], [0.0, 9.0, 0.0]]);
        assert!(!rule.says_stop(&third), "1.0 never stops at t = 3");
    }

    #[test]
    fn a_learned_score_is_the_dense_layers_by_hand() {
        let score = StopScore {
            features: vec![Feature::Confidence, Feature::Progress],
            input_mean: vec![0.5, 0.0],
            input_scale: vec![0.5, 1.0],
            hidden: Some(Dense { weights: vec![1.0, 2.0, -1.0, 0.5], bias: vec![0.1, -0.2], inputs: 2 }),
            output: Dense { weights: vec![3.0, -2.0], bias: vec![0.25], inputs: 2 },
            timesteps: 4,
        };
        let r = row(&[[0.0, 2.0, 0.0]]);
        let x = [(r.confidence() - 0.5) / 0.5, 0.25];
        let h = [(0.1 + x[0] + 2.0 * x[1]).tanh(), (-0.2 - x[0] + 0.5 * x[1]).tanh()];
        let expected = 0.25 + 3.0 * h[0] - 2.0 * h[1];
        assert!((score.score(&r) - expected).abs() < 1e-12);
        let shared = Arc::new(score);
        let stop = ExitRule::Learned { score: shared.clone(), threshold: Some(expected - 1e-6) };
        let wait = ExitRule::Learned { score: shared.clone(), threshold: Some(expected + 1e-6) };
        let never = ExitRule::Learned { score: shared, threshold: None };
        assert!(stop.says_stop(&r) && !wait.says_stop(&r) && !never.says_stop(&r));
    }
}
