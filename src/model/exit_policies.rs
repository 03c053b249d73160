//! `exit-policies.json`: the exit policies a model directory ships (written by the training job's
//! `spiketrain.policy_calibration`), read and checked when the model loads. A malformed file, or one
//! written for another model shape, refuses the model with a message naming the field; the other
//! models keep serving. The file is re-read with the model on every reload.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::{check_threshold, ModelContract};
use crate::engine::{Dense, ExitRule, Feature, PolicyKind, StopScore};

/// The file, beside `model.onnx` or `ensemble.json`.
pub const POLICY_FILE: &str = "exit-policies.json";
/// Its `format` field.
pub const FORMAT: &str = "spikeserve.exit-policies";
/// The `version` this server reads.
pub const VERSION: u64 = 1;

/// Why a model's policy file was refused: the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{POLICY_FILE}: {field}: {reason}")]
pub struct PolicyFileError {
    pub field: String,
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> PolicyFileError {
    PolicyFileError { field: field.into(), reason: reason.into() }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    format: String,
    version: u64,
    written_by: String,
    #[serde(default)]
    written_at: Option<String>,
    timesteps: usize,
    classes: usize,
    members: usize,
    serving_policy: String,
    serving_policy_guarantee: String,
    #[serde(default)]
    data: Value,
    policies: std::collections::BTreeMap<String, PolicySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    kind: String,
    point: Vec<RowSpec>,
    #[serde(default)]
    guarantee: Vec<RowSpec>,
    #[serde(default)]
    score: Option<ScoreSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowSpec {
    max_accuracy_drop: f64,
    #[serde(default)]
    level: Option<f64>,
    /// cutoff: the confidence threshold; learned: the score threshold (`null`: never early).
    #[serde(default)]
    threshold: Option<f64>,
    /// schedule: one confidence threshold per timestep.
    #[serde(default)]
    thresholds: Option<Vec<f64>>,
    /// schedule: the slope the thresholds came from (informative).
    #[serde(default)]
    slope: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreSpec {
    features: Vec<String>,
    input_mean: Vec<f64>,
    input_scale: Vec<f64>,
    layers: Vec<LayerSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerSpec {
    weights: Vec<Vec<f64>>,
    bias: Vec<f64>,
}

/// One calibrated row of a policy: what a budget (and, for a guaranteed row, a level) runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    /// Percentage points of accuracy against the model at T.
    pub max_accuracy_drop: f64,
    /// For a guaranteed row: the probability over the calibration data that the promise holds.
    pub level: Option<f64>,
    pub rule: ExitRule,
    /// The cutoff's threshold (1.0 for the other kinds: their rule decides).
    pub threshold: f64,
}

/// One policy of a model, with its point-calibrated and guaranteed rows.
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    pub kind: PolicyKind,
    /// Ascending budget.
    pub point: Vec<PolicyRow>,
    /// Ascending level, then budget.
    pub guarantee: Vec<PolicyRow>,
}

/// What `GET /v1/models/{model}` shows of a model's policies.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoliciesSummary {
    /// The policy a `max_accuracy_drop` request runs when it names none.
    pub serving_policy: PolicyKind,
    /// The policy a request with a `guarantee` runs when it names none.
    pub serving_policy_guarantee: PolicyKind,
    pub policies: Vec<PolicySummary>,
    pub written_by: String,
    /// What the policies were fit and calibrated on, as the file says.
    #[schema(value_type = Object)]
    pub data: Value,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicySummary {
    pub name: PolicyKind,
    /// Budgets (percentage points) of its point-calibrated rows.
    pub budgets: Vec<f64>,
    /// Guarantee levels it has rows for.
    pub guarantee_levels: Vec<f64>,
}

/// A model's exit policies, checked against its contract.
#[derive(Debug, Clone)]
pub struct ExitPolicies {
    pub serving: PolicyKind,
    pub serving_guarantee: PolicyKind,
    pub policies: Vec<ModelPolicy>,
    pub summary: PoliciesSummary,
}

/// What a request asked for, for [`ExitPolicies::select`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyAsk {
    pub policy: Option<PolicyKind>,
    pub budget: f64,
    pub guarantee: Option<f64>,
}

fn list(values: impl Iterator<Item = f64>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}

impl ExitPolicies {
    /// Reads `dir/exit-policies.json` when there is one.
    pub fn load(dir: &Path, contract: &ModelContract) -> Result<Option<Self>, PolicyFileError> {
        let path = dir.join(POLICY_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| bad("(file)", format!("cannot read it: {e}")))?;
        Self::parse(&text, contract).map(Some)
    }

