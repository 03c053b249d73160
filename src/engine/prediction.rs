//! A request row's running prediction: the softmax of the running mean of each member's logits, the
//! ensemble's mean of them, and what an exit policy reads of it. Kept apart from the policies so that
//! both the cutoff (`policy`) and the richer rules (`exit_policy`) read it without using each other.

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
