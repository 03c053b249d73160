//! Turns a request's parameters into what the engine runs, checked against the model. Shared by
//! every door (JSON, SSE, gRPC, KServe), so that each validates the same way and says the same
//! thing when a value is wrong.

use std::time::{Duration, Instant};

use super::error::ApiError;
use super::schema::InferRequest;
use crate::contract::{check_max_variance, check_threshold};
use crate::engine::{AnytimeRequest, CutoffPolicy, ExitRule, PolicyKind, Priority, RequestFrames};
use crate::input::events::Event;
use crate::input::{decode_json_tensor, into_frames, DenseTensor};
use crate::model::{CalibratedThreshold, ExitPolicies, LoadedModel, ModelContract, PolicyAsk};

/// The longest latency budget accepted (one hour): beyond it a budget is surely a unit mistake.
const MAX_BUDGET_MS: f64 = 3_600_000.0;

/// The budget a request that names a policy but no `max_accuracy_drop` runs at (percentage points).
pub const DEFAULT_POLICY_BUDGET: f64 = 0.5;

/// When to stop, as a client asked; unset fields take the model's defaults.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PolicyParams {
    pub threshold: Option<f64>,
    pub min_timesteps: Option<usize>,
    pub max_timesteps: Option<usize>,
    pub latency_budget_ms: Option<f64>,
    pub max_variance: Option<f64>,
    /// Priority class as sent; checked by [`priority`].
    pub priority: Option<u64>,
    /// Accuracy-drop budget (percentage points) instead of a threshold: picks a row of the model's
    /// calibration table ([`calibrated_threshold`]), or of the model's exit policies.
    pub max_accuracy_drop: Option<f64>,
    /// The exit policy by name (`cutoff`, `schedule`, `learned`); the model's choice when absent.
    pub policy: Option<String>,
    /// With `max_accuracy_drop`: the probability (e.g. 0.9) with which the budget must hold over the
    /// calibration data; picks a guaranteed calibration row.
    pub guarantee: Option<f64>,
}

/// What a request feeds the model.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestInput {
    /// The model's frame (static models) or `[n, *frame]` frames.
    Tensor(DenseTensor),
    /// Raw events, for event models.
    Events(Vec<Event>),
}

/// A request from any door, decoded but not yet checked against the model.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    pub input: RequestInput,
    pub policy: PolicyParams,
    pub return_confidences: bool,
}

impl InferRequest {
    /// Decodes the JSON body's input; the rest is checked by [`anytime_request`].
    pub fn into_spec(self) -> Result<RequestSpec, ApiError> {
        let input = match (&self.input, self.events) {
            (Some(input), None) => RequestInput::Tensor(decode_json_tensor(input, self.shape.as_deref())?),
            (None, Some(events)) => RequestInput::Events(events.0?),
            (Some(_), Some(_)) => {
                return Err(ApiError::InvalidField("give either \"input\" or \"events\", not both".into()))
            }
            (None, None) => return Err(ApiError::InvalidField("missing field `input` (or `events`)".into())),
        };
        Ok(RequestSpec {
            input,
            policy: PolicyParams {
                threshold: self.threshold,
                min_timesteps: self.min_timesteps,
                max_timesteps: self.max_timesteps,
                latency_budget_ms: self.latency_budget_ms,
                max_variance: self.max_variance,
                priority: self.priority,
                max_accuracy_drop: self.max_accuracy_drop,
                policy: self.policy,
                guarantee: self.guarantee,
            },
            return_confidences: self.return_confidences,
        })
    }
}

/// Validates the request against the model and builds what the engine runs.
pub fn anytime_request(
    model: &LoadedModel,
    spec: RequestSpec,
    arrived: Instant,
) -> Result<AnytimeRequest, ApiError> {
    checked_request(&model.name, &model.contract, model.exit_policies.as_deref(), spec, arrived)
}

/// [`anytime_request`] against a contract and policies alone (no engine needed: the fuzz targets use it).
pub fn checked_request(
    name: &str,
    contract: &ModelContract,
    policies: Option<&ExitPolicies>,
    spec: RequestSpec,
    arrived: Instant,
) -> Result<AnytimeRequest, ApiError> {
    let mut policy = cutoff_policy(&spec.policy, name, contract, policies)?;
    let deadline = deadline(spec.policy.latency_budget_ms, arrived)?;
    let priority = priority(spec.policy.priority)?;
    let frames = request_frames(spec.input, name, contract)?;
    // A frame sequence caps the timesteps: there is nothing to feed after its last frame.
    if let RequestFrames::Sequence { count, .. } = &frames {
        policy.max_timesteps = policy.max_timesteps.min(*count);
        policy.min_timesteps = policy.min_timesteps.min(policy.max_timesteps);
    }
    Ok(AnytimeRequest {
        frames,
        policy,
        deadline,
        record_confidences: spec.return_confidences,
        partials: None,
        priority,
        trace: None,
    })
}