    /// Parses and checks a policy file against the model's contract.
    pub fn parse(text: &str, contract: &ModelContract) -> Result<Self, PolicyFileError> {
        let spec: FileSpec = serde_json::from_str(text).map_err(|e| bad("(document)", e.to_string()))?;
        if spec.format != FORMAT {
            return Err(bad("format", format!("expected {FORMAT:?}, found {:?}", spec.format)));
        }
        if spec.version != VERSION {
            return Err(bad(
                "version",
                format!("this server reads version {VERSION}, found {}", spec.version),
            ));
        }
        for (field, file, model) in [
            ("timesteps", spec.timesteps, contract.timesteps),
            ("classes", spec.classes, contract.num_classes),
            ("members", spec.members, contract.members),
        ] {
            if file != model {
                return Err(bad(field, format!("written for {file}, but the model has {model}")));
            }
        }
        let mut policies = Vec::new();
        for (name, policy) in &spec.policies {
            policies.push(checked_policy(name, policy, contract.timesteps)?);
        }
        let available = || spec.policies.keys().cloned().collect::<Vec<_>>().join(", ");
        let serving_of = |field: &str, name: &str| {
            PolicyKind::parse(name).filter(|kind| policies.iter().any(|p| p.kind == *kind)).ok_or_else(|| {
                bad(field, format!("{name:?} is not one of the file's policies ({})", available()))
            })
        };
        let serving = serving_of("serving_policy", &spec.serving_policy)?;
        let serving_guarantee = serving_of("serving_policy_guarantee", &spec.serving_policy_guarantee)?;
        let _ = spec.written_at;
        let summary = PoliciesSummary {
            serving_policy: serving,
            serving_policy_guarantee: serving_guarantee,
            policies: policies
                .iter()
                .map(|p| {
                    let mut levels: Vec<f64> = p.guarantee.iter().filter_map(|r| r.level).collect();
                    levels.dedup();
                    PolicySummary {
                        name: p.kind,
                        budgets: p.point.iter().map(|r| r.max_accuracy_drop).collect(),
                        guarantee_levels: levels,
                    }
                })
                .collect(),
            written_by: spec.written_by,
            data: spec.data,
        };
        Ok(Self { serving, serving_guarantee, policies, summary })
    }

