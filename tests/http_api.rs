//! The HTTP API against the real server, the real ONNX Runtime and the shipped digits model.

mod common;

use common::{
    heldout_digits, infer, read_json, shipped_models, Server, CROSS_CPU_CONFIDENCE_TOLERANCE, SHIPPED_MODELS,
};
use serde_json::{json, Value};

#[tokio::test]
async fn held_out_digits_reach_the_accuracy_the_model_card_states() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let eval = read_json(&shipped_models().join("digits/eval.json"));
    let at_default = &eval["anytime_at_default_threshold"];
    let threshold = eval["default_threshold"].as_f64().expect("threshold");
    let expected_exits: Vec<u64> =
        at_default["exit_timesteps"].as_array().expect("exits").iter().flat_map(Value::as_u64).collect();
    let expected_predictions: Vec<u64> =
        at_default["predictions"].as_array().expect("predictions").iter().flat_map(Value::as_u64).collect();

    let (inputs, targets) = heldout_digits();
    assert_eq!(inputs.len(), expected_exits.len());
    let (mut correct, mut timesteps, mut disagreements) = (0usize, 0usize, 0usize);
    for (i, (input, target)) in inputs.iter().zip(&targets).enumerate() {
        let (status, answer) =
            infer(&client, &server.base, "digits", &json!({"input": input, "return_confidences": true}))
                .await;
        assert_eq!(status, 200, "sample {i}: {answer}");
        let predicted = answer["class_index"].as_u64().expect("class_index");
        let used = answer["timesteps"].as_u64().expect("timesteps");
        assert_eq!(answer["label"], predicted.to_string(), "digits labels are the class digits");
        let confidences = answer["confidences"].as_array().expect("confidences");
        assert_eq!(confidences.len() as u64, used);
        let final_confidence = confidences.last().and_then(Value::as_f64).expect("confidence");
        match answer["exit_reason"].as_str() {
            Some("confident") => assert!(final_confidence >= threshold),
            Some("max_timesteps") => assert_eq!(used, 8),
            other => panic!("sample {i}: unexpected exit reason {other:?}"),
        }
        if (predicted, used) != (expected_predictions[i], expected_exits[i]) {
            // Only a confidence within the cross-CPU tolerance of the threshold may decide differently.
            let near = confidences
                .iter()
                .flat_map(Value::as_f64)
                .any(|c| (c - threshold).abs() < CROSS_CPU_CONFIDENCE_TOLERANCE);
            assert!(near, "sample {i}: server says class {predicted} at t={used}, offline evaluation says class {} at t={}",
                expected_predictions[i], expected_exits[i]);
            disagreements += 1;
        }
        correct += usize::from(predicted as usize == *target);
        timesteps += used as usize;
    }
    let accuracy = correct as f64 / targets.len() as f64;
    let mean_timesteps = timesteps as f64 / targets.len() as f64;
    let stated = at_default["accuracy"].as_f64().expect("accuracy");
    assert!(disagreements <= 1, "{disagreements} samples decided differently from the offline evaluation");
    assert!(
        (accuracy - stated).abs() <= 1.0 / targets.len() as f64 + 1e-12,
        "server accuracy {accuracy}, card states {stated}"
    );
    let card = std::fs::read_to_string(shipped_models().join("digits/card.md")).expect("card.md");
    assert!(
        card.contains(&format!("accuracy {:.2}%", stated * 100.0)),
        "card.md states the held-out accuracy"
    );
    assert!(accuracy > 0.95, "held-out accuracy {accuracy}");
    assert!(mean_timesteps < 8.0, "the default threshold exits early on average ({mean_timesteps})");
}

#[tokio::test]
async fn threshold_one_runs_every_timestep_and_a_low_threshold_exits_earlier() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let (mut full, mut low) = (0u64, 0u64);
    let samples = &inputs[..60];
    for input in samples {
        let (status, all) =
            infer(&client, &server.base, "digits", &json!({"input": input, "threshold": 1.0})).await;
        assert_eq!(status, 200, "{all}");
        assert_eq!(all["timesteps"], 8);
        assert_eq!(all["exit_reason"], "max_timesteps");
        full += all["timesteps"].as_u64().expect("timesteps");
        let (status, early) =
            infer(&client, &server.base, "digits", &json!({"input": input, "threshold": 0.5})).await;
        assert_eq!(status, 200, "{early}");
        low += early["timesteps"].as_u64().expect("timesteps");
    }
    assert!(low < full, "threshold 0.5 used {low} timesteps in all, threshold 1.0 used {full}");
}

