//! Bad input over the doors the per-door suites leave out: bodies and messages over the size limit
//! on every door (413 / RESOURCE_EXHAUSTED), the KServe gRPC service (unary and streaming), numbers
//! that do not fit, empty inputs and budgets on `/v1` and SSE, and sessions that stop sending or
//! send what they must not. Each answer names what is wrong, and the server goes on serving.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{heldout_digits, infer, refused_on_v1_and_sse, shipped_models, Server};
use serde_json::{json, Value};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use spikeserve::api::grpc::inference_pb as kpb;
use spikeserve::api::grpc::inference_pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

const LIMIT: &str = "4096";

fn flatten(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other.as_f64().expect("number") as f32],
    }
}

fn digit() -> Vec<f32> {
    let (inputs, _) = heldout_digits();
    flatten(&inputs[0])
}

fn tensor(values: Vec<f32>) -> pb::infer_request::Input {
    pb::infer_request::Input::Tensor(pb::Tensor { shape: vec![1, 8, 8], values })
}

fn anytime_request(values: Vec<f32>, policy: pb::Policy) -> pb::InferRequest {
    pb::InferRequest {
        model: "digits".into(),
        input: Some(tensor(values)),
        policy: Some(policy),
        ..Default::default()
    }
}

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, mentions: &[&str]) {
    let status = result.expect_err("an error");
    assert_eq!(status.code(), code, "{status:?}");
    for word in mentions {
        assert!(status.message().contains(word), "{:?} should mention {word:?}", status.message());
    }
}

async fn anytime(server: &Server) -> AnytimeClient<Channel> {
    AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC connects")
}

async fn kserve(server: &Server) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(server.grpc.clone()).await.expect("gRPC connects")
}

fn kserve_request(input: kpb::model_infer_request::InferInputTensor) -> kpb::ModelInferRequest {
    kpb::ModelInferRequest { model_name: "digits".into(), inputs: vec![input], ..Default::default() }
}

fn fp32_input(shape: Vec<i64>, values: Vec<f32>) -> kpb::model_infer_request::InferInputTensor {
    kpb::model_infer_request::InferInputTensor {
        name: "x".into(),
        datatype: "FP32".into(),
        shape,
        contents: Some(kpb::InferTensorContents { fp32_contents: values, ..Default::default() }),
        ..Default::default()
    }
}

fn raw_fp32_request(shape: Vec<i64>, values: &[f32]) -> kpb::ModelInferRequest {
    let input = kpb::model_infer_request::InferInputTensor {
        name: "x".into(),
        datatype: "FP32".into(),
        shape,
        ..Default::default()
    };
    kpb::ModelInferRequest {
        raw_input_contents: vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
        ..kserve_request(input)
    }
}

fn parameter(value: kpb::infer_parameter::ParameterChoice) -> kpb::InferParameter {
    kpb::InferParameter { parameter_choice: Some(value) }
}

fn session_message(message: pb::session_request::Message) -> pb::SessionRequest {
    pb::SessionRequest { message: Some(message) }
}

/// Reads a session's answers until it ends; the status it ended with, if any.
async fn session_outcome(
    answers: &mut tonic::Streaming<pb::InferStreamResponse>,
) -> Result<usize, tonic::Status> {
    let mut received = 0;
    while let Some(message) = answers.message().await? {
        received += usize::from(message.message.is_some());
    }
    Ok(received)
}

async fn stats(client: &reqwest::Client, server: &Server) -> Value {
    let response = client.get(server.url("/v1/models/digits/stats")).send().await.expect("stats");
    response.json().await.expect("stats JSON")
}

