//! What one request sends, prepared once per held-out sample: the `/v1` JSON body, the gRPC
//! message and the KServe v2 request (bench and soak send the same samples through every door).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::inference_pb as kserve_pb;
use spikeserve::input::{decode_json_events, decode_json_tensor};

/// One sample as every door sends it.
#[derive(Clone)]
pub struct Payload {
    pub body: Arc<Vec<u8>>,
    pub grpc: pb::InferRequest,
    pub kserve: KServeRequest,
}

/// A KServe v2 inference request: the one input (`x`, FP32 `[1, *shape]`; or `events`, INT64
/// `[1, N, 4]`: with the batch dimension of 1 that a batching server such as Triton expects) and the
/// request parameters (`threshold`, `timeout`, `priority`).
#[derive(Clone)]
pub struct KServeRequest {
    /// The JSON form's `inputs` array, serialized.
    inputs_json: Arc<str>,
    parameters: serde_json::Map<String, Value>,
    grpc: kserve_pb::ModelInferRequest,
}

impl KServeRequest {
    fn new(model: &str, name: &str, datatype: &str, shape: Vec<i64>, data: Value, raw: Vec<u8>) -> Self {
        let inputs = json!([{ "name": name, "datatype": datatype, "shape": shape, "data": data }]);
        let grpc = kserve_pb::ModelInferRequest {
            model_name: model.to_owned(),
            inputs: vec![kserve_pb::model_infer_request::InferInputTensor {
                name: name.to_owned(),
                datatype: datatype.to_owned(),
                shape,
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        };
        Self { inputs_json: inputs.to_string().into(), parameters: serde_json::Map::new(), grpc }
    }

    fn set(&mut self, key: &str, value: Value) {
        use kserve_pb::infer_parameter::ParameterChoice;
        let choice = match &value {
            Value::Bool(b) => ParameterChoice::BoolParam(*b),
            Value::Number(n) if n.is_u64() || n.is_i64() => {
                ParameterChoice::Int64Param(n.as_i64().unwrap_or(0))
            }
            Value::Number(n) => ParameterChoice::DoubleParam(n.as_f64().unwrap_or(0.0)),
            other => ParameterChoice::StringParam(other.to_string()),
        };
        self.grpc
            .parameters
            .insert(key.to_owned(), kserve_pb::InferParameter { parameter_choice: Some(choice) });
        self.parameters.insert(key.to_owned(), value);
    }

    /// The JSON body; with `sequence`, the parameters `sequence_id` and `sequence_start: true` (a
    /// Triton sequence of one request, no `sequence_end`: the model ends it at the request's exit).
    pub fn json_body(&self, sequence: Option<u64>) -> Vec<u8> {
        let mut parameters = self.parameters.clone();
        if let Some(id) = sequence {
            parameters.insert("sequence_id".into(), json!(id));
            parameters.insert("sequence_start".into(), json!(true));
        }
        format!("{{\"inputs\":{},\"parameters\":{}}}", self.inputs_json, Value::Object(parameters))
            .into_bytes()
    }

    /// The gRPC request, with the same `sequence` parameters as [`Self::json_body`].
    pub fn grpc_request(&self, sequence: Option<u64>) -> kserve_pb::ModelInferRequest {
        use kserve_pb::infer_parameter::ParameterChoice;
        let mut request = self.grpc.clone();
        if let Some(id) = sequence {
            let id = i64::try_from(id).unwrap_or(i64::MAX);
            let parameter = |choice| kserve_pb::InferParameter { parameter_choice: Some(choice) };
            request.parameters.insert("sequence_id".into(), parameter(ParameterChoice::Int64Param(id)));
            request.parameters.insert("sequence_start".into(), parameter(ParameterChoice::BoolParam(true)));
        }
        request
    }
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
        let mut kserve = self.kserve.clone();
        if let Some(ms) = budget_ms {
            kserve.set("timeout", json!((ms * 1e3).round() as i64));
        }
        if let Some(class) = priority {
            kserve.set("priority", json!(class));
        }
        Payload { body: Arc::new(serde_json::to_vec(&body).unwrap_or_default()), grpc, kserve }
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
            let shape: Vec<i64> = std::iter::once(1).chain(tensor.shape.iter().map(|&d| d as i64)).collect();
            let raw = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut kserve = KServeRequest::new(model, "x", "FP32", shape, json!(tensor.data), raw);
            if let Some(t) = threshold {
                kserve.set("threshold", json!(t));
            }
            let grpc = pb::InferRequest {
                model: model.to_owned(),
                input: Some(pb::infer_request::Input::Tensor(pb::Tensor {
                    shape: tensor.shape.iter().map(|&d| d as u64).collect(),
                    values: tensor.data,
                })),
                policy: Some(policy.clone()),
                ..Default::default()
            };
            out.push(Payload { body: Arc::new(serde_json::to_vec(&body)?), grpc, kserve });
        }
    } else if let Some(samples) = file.get("events").and_then(Value::as_array) {
        for sample in samples {
            let events = decode_json_events(sample)?;
            let mut body = json!({ "events": sample });
            if let Some(t) = threshold {
                body["threshold"] = json!(t);
            }
            let flat: Vec<i64> = events.iter().flat_map(|e| [e[0], e[1], e[2], e[3]]).collect();
            let raw = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
            let shape = vec![1, events.len() as i64, 4];
            let mut kserve = KServeRequest::new(model, "events", "INT64", shape, json!(flat), raw);
            if let Some(t) = threshold {
                kserve.set("threshold", json!(t));
            }
            let grpc = pb::InferRequest {
                model: model.to_owned(),
                input: Some(pb::infer_request::Input::Events(pb::Events::from(events.as_slice()))),
                policy: Some(policy.clone()),
                ..Default::default()
            };
            out.push(Payload { body: Arc::new(serde_json::to_vec(&body)?), grpc, kserve });
        }
    }
    if out.is_empty() {
        bail!("{} holds neither \"inputs\" nor \"events\"", inputs.display());
    }
    Ok(out)
}