#[tokio::test]
async fn max_timesteps_and_flat_inputs() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let (status, one) = infer(
        &client,
        &server.base,
        "digits",
        &json!({"input": inputs[0], "threshold": 1.0, "max_timesteps": 3, "return_confidences": true}),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["timesteps"], 3);
    assert_eq!(one["max_timesteps"], 3);
    assert_eq!(one["exit_reason"], "max_timesteps");
    assert_eq!(one["confidences"].as_array().map(Vec::len), Some(3));
    // The model reports its synaptic operations; more timesteps cost more of them.
    let ops_three = one["synaptic_ops"].as_f64().expect("synaptic_ops");
    let (_, first) = infer(
        &client,
        &server.base,
        "digits",
        &json!({"input": inputs[0], "threshold": 1.0, "max_timesteps": 1}),
    )
    .await;
    let ops_one = first["synaptic_ops"].as_f64().expect("synaptic_ops");
    assert!(ops_one > 0.0 && ops_three > ops_one, "{ops_one} then {ops_three}");
    let probabilities: f64 =
        one["probabilities"].as_array().expect("probabilities").iter().flat_map(Value::as_f64).sum();
    assert!((probabilities - 1.0).abs() < 1e-9);

    let flat: Vec<Value> = inputs[0].as_array().expect("[1,8,8]")[0]
        .as_array()
        .expect("[8,8]")
        .iter()
        .flat_map(|row| row.as_array().expect("row").clone())
        .collect();
    let (status, from_flat) = infer(
        &client,
        &server.base,
        "digits",
        &json!({"input": flat, "shape": [1, 8, 8], "threshold": 1.0, "max_timesteps": 3}),
    )
    .await;
    assert_eq!(status, 200, "{from_flat}");
    assert_eq!(from_flat["probabilities"], one["probabilities"]);
    assert!(one.get("confidences").is_some() && from_flat.get("confidences").is_none());
}

#[tokio::test]
async fn models_and_health_are_listed() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let health: Value =
        client.get(server.url("/health")).send().await.expect("health").json().await.expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["models"], json!(SHIPPED_MODELS));
    assert_eq!(health["refused"], 0);
    let list: Value =
        client.get(server.url("/v1/models")).send().await.expect("list").json().await.expect("json");
    let models = list["models"].as_array().expect("models");
    let named = |name: &str| models.iter().find(|m| m["name"] == name).cloned().expect("listed");
    for ensemble in ["digits-str", "digits-tet", "event-digits-str", "event-digits-tet", "mnist-events"] {
        assert_eq!(named(ensemble)["members"], 3, "{ensemble}");
    }
    // The ensemble's own calibration table (its members' tables do not hold for it).
    let mnist = named("mnist-events");
    let table = mnist["calibration"].as_array().expect("mnist-events has a calibration table");
    let half = table.iter().find(|row| row["max_accuracy_drop"] == 0.5).expect("a 0.5 pt row");
    assert_eq!(half["threshold"], mnist["default_threshold"]);
    assert!(named("digits-tet").get("calibration").is_none(), "an ensemble without a table shows none");
    assert_eq!(named("digits-str")["training"]["ensemble_of"][0]["regulariser"], "str");
    assert_eq!(named("event-digits")["input_kind"], "events");
    let digits = &named("digits");
    assert_eq!(digits["members"], 1);
    assert_eq!(digits["name"], "digits");
    assert_eq!(digits["timesteps"], 8);
    assert_eq!(digits["num_classes"], 10);
    assert_eq!(digits["input_kind"], "static");
    assert_eq!(digits["frame_shape"], json!([1, 8, 8]));
    assert_eq!(digits["accuracy_per_timestep"].as_array().map(Vec::len), Some(8));
    assert_eq!(digits["training"]["loss"], "tet");
    let one = client.get(server.url("/v1/models/digits")).send().await.expect("one");
    assert_eq!(one.status(), 200);
    let one: Value = one.json().await.expect("json");
    assert_eq!(&one, digits);
}

