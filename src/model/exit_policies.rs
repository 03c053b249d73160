//! `exit-policies.json`: the exit policies a model directory ships (written by the training job's
//! `spiketrain.policy_calibration`), read and checked when the model loads. A malformed file, or one
//! written for another model shape, refuses the model with a message naming the field; the other
//! models keep serving. The file is re-read with the model on every reload.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::{check_threshold, ModelContract};
use crate::engine::exit_policy::MAX_FEATURES;
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
    if n == 0 || n > MAX_FEATURES {
        return Err(bad(field("features"), format!("{n} features: a stop score reads 1 to {MAX_FEATURES}")));
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::InputKind;

    fn contract(timesteps: usize, classes: usize, members: usize) -> ModelContract {
        ModelContract {
            contract_version: "1".into(),
            timesteps,
            num_classes: classes,
            labels: (0..classes).map(|c| c.to_string()).collect(),
            input_kind: InputKind::Static,
            frame_shape: vec![1, 8, 8],
            default_threshold: 0.9,
            accuracy_per_timestep: vec![0.5; timesteps],
            input_description: None,
            training: Value::Null,
            states: Vec::new(),
            events: None,
            reports_synaptic_ops: false,
            members,
            default_max_variance: None,
            calibration: Vec::new(),
        }
    }

    /// A small valid file for a model of 3 timesteps and 2 classes.
    fn file() -> Value {
        json!({
            "format": FORMAT, "version": 1, "written_by": "test", "timesteps": 3, "classes": 2, "members": 1,
            "serving_policy": "schedule", "serving_policy_guarantee": "learned",
            "policies": {
                "cutoff": {"kind": "cutoff", "point": [{"max_accuracy_drop": 0.5, "threshold": 0.9}]},
                "schedule": {"kind": "schedule",
                    "point": [{"max_accuracy_drop": 1.0, "thresholds": [0.9, 0.8, 0.7], "slope": 0.2},
                              {"max_accuracy_drop": 0.5, "thresholds": [0.95, 0.9, 0.85]}],
                    "guarantee": [{"level": 0.9, "max_accuracy_drop": 0.5, "thresholds": [1.0, 0.99, 0.98]}]},
                "learned": {"kind": "learned",
                    "point": [{"max_accuracy_drop": 0.5, "threshold": 1.5}],
                    "guarantee": [{"level": 0.9, "max_accuracy_drop": 0.5, "threshold": 2.0},
                                  {"level": 0.95, "max_accuracy_drop": 0.5, "threshold": null},
                                  {"level": 0.95, "max_accuracy_drop": 2.0, "threshold": 3.0}],
                    "score": {"features": ["confidence", "step_2"], "input_mean": [0.5, 0.0],
                              "input_scale": [0.5, 1.0],
                              "layers": [{"weights": [[1.0, 0.5], [0.0, -1.0]], "bias": [0.0, 0.1]},
                                         {"weights": [[2.0, 1.0]], "bias": [0.5]}]}}
            }
        })
    }

    fn refusal(edit: impl FnOnce(&mut Value)) -> String {
        let mut document = file();
        edit(&mut document);
        ExitPolicies::parse(&document.to_string(), &contract(3, 2, 1)).expect_err("refused").to_string()
    }

    #[test]
    fn a_valid_file_is_read_and_rows_are_chosen_as_documented() {
        let policies = ExitPolicies::parse(&file().to_string(), &contract(3, 2, 1)).expect("valid");
        assert_eq!(
            (policies.serving, policies.serving_guarantee),
            (PolicyKind::Schedule, PolicyKind::Learned)
        );
        let ask = |policy, budget, guarantee| PolicyAsk { policy, budget, guarantee };
        // The serving policy, the largest budget not above the one asked.
        let row = policies.select("m", ask(None, 0.7, None)).expect("row");
        assert_eq!(row.max_accuracy_drop, 0.5);
        assert_eq!(row.rule, ExitRule::Schedule(Arc::from(vec![0.95, 0.9, 0.85])));
        // A guarantee: the serving guarantee policy, the smallest level at or above the one asked.
        let row = policies.select("m", ask(None, 5.0, Some(0.92))).expect("row");
        assert_eq!((row.level, row.max_accuracy_drop), (Some(0.95), 2.0));
        let row = policies.select("m", ask(None, 0.5, Some(0.95))).expect("row");
        assert!(matches!(row.rule, ExitRule::Learned { threshold: None, .. }), "a never-early row");
        let row = policies.select("m", ask(Some(PolicyKind::Cutoff), 3.0, None)).expect("row");
        assert_eq!((row.rule.clone(), row.threshold), (ExitRule::Cutoff, 0.9));
        let missing =
            policies.select("m", ask(Some(PolicyKind::Cutoff), 0.5, Some(0.9))).expect_err("no rows");
        assert!(missing.contains("no calibration at level 0.9"), "{missing}");
        let high = policies.select("m", ask(None, 0.5, Some(0.99))).expect_err("no level");
        assert!(high.contains("levels: 0.9, 0.95"), "{high}");
        let small = policies.select("m", ask(Some(PolicyKind::Schedule), 0.1, None)).expect_err("too small");
        assert!(small.contains("budgets in percentage points: 0.5, 1"), "{small}");
    }

    #[test]
    fn broken_files_are_refused_naming_the_field() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|d| d["format"] = json!("other")), "format: expected"),
            (Box::new(|d| d["version"] = json!(2)), "version: this server reads version 1, found 2"),
            (Box::new(|d| d["timesteps"] = json!(4)), "timesteps: written for 4, but the model has 3"),
            (Box::new(|d| d["members"] = json!(3)), "members: written for 3, but the model has 1"),
            (Box::new(|d| d["serving_policy"] = json!("oracle")), "serving_policy: \"oracle\" is not one of"),
            (
                Box::new(|d| d["policies"]["cutoff"]["point"][0]["threshold"] = json!(1.5)),
                "policies.cutoff.point[0].threshold: must be in (0, 1]",
            ),
            (
                Box::new(|d| d["policies"]["schedule"]["point"][1]["thresholds"] = json!([0.9])),
                "policies.schedule.point[1].thresholds: has 1 entries for 3 timesteps",
            ),
            (
                Box::new(|d| d["policies"]["schedule"]["point"][1]["thresholds"][2] = json!(0.0)),
                "policies.schedule.point[1].thresholds[2]: must be in (0, 1]",
            ),
            (
                Box::new(|d| d["policies"]["schedule"]["guarantee"][0]["level"] = json!(1.0)),
                "policies.schedule.guarantee[0].level: must lie in (0, 1)",
            ),
            (
                Box::new(|d| d["policies"]["learned"]["point"][0]["thresholds"] = json!([1, 2, 3])),
                "policies.learned.point[0].thresholds: a learned policy's row has no thresholds",
            ),
            (
                Box::new(|d| d["policies"]["learned"]["score"]["features"][1] = json!("step_3")),
                "policies.learned.score.features[1]: unknown feature \"step_3\"",
            ),
            (
                Box::new(|d| d["policies"]["learned"]["score"]["input_scale"][0] = json!(0.0)),
                "policies.learned.score.input_scale[0]: must be positive",
            ),
            (
                Box::new(|d| d["policies"]["learned"]["score"]["layers"][1]["weights"][0] = json!([1.0])),
                "policies.learned.score.layers[1].weights[0]: has 1 entries for 2 inputs",
            ),
            (
                Box::new(|d| d["policies"]["learned"]["score"]["layers"][1]["bias"] = json!([0.5, 0.5])),
                "policies.learned.score.layers[1].weights: 1 rows for 2 biases",
            ),
            (
                Box::new(|d| {
                    d["policies"]["learned"]["score"].as_object_mut().map(|s| s.remove("layers"));
                }),
                "missing field `layers`",
            ),
            (
                Box::new(|d| d["policies"]["cutoff"]["point"][0]["threshhold"] = json!(0.5)),
                "unknown field `threshhold`",
            ),
            (
                Box::new(|d| d["policies"]["delay"] = json!({"kind": "delay", "point": []})),
                "policies.delay: unknown policy",
            ),
            (
                Box::new(
                    |d| d["policies"]["cutoff"]["point"] = json!([{"max_accuracy_drop": 0.5, "threshold": 0.9}, {"max_accuracy_drop": 0.5, "threshold": 0.8}]),
                ),
                "policies.cutoff.point: budget 0.5 appears twice",
            ),
        ];
        for (edit, expected) in cases {
            let message = refusal(edit);
            assert!(message.starts_with(POLICY_FILE), "{message}");
            assert!(message.contains(expected), "{message:?} should say {expected:?}");
        }
        // JSON has no NaN: a file written with one is not JSON, and says where.
        let text = file().to_string().replace("0.9}", "NaN}");
        let error = ExitPolicies::parse(&text, &contract(3, 2, 1)).expect_err("not JSON").to_string();
        assert!(error.contains("(document)") && error.contains("line 1"), "{error}");
    }

    #[test]
    fn every_shipped_policy_file_is_valid() {
        let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let mut read = 0;
        for entry in std::fs::read_dir(models).expect("models").flatten() {
            let path = entry.path().join(POLICY_FILE);
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let document: Value = serde_json::from_str(&text).expect("JSON");
            let shape = |k: &str| document[k].as_u64().expect("a count") as usize;
            let model = contract(shape("timesteps"), shape("classes"), shape("members"));
            ExitPolicies::parse(&text, &model).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            read += 1;
        }
        assert!(read >= 7, "the shipped models carry their policies ({read} read)");
    }
}