    /// The row a request runs: the named policy (else the model's serving one), the guaranteed rows
    /// of the smallest level at or above the one asked when a guarantee is asked, and among them
    /// the largest budget that does not exceed the one asked. `Err` says what is available.
    pub fn select(&self, model: &str, ask: PolicyAsk) -> Result<&PolicyRow, String> {
        let kind =
            ask.policy.unwrap_or(if ask.guarantee.is_some() { self.serving_guarantee } else { self.serving });
        let policy = self.policies.iter().find(|p| p.kind == kind).ok_or_else(|| {
            format!(
                "policy: model \"{model}\" has no {:?} policy (it has: {})",
                kind.as_str(),
                self.policies.iter().map(|p| p.kind.as_str()).collect::<Vec<_>>().join(", ")
            )
        })?;
        let rows: Vec<&PolicyRow> = match ask.guarantee {
            None => policy.point.iter().collect(),
            Some(level) => {
                let levels = || {
                    let mut all: Vec<f64> = policy.guarantee.iter().filter_map(|r| r.level).collect();
                    all.dedup();
                    list(all.into_iter())
                };
                let chosen = policy
                    .guarantee
                    .iter()
                    .filter_map(|r| r.level)
                    .find(|&l| l >= level)
                    .ok_or_else(|| {
                        format!(
                            "guarantee: model \"{model}\"'s {} policy has no calibration at level {level} or above \
                             (levels: {})",
                            kind.as_str(),
                            levels()
                        )
                    })?;
                policy.guarantee.iter().filter(|r| r.level == Some(chosen)).collect()
            }
        };
        rows.iter().rev().find(|r| r.max_accuracy_drop <= ask.budget).copied().ok_or_else(|| {
            format!(
                "max_accuracy_drop: {} is below the smallest budget model \"{model}\"'s {} policy is calibrated for \
                 (budgets in percentage points: {})",
                ask.budget,
                kind.as_str(),
                list(rows.iter().map(|r| r.max_accuracy_drop))
            )
        })
    }
}

fn checked_policy(name: &str, spec: &PolicySpec, timesteps: usize) -> Result<ModelPolicy, PolicyFileError> {
    let at = |field: &str| format!("policies.{name}.{field}");
    let kind = PolicyKind::parse(name).ok_or_else(|| {
        bad(
            format!("policies.{name}"),
            format!("unknown policy (known: {})", PolicyKind::ALL.map(PolicyKind::as_str).join(", ")),
        )
    })?;
    if spec.kind != name {
        return Err(bad(at("kind"), format!("{:?} under the name {name:?}", spec.kind)));
    }
    let score = match (kind, &spec.score) {
        (PolicyKind::Learned, Some(score)) => Some(Arc::new(checked_score(score, timesteps, &at("score"))?)),
        (PolicyKind::Learned, None) => {
            return Err(bad(at("score"), "missing: a learned policy needs its score"))
        }
        (_, Some(_)) => return Err(bad(at("score"), "only a learned policy has a score")),
        (_, None) => None,
    };
    let rows =
        |field: &str, specs: &[RowSpec], guaranteed: bool| -> Result<Vec<PolicyRow>, PolicyFileError> {
            let mut rows = Vec::with_capacity(specs.len());
            for (i, row) in specs.iter().enumerate() {
                rows.push(checked_row(
                    kind,
                    row,
                    guaranteed,
                    timesteps,
                    score.as_ref(),
                    &at(&format!("{field}[{i}]")),
                )?);
            }
            rows.sort_by(|a, b| {
                a.level
                    .unwrap_or(0.0)
                    .total_cmp(&b.level.unwrap_or(0.0))
                    .then(a.max_accuracy_drop.total_cmp(&b.max_accuracy_drop))
            });
            if let Some(pair) = rows
                .windows(2)
                .find(|w| w[0].level == w[1].level && w[0].max_accuracy_drop == w[1].max_accuracy_drop)
            {
                return Err(bad(at(field), format!("budget {} appears twice", pair[0].max_accuracy_drop)));
            }
            Ok(rows)
        };
    let point = rows("point", &spec.point, false)?;
    if point.is_empty() {
        return Err(bad(at("point"), "empty: a policy needs at least one calibrated row"));
    }
    let guarantee = rows("guarantee", &spec.guarantee, true)?;
    Ok(ModelPolicy { kind, point, guarantee })
}

fn checked_row(
    kind: PolicyKind,
    row: &RowSpec,
    guaranteed: bool,
    timesteps: usize,
    score: Option<&Arc<StopScore>>,
    at: &str,
) -> Result<PolicyRow, PolicyFileError> {
    let field = |name: &str| format!("{at}.{name}");
    if !(row.max_accuracy_drop.is_finite() && row.max_accuracy_drop >= 0.0) {
        return Err(bad(
            field("max_accuracy_drop"),
            format!("must be a non-negative number, found {}", row.max_accuracy_drop),
        ));
    }
    let level = match (guaranteed, row.level) {
        (true, Some(level)) if level > 0.0 && level < 1.0 => Some(level),
        (true, Some(level)) => return Err(bad(field("level"), format!("must lie in (0, 1), found {level}"))),
        (true, None) => return Err(bad(field("level"), "missing: a guaranteed row needs its level")),
        (false, Some(_)) => return Err(bad(field("level"), "only guaranteed rows have a level")),
        (false, None) => None,
    };
    let unexpected =
        |name: &str| Err(bad(field(name), format!("a {} policy's row has no {name}", kind.as_str())));
    let (rule, threshold) = match kind {
        PolicyKind::Cutoff => {
            if row.thresholds.is_some() {
                return unexpected("thresholds");
            }
            let threshold = row.threshold.ok_or_else(|| bad(field("threshold"), "missing"))?;
            (ExitRule::Cutoff, check_threshold(threshold).map_err(|reason| bad(field("threshold"), reason))?)
        }
        PolicyKind::Schedule => {
            if row.threshold.is_some() {
                return unexpected("threshold");
            }
            let thresholds = row.thresholds.as_ref().ok_or_else(|| bad(field("thresholds"), "missing"))?;
            if thresholds.len() != timesteps {
                return Err(bad(
                    field("thresholds"),
                    format!("has {} entries for {timesteps} timesteps", thresholds.len()),
                ));
            }
            for (t, &value) in thresholds.iter().enumerate() {
                check_threshold(value).map_err(|reason| bad(format!("{at}.thresholds[{t}]"), reason))?;
            }
            (ExitRule::Schedule(Arc::from(thresholds.as_slice())), 1.0)
        }
        PolicyKind::Learned => {
            if row.thresholds.is_some() {
                return unexpected("thresholds");
            }
            if let Some(value) = row.threshold.filter(|v| !v.is_finite()) {
                return Err(bad(
                    field("threshold"),
                    format!("must be a finite number or null, found {value}"),
                ));
            }
            let score = score.ok_or_else(|| bad(field("threshold"), "the policy has no score"))?;
            (ExitRule::Learned { score: score.clone(), threshold: row.threshold }, 1.0)
        }
    };
    if row.slope.is_some_and(|s| !s.is_finite()) {
        return Err(bad(field("slope"), "must be a finite number"));
    }
    Ok(PolicyRow { max_accuracy_drop: row.max_accuracy_drop, level, rule, threshold })
}

fn checked_score(spec: &ScoreSpec, timesteps: usize, at: &str) -> Result<StopScore, PolicyFileError> {
    let field = |name: &str| format!("{at}.{name}");
    let features = spec
        .features
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Feature::parse(name, timesteps).map_err(|reason| bad(format!("{at}.features[{i}]"), reason))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = features.len();
    if n == 0 {
        return Err(bad(field("features"), "empty"));
    }
    for (name, values) in [("input_mean", &spec.input_mean), ("input_scale", &spec.input_scale)] {
        if values.len() != n {
            return Err(bad(field(name), format!("has {} entries for {n} features", values.len())));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("{at}.{name}[{i}]"), format!("must be finite, found {}", values[i])));
        }
    }
    if let Some(i) = spec.input_scale.iter().position(|&v| v <= 0.0) {
        return Err(bad(
            format!("{at}.input_scale[{i}]"),
            format!("must be positive, found {}", spec.input_scale[i]),
        ));
    }
    let dense = |i: usize, layer: &LayerSpec, inputs: usize| -> Result<Dense, PolicyFileError> {
        let place = format!("{at}.layers[{i}]");
        if layer.weights.len() != layer.bias.len() || layer.bias.is_empty() {
            return Err(bad(
                format!("{place}.weights"),
                format!("{} rows for {} biases", layer.weights.len(), layer.bias.len()),
            ));
        }
        let mut weights = Vec::with_capacity(inputs * layer.bias.len());
        for (j, row) in layer.weights.iter().enumerate() {
            if row.len() != inputs {
                return Err(bad(
                    format!("{place}.weights[{j}]"),
                    format!("has {} entries for {inputs} inputs", row.len()),
                ));
            }
            weights.extend_from_slice(row);
        }
        if weights.iter().chain(&layer.bias).any(|v| !v.is_finite()) {
            return Err(bad(place, "weights and biases must be finite"));
        }
        Ok(Dense { weights, bias: layer.bias.clone(), inputs })
    };
    let (hidden, output) = match spec.layers.as_slice() {
        [only] => (None, dense(0, only, n)?),
        [first, last] => {
            let hidden = dense(0, first, n)?;
            let output = dense(1, last, hidden.bias.len())?;
            (Some(hidden), output)
        }
        layers => {
            return Err(bad(
                field("layers"),
                format!(
                    "{} layers: a stop score has one (logistic) or two (one tanh hidden layer)",
                    layers.len()
                ),
            ))
        }
    };
    if output.bias.len() != 1 {
        return Err(bad(
            field("layers"),
            format!("the last layer has {} outputs; a score has one", output.bias.len()),
        ));
    }
    Ok(StopScore {
        features,
        input_mean: spec.input_mean.clone(),
        input_scale: spec.input_scale.clone(),
        hidden,
        output,
        timesteps,
    })
}
