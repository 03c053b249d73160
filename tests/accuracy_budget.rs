//! `max_accuracy_drop`: a request gives the accuracy it accepts to lose instead of a threshold, and
//! the server runs the threshold calibrated for the largest budget in the model's table that does
//! not exceed it. Checked on every door against the same requests sent with that threshold (same
//! server, same graph: exits must be identical), with the answer naming the threshold and budget,
//! the table shown where models are described, and every wrong budget refused naming the field.
//! This is the path of a model that ships no `exit-policies.json` (the tests serve copies of the
//! shipped models without it); `tests/exit_policies.rs` covers the models' exit policies.

mod common;

use std::collections::HashMap;

use common::{
    heldout_digits, infer, read_json, refused_on_v1_and_sse, session_refusal, shipped_models, sse_final,
    Server,
};
use serde::Deserialize;
use serde_json::{json, Value};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use spikeserve::api::grpc::inference_pb as kpb;
use spikeserve::api::grpc::inference_pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// The shipped `digits` and `digits-tet`, each file linked except `exit-policies.json`: models whose
/// budgets run the calibration table of their metadata.
fn without_exit_policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for model in ["digits", "digits-tet"] {
        link_tree(&shipped_models().join(model), &dir.path().join(model));
    }
    dir
}

fn link_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let name = entry.file_name();
        if name == "exit-policies.json" {
            continue;
        }
        if entry.path().is_dir() {
            link_tree(&entry.path(), &to.join(&name));
        } else {
            std::os::unix::fs::symlink(entry.path(), to.join(&name)).expect("symlink");
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
struct Row {
    max_accuracy_drop: f64,
    threshold: f64,
}

/// The answer fields this test reads, typed so that a renamed field fails.
#[derive(Debug, Deserialize)]
struct Answer {
    class_index: usize,
    timesteps: usize,
    threshold: f64,
    #[serde(default)]
    max_accuracy_drop: Option<f64>,
}

/// Sends a request and reads its JSON answer.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.expect("sent").json().await.expect("JSON")
}

/// The digits model's table, as its metadata holds it (through `/v1/models/digits`).
async fn table(http: &reqwest::Client, server: &Server) -> Vec<Row> {
    let info: Value =
        http.get(server.url("/v1/models/digits")).send().await.expect("sent").json().await.expect("JSON");
    serde_json::from_value(info["calibration"].clone()).expect("a calibration table")
}

fn flatten(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other.as_f64().expect("number") as f32],
    }
}

fn grpc_request(values: Vec<f32>, policy: pb::Policy) -> pb::InferRequest {
    pb::InferRequest {
        model: "digits".into(),
        input: Some(pb::infer_request::Input::Tensor(pb::Tensor { shape: vec![1, 8, 8], values })),
        policy: Some(policy),
        ..Default::default()
    }
}

fn kserve_request(
    values: Vec<f32>,
    parameters: HashMap<String, kpb::InferParameter>,
) -> kpb::ModelInferRequest {
    kpb::ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![kpb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 1, 8, 8],
            contents: Some(kpb::InferTensorContents { fp32_contents: values, ..Default::default() }),
            ..Default::default()
        }],
        parameters,
        ..Default::default()
    }
}

fn double(value: f64) -> kpb::InferParameter {
    kpb::InferParameter { parameter_choice: Some(kpb::infer_parameter::ParameterChoice::DoubleParam(value)) }
}

fn response_double(response: &kpb::ModelInferResponse, name: &str) -> Option<f64> {
    match response.parameters.get(name)?.parameter_choice {
        Some(kpb::infer_parameter::ParameterChoice::DoubleParam(v)) => Some(v),
        _ => None,
    }
}

