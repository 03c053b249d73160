//! What one request sends, prepared once per held-out sample: the `/v1` JSON body and the gRPC
//! message (bench and soak send the same samples through every door).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::input::{decode_json_events, decode_json_tensor};

/// One sample as both doors send it.
#[derive(Clone)]
pub struct Payload {
    pub body: Arc<Vec<u8>>,
    pub grpc: pb::InferRequest,
}

impl Payload {
    /// This payload with a latency budget and a priority class set where given (in the `/v1`
    /// JSON body and in the gRPC policy alike).
    pub fn with_policy(&self, budget_ms: Option<f64>, priority: Option<u32>) -> Payload {
        if budget_ms.is_none() && priority.is_none() {
            return self.clone();
        }
        let mut grpc = self.grpc.clone();
        let mut policy = grpc.policy.unwrap_or_default();
        policy.latency_budget_ms = budget_ms.or(policy.latency_budget_ms);
        policy.priority = priority.or(policy.priority);
        grpc.policy = Some(policy);
        let mut body: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        if let Some(ms) = budget_ms {
            body["latency_budget_ms"] = json!(ms);
        }
        if let Some(class) = priority {
            body["priority"] = json!(class);
        }
        Payload { body: Arc::new(serde_json::to_vec(&body).unwrap_or_default()), grpc }
    }
}

/// One payload per sample of a held-out file (`{"inputs": [...]}` or `{"events": [...]}`).
pub fn payloads(inputs: &Path, model: &str, threshold: Option<f64>) -> anyhow::Result<Vec<Payload>> {
    let text = std::fs::read_to_string(inputs).with_context(|| format!("reading {}", inputs.display()))?;
    let file: Value = serde_json::from_str(&text).context("the inputs file is not JSON")?;
    let policy = pb::Policy { threshold, ..Default::default() };
    let mut out = Vec::new();
    if let Some(inputs) = file.get("inputs").and_then(Value::as_array) {
        for input in inputs {
            let tensor = decode_json_tensor(input, None)?;
            let mut body = json!({ "input": input });
            if let Some(t) = threshold {
                body["threshold"] = json!(t);
            }
            let grpc = pb::InferRequest {
                model: model.to_owned(),
                input: Some(pb::infer_request::Input::Tensor(pb::Tensor {
                    shape: tensor.shape.iter().map(|&d| d as u64).collect(),
                    values: tensor.data,
                })),
                policy: Some(policy),
                ..Default::default()
            };
            out.push(Payload { body: Arc::new(serde_json::to_vec(&body)?), grpc });
        }
    } else if let Some(samples) = file.get("events").and_then(Value::as_array) {
        for sample in samples {
            let events = decode_json_events(sample)?;
            let mut body = json!({ "events": sample });
            if let Some(t) = threshold {
                body["threshold"] = json!(t);
            }
            let grpc = pb::InferRequest {
                model: model.to_owned(),
                input: Some(pb::infer_request::Input::Events(pb::Events::from(events.as_slice()))),
                policy: Some(policy),
                ..Default::default()
            };
            out.push(Payload { body: Arc::new(serde_json::to_vec(&body)?), grpc });
        }
    }
    if out.is_empty() {
        bail!("{} holds neither \"inputs\" nor \"events\"", inputs.display());
    }
    Ok(out)
}