/// Waits until no slot is held and nothing is queued: nothing leaked.
async fn slots_return_to_zero(client: &reqwest::Client, server: &Server) {
    for _ in 0..200 {
        let s = stats(client, server).await;
        if s["active_slots"] == 0 && s["queued"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("slots did not return to zero: {}", stats(client, server).await);
}

/// Both APIs still answer a good request, the same way as before.
async fn still_serving(server: &Server) {
    let http = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let (status, answer) = infer(&http, &server.base, "digits", &json!({ "input": inputs[0] })).await;
    assert_eq!(status, 200, "{answer}");
    let mut grpc = anytime(server).await;
    let answer =
        grpc.infer(anytime_request(digit(), pb::Policy::default())).await.expect("gRPC still serves");
    assert_eq!(answer.into_inner().label, answer_label(&http, server).await);
    slots_return_to_zero(&http, server).await;
}

async fn answer_label(http: &reqwest::Client, server: &Server) -> String {
    let (inputs, _) = heldout_digits();
    let (_, answer) = infer(http, &server.base, "digits", &json!({ "input": inputs[0] })).await;
    answer["label"].as_str().expect("label").to_owned()
}

#[tokio::test]
async fn over_the_size_limit_is_413_or_resource_exhausted_on_every_door() {
    let server = Server::start(&shipped_models(), &["--max-body-bytes", LIMIT]);
    let http = reqwest::Client::new();
    let big = vec![0.5_f32; 2000];

    // HTTP: /v1 JSON, /v1 SSE, KServe JSON, KServe binary.
    let v1 = json!({ "input": big, "shape": [2000] });
    let response = http.post(server.url("/v1/models/digits/infer")).json(&v1).send().await.expect("sent");
    assert_eq!(response.status(), 413);
    let response = http
        .post(server.url("/v1/models/digits/infer"))
        .header("accept", "text/event-stream")
        .json(&v1)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.expect("JSON error");
    assert_eq!(error["error"]["code"], "payload_too_large");
    let v2 = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2000], "data": big}]});
    let response = http.post(server.url("/v2/models/digits/infer")).json(&v2).send().await.expect("sent");
    assert_eq!(response.status(), 413);
    let header = serde_json::to_vec(&json!({"inputs": [{
        "name": "x", "datatype": "FP32", "shape": [2000], "parameters": {"binary_data_size": 8000}
    }]}))
    .expect("JSON");
    let mut body = header.clone();
    body.extend(big.iter().flat_map(|v| v.to_le_bytes()));
    let response = http
        .post(server.url("/v2/models/digits/infer"))
        .header("Inference-Header-Content-Length", header.len().to_string())
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 413);

    // gRPC: unary, server streaming, a session's frame, KServe unary and streaming.
    let mut grpc = anytime(&server).await;
    let over = |values: Vec<f32>| anytime_request(values, pb::Policy::default());
    let mentions = ["message too large", LIMIT, "--max-body-bytes"];
    assert_status(grpc.infer(over(big.clone())).await, Code::ResourceExhausted, &mentions);
    assert_status(grpc.infer_stream(over(big.clone())).await, Code::ResourceExhausted, &mentions);

    let (tx, rx) = mpsc::channel(4);
    let start = pb::SessionStart { model: "digits".into(), ..Default::default() };
    tx.send(session_message(pb::session_request::Message::Start(start))).await.expect("start");
    let mut answers = grpc.session(ReceiverStream::new(rx)).await.expect("session opens").into_inner();
    let frame = pb::Tensor { shape: vec![], values: big.clone() };
    tx.send(session_message(pb::session_request::Message::Frame(frame))).await.expect("frame");
    assert_status(session_outcome(&mut answers).await, Code::ResourceExhausted, &mentions);
    drop(tx);

    let mut triton = kserve(&server).await;
    let request = kserve_request(fp32_input(vec![2000], big.clone()));
    assert_status(triton.model_infer(request.clone()).await, Code::ResourceExhausted, &mentions);
    let (tx, rx) = mpsc::channel(4);
    tx.send(request).await.expect("queued");
    let mut responses = triton.model_stream_infer(ReceiverStream::new(rx)).await.expect("opens").into_inner();
    let outcome = async {
        while responses.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    }
    .await;
    assert_status(outcome, Code::ResourceExhausted, &mentions);
    drop(tx);

    // A message just under the limit is fine.
    grpc.infer(over(digit())).await.expect("a 64-value request fits");
    still_serving(&server).await;
}