fn kserve_timesteps(response: &kpb::ModelInferResponse) -> i64 {
    let index = response.outputs.iter().position(|o| o.name == "timesteps").expect("a timesteps output");
    let bytes = &response.raw_output_contents[index];
    i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

#[tokio::test]
async fn a_budget_runs_its_calibrated_threshold_on_every_door() {
    let models = without_exit_policies();
    let server = Server::start(models.path(), &[]);
    let http = reqwest::Client::new();
    let rows = table(&http, &server).await;
    assert!(rows.len() >= 5, "the shipped digits model has a calibration table: {rows:?}");
    // The metadata's table is the one the card and eval.json report.
    let evaluation = read_json(&shipped_models().join("digits/eval.json"));
    let reported: Vec<f64> = evaluation["calibration"]["table"]
        .as_array()
        .expect("eval.json's calibration table")
        .iter()
        .map(|r| r["threshold"].as_f64().expect("threshold"))
        .collect();
    assert_eq!(reported, rows.iter().map(|r| r.threshold).collect::<Vec<_>>());
    let default: f64 = evaluation["default_threshold"].as_f64().expect("default threshold");
    let half = rows.iter().find(|r| r.max_accuracy_drop == 0.5).expect("a 0.5 pt row");
    assert_eq!(default, half.threshold, "the default threshold is the 0.5 pt one");

    // Between two budgets: the smaller one's row, never a looser one.
    let asked = (rows[2].max_accuracy_drop + rows[3].max_accuracy_drop) / 2.0;
    let expected = rows[2];
    let (inputs, _) = heldout_digits();
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC");
    let mut kserve = GrpcInferenceServiceClient::connect(server.grpc.clone()).await.expect("KServe gRPC");
    for input in inputs.iter().take(12) {
        let (status, reference) =
            infer(&http, &server.base, "digits", &json!({ "input": input, "threshold": expected.threshold }))
                .await;
        assert_eq!(status, 200, "{reference}");
        let reference: Answer = serde_json::from_value(reference).expect("an answer");
        assert_eq!(reference.max_accuracy_drop, None, "no budget asked, none echoed");

        let (status, answer) =
            infer(&http, &server.base, "digits", &json!({ "input": input, "max_accuracy_drop": asked }))
                .await;
        assert_eq!(status, 200, "{answer}");
        let answer: Answer = serde_json::from_value(answer).expect("an answer");
        assert_eq!((answer.class_index, answer.timesteps), (reference.class_index, reference.timesteps));
        assert_eq!(
            (answer.threshold, answer.max_accuracy_drop),
            (expected.threshold, Some(expected.max_accuracy_drop))
        );

        let streamed = serde_json::from_value::<Answer>(
            sse_final(&http, &server, "digits", &json!({ "input": input, "max_accuracy_drop": asked })).await,
        )
        .expect("an answer");
        assert_eq!((streamed.timesteps, streamed.threshold), (reference.timesteps, expected.threshold));
        assert_eq!(streamed.max_accuracy_drop, Some(expected.max_accuracy_drop));

        let policy = pb::Policy { max_accuracy_drop: Some(asked), ..Default::default() };
        let unary =
            grpc.infer(grpc_request(flatten(input), policy.clone())).await.expect("gRPC answer").into_inner();
        assert_eq!(unary.timesteps as usize, reference.timesteps);
        assert_eq!(
            (unary.threshold, unary.max_accuracy_drop),
            (expected.threshold, Some(expected.max_accuracy_drop))
        );

        let mut stream = grpc
            .infer_stream(grpc_request(flatten(input), policy.clone()))
            .await
            .expect("stream")
            .into_inner();
        let mut last = None;
        while let Some(message) = stream.message().await.expect("stream message") {
            if let Some(pb::infer_stream_response::Message::Final(answer)) = message.message {
                last = Some(answer);
            }
        }
        let last = last.expect("a final answer");
        assert_eq!(
            (last.timesteps as usize, last.max_accuracy_drop),
            (reference.timesteps, Some(expected.max_accuracy_drop))
        );

        // A session whose start message gives the budget.
        let (tx, rx) = mpsc::channel(4);
        let start = pb::SessionStart { model: "digits".into(), policy: Some(policy), ..Default::default() };
        let frame = pb::Tensor { shape: vec![1, 8, 8], values: flatten(input) };
        tx.send(pb::SessionRequest { message: Some(pb::session_request::Message::Start(start)) })
            .await
            .expect("start");
        let mut session = grpc.session(ReceiverStream::new(rx)).await.expect("session").into_inner();
        let mut session_final = None;
        for _ in 0..8 {
            if tx
                .send(pb::SessionRequest {
                    message: Some(pb::session_request::Message::Frame(frame.clone())),
                })
                .await
                .is_err()
            {
                break;
            }
        }
        drop(tx);
        while let Some(message) = session.message().await.expect("session message") {
            if let Some(pb::infer_stream_response::Message::Final(answer)) = message.message {
                session_final = Some(answer);
            }
        }
        let session_final = session_final.expect("a session answer");
        assert_eq!(session_final.timesteps as usize, reference.timesteps);
        assert_eq!(session_final.max_accuracy_drop, Some(expected.max_accuracy_drop));

        let parameters = HashMap::from([("max_accuracy_drop".to_owned(), double(asked))]);
        let response = kserve
            .model_infer(kserve_request(flatten(input), parameters.clone()))
            .await
            .expect("KServe")
            .into_inner();
        assert_eq!(kserve_timesteps(&response) as usize, reference.timesteps);
        assert_eq!(response_double(&response, "threshold"), Some(expected.threshold));
        assert_eq!(response_double(&response, "max_accuracy_drop"), Some(expected.max_accuracy_drop));

        let (tx, rx) = mpsc::channel(1);
        tx.send(kserve_request(flatten(input), parameters)).await.expect("queued");
        drop(tx);
        let mut responses =
            kserve.model_stream_infer(ReceiverStream::new(rx)).await.expect("stream").into_inner();
        let streamed = responses.message().await.expect("a message").expect("a response");
        let streamed = streamed.infer_response.expect("an answer, not an error");
        assert_eq!(response_double(&streamed, "max_accuracy_drop"), Some(expected.max_accuracy_drop));

        let body = json!({
            "inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": flatten(input) }],
            "parameters": { "max_accuracy_drop": asked },
        });
        let v2 = json_of(http.post(server.url("/v2/models/digits/infer")).json(&body)).await;
        assert_eq!(v2["parameters"]["threshold"].as_f64(), Some(expected.threshold), "{v2}");
        assert_eq!(v2["parameters"]["max_accuracy_drop"].as_f64(), Some(expected.max_accuracy_drop));
    }
}

