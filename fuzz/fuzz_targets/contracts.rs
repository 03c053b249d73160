//! The shipped models' contracts (digits: a static 1x8x8 frame, 8 timesteps; event-digits: raw
//! events on a 34x34 sensor binned into 10 frames), built from their metadata without ONNX Runtime.

use std::collections::BTreeMap;

use spikeserve::model::{ModelContract, ModelSignature, TensorSpec};

fn contract(metadata: &[(&str, &str)], frame: &[i64]) -> ModelContract {
    let metadata: BTreeMap<String, String> =
        metadata.iter().map(|(k, v)| (format!("spikeserve.{k}"), (*v).to_owned())).collect();
    let mut input = vec![-1];
    input.extend_from_slice(frame);
    let signature = ModelSignature {
        inputs: vec![TensorSpec::f32("x", &input), TensorSpec::f32("state_in.0", &[-1, 16])],
        outputs: vec![TensorSpec::f32("logits", &[-1, 10]), TensorSpec::f32("state_out.0", &[-1, 16])],
        metadata,
    };
    match ModelContract::from_signature(&signature) {
        Ok(contract) => contract,
        Err(error) => panic!("the fuzz target's own contract is wrong: {error}"),
    }
}

const LABELS: &str = r#"["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]"#;

pub fn digits() -> ModelContract {
    contract(
        &[
            ("contract_version", "1"),
            ("timesteps", "8"),
            ("num_classes", "10"),
            ("labels", LABELS),
            ("input_kind", "static"),
            ("default_threshold", "0.9"),
            ("accuracy_per_timestep", "[0.9, 0.95, 0.96, 0.97, 0.97, 0.98, 0.98, 0.98]"),
            ("training", "{}"),
        ],
        &[1, 8, 8],
    )
}

pub fn event_digits() -> ModelContract {
    contract(
        &[
            ("contract_version", "1"),
            ("timesteps", "10"),
            ("num_classes", "10"),
            ("labels", LABELS),
            ("input_kind", "events"),
            ("default_threshold", "0.9"),
            ("accuracy_per_timestep", "[0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93, 0.94, 0.95, 0.95]"),
            ("training", "{}"),
            ("events", r#"{"width": 34, "height": 34, "polarities": 2, "window_us": 300000, "bins": 10}"#),
        ],
        &[2, 34, 34],
    )
}