#[tokio::test]
async fn kserve_grpc_bad_requests_name_the_field_and_the_stream_goes_on() {
    use kpb::infer_parameter::ParameterChoice;
    let server = Server::start(&shipped_models(), &[]);
    let mut triton = kserve(&server).await;
    let values = digit();
    let good = kserve_request(fp32_input(vec![1, 1, 8, 8], values.clone()));
    let expected = triton.model_infer(good.clone()).await.expect("a good request").into_inner();

    let with_parameter = |name: &str, value: ParameterChoice| {
        let mut request = good.clone();
        request.parameters = HashMap::from([(name.to_owned(), parameter(value))]);
        request
    };
    let mut nan = values.clone();
    nan[3] = f32::NAN;
    let mut short_raw = raw_fp32_request(vec![1, 1, 8, 8], &values);
    short_raw.raw_input_contents[0].truncate(255);
    let cases: Vec<(&str, kpb::ModelInferRequest, Code, Vec<&str>)> = vec![
        (
            "unknown model",
            kpb::ModelInferRequest { model_name: "nope".into(), ..good.clone() },
            Code::NotFound,
            vec!["\"nope\" is not loaded"],
        ),
        (
            "unknown version",
            kpb::ModelInferRequest { model_version: "7".into(), ..good.clone() },
            Code::NotFound,
            vec!["digits", "7"],
        ),
        (
            "wrong shape",
            kserve_request(fp32_input(vec![8, 8], values.clone())),
            Code::InvalidArgument,
            vec!["[8, 8]", "[1, 8, 8]"],
        ),
        (
            "wrong element count",
            kserve_request(fp32_input(vec![1, 8, 8], values[..60].to_vec())),
            Code::InvalidArgument,
            vec!["x", "60"],
        ),
        ("NaN", kserve_request(fp32_input(vec![1, 8, 8], nan.clone())), Code::InvalidArgument, vec!["x[3]"]),
        ("NaN in raw bytes", raw_fp32_request(vec![1, 8, 8], &nan), Code::InvalidArgument, vec!["x[3]"]),
        ("raw bytes cut short", short_raw, Code::InvalidArgument, vec!["x", "255"]),
        (
            "no inputs",
            kpb::ModelInferRequest { inputs: vec![], ..good.clone() },
            Code::InvalidArgument,
            vec!["exactly one input"],
        ),
        (
            "no contents",
            kserve_request(kpb::model_infer_request::InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, 8, 8],
                ..Default::default()
            }),
            Code::InvalidArgument,
            vec!["x"],
        ),
        (
            "threshold above 1",
            with_parameter("threshold", ParameterChoice::DoubleParam(1.5)),
            Code::InvalidArgument,
            vec!["threshold"],
        ),
        (
            "threshold as text",
            with_parameter("threshold", ParameterChoice::StringParam("high".into())),
            Code::InvalidArgument,
            vec!["threshold"],
        ),
        (
            "max_timesteps past T",
            with_parameter("max_timesteps", ParameterChoice::Int64Param(9)),
            Code::InvalidArgument,
            vec!["max_timesteps"],
        ),
        (
            "priority above the highest class",
            with_parameter("priority", ParameterChoice::Int64Param(4)),
            Code::InvalidArgument,
            vec!["priority", "from 0 to 3"],
        ),
        (
            "fractional priority",
            with_parameter("priority", ParameterChoice::DoubleParam(1.5)),
            Code::InvalidArgument,
            vec!["parameters.priority", "whole number"],
        ),
        (
            "priority as text",
            with_parameter("priority", ParameterChoice::StringParam("high".into())),
            Code::InvalidArgument,
            vec!["parameters.priority"],
        ),
        (
            "negative timeout",
            with_parameter("timeout", ParameterChoice::Int64Param(-5)),
            Code::InvalidArgument,
            vec!["timeout"],
        ),
    ];
    for (what, request, code, mentions) in &cases {
        let status = triton.model_infer(request.clone()).await.expect_err(what);
        assert_eq!(status.code(), *code, "{what}: {status:?}");
        for word in mentions {
            assert!(
                status.message().contains(word),
                "{what}: {:?} should mention {word:?}",
                status.message()
            );
        }
    }

    // On the stream each bad request gets a response with its error; the good ones are answered.
    let (tx, rx) = mpsc::channel(cases.len() + 2);
    for (i, (_, request, _, _)) in cases.iter().enumerate() {
        tx.send(kpb::ModelInferRequest { id: format!("bad-{i}"), ..request.clone() }).await.expect("queued");
    }
    tx.send(kpb::ModelInferRequest { id: "good".into(), ..good.clone() }).await.expect("queued");
    drop(tx);
    let mut responses = triton.model_stream_infer(ReceiverStream::new(rx)).await.expect("opens").into_inner();
    let (mut errors, mut good_label) = (HashMap::new(), None);
    while let Some(response) = responses.message().await.expect("the stream goes on") {
        match response.infer_response {
            Some(answer) if response.error_message.is_empty() => {
                assert_eq!(answer.id, "good");
                let label = answer.outputs.iter().position(|o| o.name == "label").expect("label output");
                good_label = Some(answer.raw_output_contents.get(label).cloned().unwrap_or_default());
            }
            answer => {
                let id = answer.map(|a| a.id).unwrap_or_default();
                errors.insert(id, response.error_message);
            }
        }
    }
    assert_eq!(errors.len(), cases.len(), "{errors:?}");
    for (i, (what, _, _, mentions)) in cases.iter().enumerate() {
        let message = errors.get(&format!("bad-{i}")).unwrap_or_else(|| panic!("{what}: no error response"));
        for word in mentions {
            assert!(message.contains(word), "{what}: {message:?} should mention {word:?}");
        }
    }
    assert!(good_label.is_some(), "the good request on the stream was answered");
    let again = triton.model_infer(good).await.expect("still serving").into_inner();
    assert_eq!(again.raw_output_contents, expected.raw_output_contents);
    still_serving(&server).await;
}