/// What a session's `start` message asks for, checked against the model.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    pub policy: CutoffPolicy,
    pub deadline: Option<Instant>,
    pub priority: Priority,
    pub return_confidences: bool,
}

/// Checks a session's policy against the model (a session's frames come later, one by one).
pub fn session_policy(
    model: &LoadedModel,
    params: &PolicyParams,
    return_confidences: bool,
    arrived: Instant,
) -> Result<SessionPolicy, ApiError> {
    Ok(SessionPolicy {
        policy: cutoff_policy(params, &model.name, &model.contract, model.exit_policies.as_deref())?,
        deadline: deadline(params.latency_budget_ms, arrived)?,
        priority: priority(params.priority)?,
        return_confidences,
    })
}

/// The priority class, or the model-independent default.
pub fn priority(value: Option<u64>) -> Result<Priority, ApiError> {
    match value {
        None => Ok(Priority::DEFAULT),
        Some(v) => u8::try_from(v).ok().and_then(Priority::new).ok_or_else(|| {
            ApiError::InvalidField(format!(
                "priority: must be a whole number from 0 to {}, found {v} (default {})",
                Priority::MAX,
                Priority::DEFAULT
            ))
        }),
    }
}

/// The exit rule (a threshold given, calibrated for a budget, the model's default, or a row of one
/// of the model's exit policies), timestep bounds and variance bound.
pub fn cutoff_policy(
    params: &PolicyParams,
    name: &str,
    contract: &ModelContract,
    policies: Option<&ExitPolicies>,
) -> Result<CutoffPolicy, ApiError> {
    let invalid = ApiError::InvalidField;
    let named = params.policy.as_deref().map(|asked| named_policy(asked, name, policies)).transpose()?;
    if let Some(level) = params.guarantee {
        if !(level.is_finite() && level > 0.0 && level < 1.0) {
            return Err(invalid(format!(
                "guarantee: must be a probability strictly between 0 and 1 (e.g. 0.9), found {level}"
            )));
        }
        if params.max_accuracy_drop.is_none() {
            return Err(invalid(
                "guarantee: needs max_accuracy_drop, the budget it guarantees (e.g. \"max_accuracy_drop\": 0.5, \
                 \"guarantee\": 0.9)"
                    .into(),
            ));
        }
    }
    let (threshold, calibrated_for, rule, kind, guarantee) =
        match (params.threshold, params.max_accuracy_drop) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "threshold and max_accuracy_drop: give one or the other, not both (a budget picks its \
                 calibrated threshold)"
                        .into(),
                ))
            }
            (Some(_), None) if named.is_some_and(|kind| kind != PolicyKind::Cutoff) => {
                return Err(invalid(format!(
                    "threshold: only the cutoff policy takes a threshold; the {} policy is calibrated: give \
                 max_accuracy_drop instead",
                    named.map_or("", PolicyKind::as_str)
                )))
            }
            (None, budget) if budget.is_some() || named.is_some_and(|kind| kind != PolicyKind::Cutoff) => {
                let budget = budget.unwrap_or(DEFAULT_POLICY_BUDGET);
                check_budget(budget)?;
                match policies {
                    Some(policies) => {
                        let ask = PolicyAsk { policy: named, budget, guarantee: params.guarantee };
                        let row = policies.select(name, ask).map_err(invalid)?;
                        (
                            row.threshold,
                            Some(row.max_accuracy_drop),
                            row.rule.clone(),
                            row.rule.kind(),
                            row.level,
                        )
                    }
                    None if params.guarantee.is_some() => {
                        return Err(invalid(format!(
                    "guarantee: model \"{name}\" ships no exit policies (exit-policies.json), so it has no \
                         guaranteed calibration; ask without a guarantee"
                )))
                    }
                    None => {
                        let row = calibrated_threshold(name, contract, budget)?;
                        (
                            row.threshold,
                            Some(row.max_accuracy_drop),
                            ExitRule::Cutoff,
                            PolicyKind::Cutoff,
                            None,
                        )
                    }
                }
            }
            (threshold, _) => (
                threshold.unwrap_or(contract.default_threshold),
                None,
                ExitRule::Cutoff,
                PolicyKind::Cutoff,
                None,
            ),
        };
    check_threshold(threshold).map_err(|reason| ApiError::InvalidField(format!("threshold: {reason}")))?;
    let max_timesteps = params.max_timesteps.unwrap_or(contract.timesteps);
    if max_timesteps == 0 || max_timesteps > contract.timesteps {
        return Err(ApiError::InvalidField(format!(
            "max_timesteps: must be between 1 and the model's {} timesteps, found {max_timesteps}",
            contract.timesteps
        )));
    }
    let min_timesteps = params.min_timesteps.unwrap_or(1);
    if min_timesteps == 0 || min_timesteps > max_timesteps {
        return Err(ApiError::InvalidField(format!(
            "min_timesteps: must be between 1 and max_timesteps ({max_timesteps}), found {min_timesteps}"
        )));
    }
    let max_variance = params.max_variance.or(contract.default_max_variance);
    if let Some(bound) = max_variance {
        check_max_variance(bound)
            .map_err(|reason| ApiError::InvalidField(format!("max_variance: {reason}")))?;
    }
    Ok(CutoffPolicy {
        threshold,
        min_timesteps,
        max_timesteps,
        max_variance,
        calibrated_for,
        rule,
        policy: kind,
        guarantee,
    })
}