async fn expect_error(response: reqwest::Response, status: u16, code: &str, mentions: &str) {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("errors are JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(mentions), "{message:?} should mention {mentions:?}");
}

#[tokio::test]
async fn bad_requests_get_a_4xx_that_says_what_is_wrong() {
    let server = Server::start(&shipped_models(), &["--max-body-bytes", "4096"]);
    let client = reqwest::Client::new();
    let infer_url = server.url("/v1/models/digits/infer");
    let (inputs, _) = heldout_digits();
    let good = json!({"input": inputs[0]});
    let post_json = |body: Value| client.post(&infer_url).json(&body).send();

    let r = client.post(server.url("/v1/models/nope/infer")).json(&good).send().await.expect("sent");
    expect_error(
        r,
        404,
        "model_not_found",
        "\"nope\" is not loaded; loaded models: digits, digits-snntorch, digits-str, digits-tet, event-digits",
    )
    .await;
    let r = client.get(server.url("/v1/models/nope")).send().await.expect("sent");
    expect_error(r, 404, "model_not_found", "nope").await;
    let r = client.get(server.url("/v2/whatever")).send().await.expect("sent");
    expect_error(r, 404, "not_found", "/v2/whatever").await;

    expect_error(
        post_json(json!({"input": [[1, 2], [3, 4]]})).await.expect("sent"),
        400,
        "invalid_input",
        "the model expects [1, 8, 8]",
    )
    .await;
    expect_error(
        post_json(json!({"input": [1, 2, 3], "shape": [1, 8, 8]})).await.expect("sent"),
        400,
        "invalid_input",
        "holds 64 elements but input has 3",
    )
    .await;
    let mut wrong_type = inputs[0].clone();
    wrong_type[0][2][5] = json!("seven");
    expect_error(
        post_json(json!({"input": wrong_type})).await.expect("sent"),
        400,
        "invalid_input",
        "input[0][2][5]: expected a number, found a string",
    )
    .await;
    let mut ragged = inputs[0].clone();
    ragged[0][3].as_array_mut().expect("row").pop();
    expect_error(
        post_json(json!({"input": ragged})).await.expect("sent"),
        400,
        "invalid_input",
        "input[0][3]: expected 8 elements",
    )
    .await;
    expect_error(
        post_json(json!({"threshold": 0.9})).await.expect("sent"),
        400,
        "invalid_field",
        "missing field `input`",
    )
    .await;
    expect_error(
        post_json(json!({"input": inputs[0], "threshold": "high"})).await.expect("sent"),
        400,
        "invalid_field",
        "threshold",
    )
    .await;
    expect_error(
        post_json(json!({"input": inputs[0], "threshold": 0.0})).await.expect("sent"),
        400,
        "invalid_field",
        "threshold: must be in (0, 1]",
    )
    .await;
    expect_error(
        post_json(json!({"input": inputs[0], "threshold": 1.5})).await.expect("sent"),
        400,
        "invalid_field",
        "threshold",
    )
    .await;
    expect_error(
        post_json(json!({"input": inputs[0], "max_timesteps": 9})).await.expect("sent"),
        400,
        "invalid_field",
        "max_timesteps: must be between 1 and the model's 8",
    )
    .await;
    expect_error(
        post_json(json!({"input": inputs[0], "max_timesteps": -1})).await.expect("sent"),
        400,
        "invalid_field",
        "max_timesteps",
    )
    .await;
    expect_error(
        post_json(json!({"input": inputs[0], "treshold": 0.5})).await.expect("sent"),
        400,
        "invalid_field",
        "unknown field `treshold`",
    )
    .await;

    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = client.post(&infer_url).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    expect_error(
        raw("{\"input\": [[1, 2]", Some("application/json")).await.expect("sent"),
        400,
        "malformed_json",
        "EOF",
    )
    .await;
    expect_error(
        raw("{\"input\": [1]} trailing", Some("application/json")).await.expect("sent"),
        400,
        "malformed_json",
        "trailing",
    )
    .await;
    expect_error(
        raw("{\"input\": [1]}", None).await.expect("sent"),
        415,
        "unsupported_media_type",
        "application/json",
    )
    .await;
    expect_error(
        raw("{\"input\": [1]}", Some("text/plain")).await.expect("sent"),
        415,
        "unsupported_media_type",
        "text/plain",
    )
    .await;
    let huge = json!({"input": vec![1.0; 5000], "shape": [5000]});
    expect_error(post_json(huge).await.expect("sent"), 413, "payload_too_large", "too large").await;

    // None of that disturbed the server.
    let (status, answer) = infer(&client, &server.base, "digits", &good).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_answer() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    // The answers one at a time, then the same inputs all at once: each must match its own.
    let mut alone = Vec::new();
    for input in &inputs[..32] {
        alone.push(infer(&client, &server.base, "digits", &json!({"input": input})).await.1);
    }
    let mut tasks = Vec::new();
    for input in &inputs[..32] {
        let (client, base, body) = (client.clone(), server.base.clone(), json!({"input": input}));
        tasks.push(tokio::spawn(async move { infer(&client, &base, "digits", &body).await }));
    }
    for (task, expected) in tasks.into_iter().zip(alone) {
        let (status, answer) = task.await.expect("task");
        assert_eq!(status, 200);
        assert_eq!(answer["timesteps"], expected["timesteps"]);
        let pairs = answer["probabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(expected["probabilities"].as_array().into_iter().flatten());
        for (x, y) in pairs {
            let (x, y) = (x.as_f64().expect("f64"), y.as_f64().expect("f64"));
            assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
        }
    }
}