#[tokio::test]
async fn numbers_that_do_not_fit_empty_inputs_and_bad_budgets_on_v1_and_sse() {
    let server = Server::start(&shipped_models(), &[]);
    let http = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let mut overflow = inputs[0].clone();
    overflow[0][1][1] = json!(1e39);
    let cases = [
        (json!({ "input": overflow }), "invalid_input", "input[0][1][1]"),
        (json!({ "input": [] }), "invalid_input", "input: is empty"),
        (json!({ "input": inputs[0], "latency_budget_ms": 0 }), "invalid_field", "latency_budget_ms"),
        (json!({ "input": inputs[0], "latency_budget_ms": -5 }), "invalid_field", "latency_budget_ms"),
        (
            json!({ "input": inputs[0], "min_timesteps": 5, "max_timesteps": 2 }),
            "invalid_field",
            "min_timesteps",
        ),
        (json!({ "input": inputs[0], "max_timesteps": 0 }), "invalid_field", "max_timesteps"),
        (json!({ "input": inputs[0], "threshold": -0.5 }), "invalid_field", "threshold"),
    ];
    for (body, code, mentions) in &cases {
        for (accept, error) in refused_on_v1_and_sse(&http, &server, body).await {
            assert_eq!(error["error"]["code"], *code, "{error}");
            let message = error["error"]["message"].as_str().expect("message");
            assert!(message.contains(mentions), "{message:?} should mention {mentions:?} ({accept})");
        }
    }
    // Events over SSE: refused before the stream starts, naming the event.
    let response = http
        .post(server.url("/v1/models/event-digits/infer"))
        .header("accept", "text/event-stream")
        .json(&json!({"events": [[0, 0, 50, 1], [1, 1, 40, 0]]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("JSON error");
    assert!(error["error"]["message"].as_str().expect("message").contains("events[1]: t = 40"), "{error}");
    still_serving(&server).await;
}

#[tokio::test]
async fn streaming_doors_refuse_bad_frames_and_end_sessions_that_stop_sending() {
    let server = Server::start(&shipped_models(), &["--session-idle-timeout-secs", "0.5"]);
    let http = reqwest::Client::new();
    let mut grpc = anytime(&server).await;

    // Server streaming refuses before the first partial, like unary.
    let wrong = pb::InferRequest {
        input: Some(pb::infer_request::Input::Tensor(pb::Tensor { shape: vec![8, 8], values: digit() })),
        ..anytime_request(digit(), pb::Policy::default())
    };
    assert_status(grpc.infer_stream(wrong).await, Code::InvalidArgument, &["[8, 8]"]);

    // A session's frame with NaN is refused, naming the frame and the position.
    let start = || {
        session_message(pb::session_request::Message::Start(pb::SessionStart {
            model: "digits".into(),
            policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
            ..Default::default()
        }))
    };
    let frame = |values: Vec<f32>| {
        session_message(pb::session_request::Message::Frame(pb::Tensor { shape: vec![], values }))
    };
    let (tx, rx) = mpsc::channel(8);
    tx.send(start()).await.expect("start");
    let mut answers = grpc.session(ReceiverStream::new(rx)).await.expect("opens").into_inner();
    let mut nan = digit();
    nan[10] = f32::NAN;
    tx.send(frame(digit())).await.expect("frame 0");
    tx.send(frame(nan)).await.expect("frame 1");
    assert_status(session_outcome(&mut answers).await, Code::InvalidArgument, &["frame 1", "position 10"]);
    drop(tx);

    // Event chunks: the second goes back in time, then one is off the sensor; each is named.
    let event_session = |chunks: Vec<pb::Events>| async {
        let (tx, rx) = mpsc::channel(8);
        let start = pb::SessionStart { model: "event-digits".into(), ..Default::default() };
        tx.send(session_message(pb::session_request::Message::Start(start))).await.expect("start");
        for chunk in chunks {
            tx.send(session_message(pb::session_request::Message::Events(chunk))).await.expect("chunk");
        }
        let mut grpc = anytime(&server).await;
        let mut answers = grpc.session(ReceiverStream::new(rx)).await.expect("opens").into_inner();
        let outcome = session_outcome(&mut answers).await;
        drop(tx);
        outcome
    };
    let chunk = |x: i64, t: i64| pb::Events { x: vec![x], y: vec![1], t_us: vec![t], p: vec![0] };
    let backwards = event_session(vec![chunk(1, 5000), chunk(2, 4000)]).await;
    assert_status(backwards, Code::InvalidArgument, &["events[1]", "t = 4000"]);
    let off_sensor = event_session(vec![chunk(1, 5000), chunk(99, 6000)]).await;
    assert_status(off_sensor, Code::InvalidArgument, &["x = 99"]);

    // A session that sends one frame and then nothing is ended after the idle timeout, saying why,
    // and its slot is freed.
    let (tx, rx) = mpsc::channel(8);
    tx.send(start()).await.expect("start");
    let mut answers = grpc.session(ReceiverStream::new(rx)).await.expect("opens").into_inner();
    tx.send(frame(digit())).await.expect("frame 0");
    let began = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), session_outcome(&mut answers))
        .await
        .expect("the server ends an idle session");
    assert_status(outcome, Code::DeadlineExceeded, &["no message for 0.5 s", "--session-idle-timeout-secs"]);
    assert!(began.elapsed() >= Duration::from_millis(400), "ended after {:?}", began.elapsed());
    slots_return_to_zero(&http, &server).await;
    drop(tx);

    // One that never sends its start is ended too.
    let (tx, rx) = mpsc::channel::<pb::SessionRequest>(1);
    let outcome = tokio::time::timeout(Duration::from_secs(10), grpc.session(ReceiverStream::new(rx)))
        .await
        .expect("the server ends an idle session");
    assert_status(outcome, Code::DeadlineExceeded, &["no message"]);
    drop(tx);
    still_serving(&server).await;
}

/// `priority` out of range, fractional or text, and budgets that are NaN or past the documented
/// maximum, on every door that takes them: refused naming the field; a good priority is served.
#[tokio::test]
async fn priorities_and_budgets_are_checked_on_every_door() {
    let server = Server::start(&shipped_models(), &[]);
    let http = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let cases = [
        (json!({ "input": inputs[0], "priority": 4 }), "priority", "from 0 to 3"),
        (json!({ "input": inputs[0], "priority": -1 }), "priority", ""),
        (json!({ "input": inputs[0], "priority": 1.5 }), "priority", ""),
        (json!({ "input": inputs[0], "priority": "high" }), "priority", ""),
        (json!({ "input": inputs[0], "latency_budget_ms": 3_600_001.0 }), "latency_budget_ms", "3600000"),
    ];
    for (body, field, detail) in &cases {
        for (accept, error) in refused_on_v1_and_sse(&http, &server, body).await {
            let message = error["error"]["message"].as_str().expect("message");
            assert!(
                message.contains(field) && message.contains(detail),
                "{message:?} should name {field:?} ({accept})"
            );
        }
    }
    let kserve_body = |parameters: Value| {
        json!({
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8, 8], "data": flatten(&inputs[0])}],
            "parameters": parameters,
        })
    };
    for (parameters, mentions) in [
        (json!({"priority": 4}), "priority"),
        (json!({"priority": 0.5}), "parameters.priority"),
        (json!({"priority": "urgent"}), "parameters.priority"),
    ] {
        let response = http
            .post(server.url("/v2/models/digits/infer"))
            .json(&kserve_body(parameters))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.expect("JSON error");
        assert!(
            error["error"].as_str().unwrap_or_default().contains(mentions)
                || error.to_string().contains(mentions),
            "{error}"
        );
    }
    let mut grpc = anytime(&server).await;
    for (policy, mentions) in [
        (pb::Policy { priority: Some(9), ..Default::default() }, "priority"),
        (pb::Policy { latency_budget_ms: Some(f64::NAN), ..Default::default() }, "latency_budget_ms"),
        (pb::Policy { latency_budget_ms: Some(4e6), ..Default::default() }, "latency_budget_ms"),
    ] {
        assert_status(
            grpc.infer(anytime_request(digit(), policy.clone())).await,
            Code::InvalidArgument,
            &[mentions],
        );
        assert_status(
            grpc.infer_stream(anytime_request(digit(), policy.clone())).await,
            Code::InvalidArgument,
            &[mentions],
        );
        let start = pb::SessionStart { model: "digits".into(), policy: Some(policy), ..Default::default() };
        let (tx, rx) = mpsc::channel(2);
        tx.send(session_message(pb::session_request::Message::Start(start))).await.expect("start");
        assert_status(grpc.session(ReceiverStream::new(rx)).await, Code::InvalidArgument, &[mentions]);
    }
    // Every class is served.
    for priority in 0..=3u32 {
        let policy = pb::Policy { priority: Some(priority), ..Default::default() };
        assert!(grpc.infer(anytime_request(digit(), policy)).await.is_ok(), "priority {priority}");
        let body = json!({ "input": inputs[0], "priority": priority });
        let (status, answer) = infer(&http, &server.base, "digits", &body).await;
        assert_eq!(status, 200, "{answer}");
        let response = http
            .post(server.url("/v2/models/digits/infer"))
            .json(&kserve_body(json!({ "priority": priority })))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    still_serving(&server).await;
}
