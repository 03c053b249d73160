//! Turns a request's parameters into what the engine runs, checked against the model. Shared by
//! every door, so that each validates the same way and says the same thing when a value is wrong.

use std::time::{Duration, Instant};

use super::error::ApiError;
use super::schema::InferRequest;
use crate::engine::{AnytimeRequest, CutoffPolicy, RequestFrames};
use crate::input::{decode_json_events, decode_json_tensor, into_frames};
use crate::model::{LoadedModel, ModelContract};

/// The longest latency budget accepted (one hour): beyond it a budget is surely a unit mistake.
const MAX_BUDGET_MS: f64 = 3_600_000.0;

/// Validates the request's parameters against the model and builds what the engine runs.
pub fn anytime_request(
    model: &LoadedModel,
    request: InferRequest,
    arrived: Instant,
) -> Result<AnytimeRequest, ApiError> {
    let mut policy = cutoff_policy(&request, &model.contract)?;
    let deadline = deadline(request.latency_budget_ms, arrived)?;
    let frames = request_frames(&request, model)?;
    // A frame sequence caps the timesteps: there is nothing to feed after its last frame.
    if let RequestFrames::Sequence { count, .. } = &frames {
        policy.max_timesteps = policy.max_timesteps.min(*count);
        policy.min_timesteps = policy.min_timesteps.min(policy.max_timesteps);
    }
    Ok(AnytimeRequest {
        frames,
        policy,
        deadline,
        record_confidences: request.return_confidences,
        partials: None,
    })
}

/// The threshold, timestep bounds and variance bound, with the model's defaults.
pub fn cutoff_policy(request: &InferRequest, contract: &ModelContract) -> Result<CutoffPolicy, ApiError> {
    let threshold = request.threshold.unwrap_or(contract.default_threshold);
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(ApiError::InvalidField(format!("threshold: must be in (0, 1], found {threshold}")));
    }
    let max_timesteps = request.max_timesteps.unwrap_or(contract.timesteps);
    if max_timesteps == 0 || max_timesteps > contract.timesteps {
        return Err(ApiError::InvalidField(format!(
            "max_timesteps: must be between 1 and the model's {} timesteps, found {max_timesteps}",
            contract.timesteps
        )));
    }
    let min_timesteps = request.min_timesteps.unwrap_or(1);
    if min_timesteps == 0 || min_timesteps > max_timesteps {
        return Err(ApiError::InvalidField(format!(
            "min_timesteps: must be between 1 and max_timesteps ({max_timesteps}), found {min_timesteps}"
        )));
    }
    let max_variance = request.max_variance.or(contract.default_max_variance);
    if let Some(bound) = max_variance {
        if !(bound.is_finite() && bound >= 0.0) {
            return Err(ApiError::InvalidField(format!(
                "max_variance: must be a non-negative number, found {bound}"
            )));
        }
    }
    Ok(CutoffPolicy { threshold, min_timesteps, max_timesteps, max_variance })
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

/// The request's frames: a tensor (`input`) or raw events (`events`, for event models).
fn request_frames(request: &InferRequest, model: &LoadedModel) -> Result<RequestFrames, ApiError> {
    let contract = &model.contract;
    match (&request.input, &request.events) {
        (Some(input), None) => {
            Ok(into_frames(decode_json_tensor(input, request.shape.as_deref())?, contract)?)
        }
        (None, Some(events)) => {
            let Some(binning) = contract.events else {
                return Err(ApiError::InvalidField(format!(
                    "events: model \"{}\" takes input kind {:?}, not raw events; send \"input\"",
                    model.name, contract.input_kind
                )));
            };
            let data = binning.bin(&decode_json_events(events)?)?;
            Ok(RequestFrames::Sequence { data, count: binning.bins })
        }
        (Some(_), Some(_)) => {
            Err(ApiError::InvalidField("give either \"input\" or \"events\", not both".into()))
        }
        (None, None) => Err(ApiError::InvalidField("missing field `input` (or `events`)".into())),
    }
}