#[tokio::test]
async fn the_table_is_shown_where_models_are_described() {
    let models = without_exit_policies();
    let server = Server::start(models.path(), &[]);
    let http = reqwest::Client::new();
    let rows = table(&http, &server).await;
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC");
    let info =
        grpc.get_model(pb::GetModelRequest { model: "digits".into() }).await.expect("model").into_inner();
    let shown: Vec<Row> = info
        .calibration
        .iter()
        .map(|r| Row { max_accuracy_drop: r.max_accuracy_drop, threshold: r.threshold })
        .collect();
    assert_eq!(shown, rows);
    let config = json_of(http.get(server.url("/v2/models/digits/config"))).await;
    let text = config["parameters"]["calibration"]["string_value"].as_str().expect("a calibration parameter");
    let parsed: Vec<Row> = serde_json::from_str(text).expect("the table as JSON");
    assert_eq!(parsed, rows);
    let openapi: Value =
        http.get(server.url("/openapi.json")).send().await.expect("sent").json().await.expect("JSON");
    let request = &openapi["components"]["schemas"]["InferRequest"]["properties"];
    assert!(request.get("max_accuracy_drop").is_some(), "the OpenAPI document shows max_accuracy_drop");
}

#[tokio::test]
async fn wrong_budgets_are_refused_naming_the_field_the_model_and_its_budgets() {
    let models = without_exit_policies();
    let server = Server::start(models.path(), &[]);
    let http = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let input = &inputs[0];
    let cases = [
        (
            json!({ "input": input, "max_accuracy_drop": 0.5, "threshold": 0.9 }),
            vec!["threshold", "max_accuracy_drop"],
        ),
        (
            json!({ "input": input, "max_accuracy_drop": 0.01 }),
            vec!["max_accuracy_drop", "\"digits\"", "0.1, 0.25, 0.5, 1, 2"],
        ),
        (json!({ "input": input, "max_accuracy_drop": -1.0 }), vec!["max_accuracy_drop", "non-negative"]),
        (json!({ "input": input, "max_accuracy_drop": "half" }), vec!["max_accuracy_drop"]),
    ];
    for (body, mentions) in &cases {
        for (accept, error) in refused_on_v1_and_sse(&http, &server, body).await {
            let message = error["error"]["message"].as_str().expect("a message");
            for word in mentions {
                assert!(message.contains(word), "{message:?} should mention {word:?} ({accept})");
            }
        }
    }
    // An ensemble without a table of its own.
    let (status, error) =
        infer(&http, &server.base, "digits-tet", &json!({ "input": input, "max_accuracy_drop": 0.5 })).await;
    assert_eq!(status, 400);
    let message = error["error"]["message"].as_str().expect("a message");
    assert!(message.contains("\"digits-tet\" has no calibration table"), "{message}");

    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC");
    for (policy, mentions) in [
        (pb::Policy { max_accuracy_drop: Some(f64::NAN), ..Default::default() }, vec!["max_accuracy_drop"]),
        (
            pb::Policy { max_accuracy_drop: Some(1.0), threshold: Some(0.5), ..Default::default() },
            vec!["threshold", "max_accuracy_drop"],
        ),
    ] {
        let values = flatten(input);
        let status = grpc.infer(grpc_request(values.clone(), policy.clone())).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        for word in &mentions {
            assert!(status.message().contains(word), "{:?} should mention {word:?}", status.message());
        }
        let refused = session_refusal(&mut grpc, "digits", policy).await;
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    let mut kserve = GrpcInferenceServiceClient::connect(server.grpc.clone()).await.expect("KServe gRPC");
    let parameters = HashMap::from([("max_accuracy_drop".to_owned(), double(-0.5))]);
    let status = kserve.model_infer(kserve_request(flatten(input), parameters)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("max_accuracy_drop"), "{status:?}");
    // Still serving.
    let (status, _) =
        infer(&http, &server.base, "digits", &json!({ "input": input, "max_accuracy_drop": 2.0 })).await;
    assert_eq!(status, 200);
}