/// A policy name from a request, known and shipped by the model (the cutoff always is).
fn named_policy(asked: &str, name: &str, policies: Option<&ExitPolicies>) -> Result<PolicyKind, ApiError> {
    let shipped = || match policies {
        Some(p) => p.policies.iter().map(|p| p.kind.as_str()).collect::<Vec<_>>().join(", "),
        None => "cutoff (the model ships no exit-policies.json)".to_owned(),
    };
    let kind = PolicyKind::parse(asked).ok_or_else(|| {
        ApiError::InvalidField(format!(
            "policy: unknown policy {asked:?}; model \"{name}\" has: {}",
            shipped()
        ))
    })?;
    let available =
        kind == PolicyKind::Cutoff || policies.is_some_and(|p| p.policies.iter().any(|p| p.kind == kind));
    if !available {
        return Err(ApiError::InvalidField(format!(
            "policy: model \"{name}\" has no {asked:?} policy; it has: {}",
            shipped()
        )));
    }
    Ok(kind)
}

fn check_budget(budget: f64) -> Result<(), ApiError> {
    if budget.is_finite() && budget >= 0.0 {
        Ok(())
    } else {
        Err(ApiError::InvalidField(format!(
            "max_accuracy_drop: must be a non-negative number of percentage points, found {budget}"
        )))
    }
}

/// The calibration row for an accuracy-drop budget: the largest budget in the model's table that does
/// not exceed the one asked (never a looser one).
pub fn calibrated_threshold(
    name: &str,
    contract: &ModelContract,
    budget: f64,
) -> Result<CalibratedThreshold, ApiError> {
    let budgets = || {
        contract
            .calibration
            .iter()
            .map(|row| row.max_accuracy_drop.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !(budget.is_finite() && budget >= 0.0) {
        return Err(ApiError::InvalidField(format!(
            "max_accuracy_drop: must be a non-negative number of percentage points, found {budget}"
        )));
    }
    if contract.calibration.is_empty() {
        return Err(ApiError::InvalidField(format!(
            "max_accuracy_drop: model \"{name}\" has no calibration table; give a threshold instead"
        )));
    }
    contract.calibration.iter().rev().find(|row| row.max_accuracy_drop <= budget).copied().ok_or_else(|| {
        ApiError::InvalidField(format!(
            "max_accuracy_drop: {budget} is below the smallest budget model \"{name}\" is calibrated for \
             (budgets in percentage points: {})",
            budgets()
        ))
    })
}

/// The instant the latency budget runs out, counted from arrival.
pub fn deadline(budget_ms: Option<f64>, arrived: Instant) -> Result<Option<Instant>, ApiError> {
    match budget_ms {
        None => Ok(None),
        Some(ms) if ms.is_finite() && ms > 0.0 && ms <= MAX_BUDGET_MS => {
            Ok(Some(arrived + Duration::from_secs_f64(ms / 1e3)))
        }
        Some(ms) => Err(ApiError::InvalidField(format!(
            "latency_budget_ms: must be a positive number of milliseconds up to {MAX_BUDGET_MS}, found {ms}"
        ))),
    }
}

/// The request's frames: a tensor, or raw events binned as in training (event models only).
fn request_frames(
    input: RequestInput,
    name: &str,
    contract: &ModelContract,
) -> Result<RequestFrames, ApiError> {
    match input {
        RequestInput::Tensor(tensor) => Ok(into_frames(tensor, contract)?),
        RequestInput::Events(events) => {
            let binning = binning_of(name, contract)?;
            let binned = binning.bin_counted(&events)?;
            if binned.dropped > 0 {
                tracing::debug!(dropped = binned.dropped, "events past the last count bin left out");
                crate::metrics::events_dropped(name, binned.dropped);
            }
            Ok(RequestFrames::Sequence { data: binned.frames, count: binning.bins })
        }
    }
}

/// The model's event binning, or the error for sending events to a model that takes frames.
pub fn event_binning(model: &LoadedModel) -> Result<crate::input::EventBinning, ApiError> {
    binning_of(&model.name, &model.contract)
}

fn binning_of(name: &str, contract: &ModelContract) -> Result<crate::input::EventBinning, ApiError> {
    contract.events.ok_or_else(|| {
        ApiError::InvalidField(format!(
            "events: model \"{name}\" takes input kind {:?}, not raw events; send a tensor",
            contract.input_kind
        ))
    })
}
