//! The gRPC doors against the real server: our anytime service (unary, server streaming,
//! bidirectional sessions), the gRPC deadline as budget, errors with codes, health and reflection.

mod common;

use std::time::Duration;

use common::{heldout_digits, infer, read_json, shipped_models, Server};
use serde_json::{json, Value};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

async fn client(server: &Server) -> AnytimeClient<Channel> {
    AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC connects")
}

fn flatten(value: &Value, out: &mut Vec<f32>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other.as_f64().expect("number") as f32),
    }
}

fn digit_tensor(input: &Value) -> pb::Tensor {
    let mut values = Vec::new();
    flatten(input, &mut values);
    pb::Tensor { shape: vec![1, 8, 8], values }
}

fn infer_request(model: &str, input: pb::infer_request::Input, policy: pb::Policy) -> pb::InferRequest {
    pb::InferRequest { model: model.into(), input: Some(input), policy: Some(policy), ..Default::default() }
}

fn exit_reason(name: &str) -> i32 {
    match name {
        "confident" => pb::ExitReason::Confident as i32,
        "max_timesteps" => pb::ExitReason::MaxTimesteps as i32,
        "deadline" => pb::ExitReason::Deadline as i32,
        other => panic!("exit reason {other}"),
    }
}

#[tokio::test]
async fn unary_and_streamed_answers_equal_the_http_ones() {
    let server = Server::start(&shipped_models(), &[]);
    let http = reqwest::Client::new();
    let mut grpc = client(&server).await;
    let (inputs, _) = heldout_digits();
    for (i, input) in inputs.iter().take(24).enumerate() {
        let (status, expected) = infer(&http, &server.base, "digits", &json!({ "input": input })).await;
        assert_eq!(status, 200);
        let request = infer_request(
            "digits",
            pb::infer_request::Input::Tensor(digit_tensor(input)),
            pb::Policy::default(),
        );
        let mut unary_request =
            tonic::Request::new(pb::InferRequest { request_id: format!("sample-{i}"), ..request.clone() });
        unary_request
            .metadata_mut()
            .insert("x-request-id", "ignored-when-the-message-has-one".parse().expect("ascii"));
        let answer = grpc.infer(unary_request).await.expect("infer").into_inner();
        assert_eq!(answer.request_id, format!("sample-{i}"));
        assert_eq!(answer.label, expected["label"].as_str().expect("label"), "sample {i}");
        assert_eq!(
            u64::from(answer.timesteps),
            expected["timesteps"].as_u64().expect("timesteps"),
            "sample {i}"
        );
        assert_eq!(answer.exit_reason, exit_reason(expected["exit_reason"].as_str().expect("reason")));
        assert_eq!(answer.max_timesteps, 8);
        assert!(answer.synaptic_ops.is_some_and(|ops| ops > 0.0));

        // Server streaming: one partial per timestep, then the same final answer.
        let mut with_id = tonic::Request::new(request);
        with_id.metadata_mut().insert("x-request-id", format!("stream-{i}").parse().expect("ascii"));
        let mut stream = grpc.infer_stream(with_id).await.expect("stream").into_inner();
        let mut partials = Vec::new();
        let mut last = None;
        while let Some(message) = stream.message().await.expect("message") {
            match message.message.expect("set") {
                pb::infer_stream_response::Message::Partial(p) => partials.push(p),
                pb::infer_stream_response::Message::Final(f) => last = Some(f),
            }
        }
        let last = last.expect("a final answer");
        assert_eq!(
            last.request_id,
            format!("stream-{i}"),
            "the metadata id is used when the message has none"
        );
        assert_eq!(last.timesteps, answer.timesteps);
        assert_eq!(last.label, answer.label);
        let steps: Vec<u32> = partials.iter().map(|p| p.timestep).collect();
        assert_eq!(steps, (1..=answer.timesteps).collect::<Vec<_>>(), "sample {i}");
        assert_eq!(partials.last().map(|p| p.probabilities.clone()), Some(last.probabilities.clone()));
    }
    let models = grpc.list_models(pb::ListModelsRequest {}).await.expect("list").into_inner().models;
    assert!(models.iter().any(|m| m.name == "digits" && m.timesteps == 8 && m.input_kind == "static"));
    let ensemble =
        grpc.get_model(pb::GetModelRequest { model: "digits-tet".into() }).await.expect("get").into_inner();
    assert_eq!(ensemble.members, 3);
    let contract: Value = serde_json::from_str(&ensemble.contract_json).expect("contract JSON");
    assert_eq!(contract["members"], 3);
}

/// Opens a session and returns the sender of its requests and the stream of its answers.
async fn open_session(
    grpc: &mut AnytimeClient<Channel>,
    start: pb::SessionStart,
    timeout: Option<Duration>,
) -> (mpsc::Sender<pb::SessionRequest>, tonic::Streaming<pb::InferStreamResponse>) {
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::SessionRequest { message: Some(pb::session_request::Message::Start(start)) })
        .await
        .expect("start");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    let answers = grpc.session(request).await.expect("session").into_inner();
    (tx, answers)
}

fn frame(tensor: pb::Tensor) -> pb::SessionRequest {
    pb::SessionRequest { message: Some(pb::session_request::Message::Frame(tensor)) }
}

#[tokio::test]
async fn a_session_steps_each_frame_as_it_arrives_and_the_client_can_end_it_early() {
    let server = Server::start(&shipped_models(), &[]);
    let mut grpc = client(&server).await;
    let (inputs, _) = heldout_digits();
    let start = pb::SessionStart {
        model: "digits".into(),
        request_id: "live-1".into(),
        policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
        return_confidences: true,
    };
    let (frames, mut answers) = open_session(&mut grpc, start, None).await;
    for t in 1..=3u32 {
        frames.send(frame(digit_tensor(&inputs[0]))).await.expect("frame");
        // The partial for this frame arrives before the next frame is sent.
        let message = answers.message().await.expect("message").expect("partial");
        match message.message {
            Some(pb::infer_stream_response::Message::Partial(p)) => assert_eq!(p.timestep, t),
            other => panic!("expected partial {t}, got {other:?}"),
        }
    }
    drop(frames); // half-close: the client ends early
    let last = answers.message().await.expect("message").expect("final");
    let Some(pb::infer_stream_response::Message::Final(last)) = last.message else {
        panic!("final expected")
    };
    assert_eq!(last.timesteps, 3);
    assert_eq!(last.exit_reason, pb::ExitReason::MaxTimesteps as i32);
    assert_eq!(last.request_id, "live-1");
    assert_eq!(last.confidences.len(), 3);
    assert!(answers.message().await.expect("end").is_none());

    // A stalled stream meets its budget: the gRPC deadline when the policy gives none.
    let start = pb::SessionStart {
        model: "digits".into(),
        policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
        ..Default::default()
    };
    let (frames, mut answers) = open_session(&mut grpc, start, Some(Duration::from_millis(400))).await;
    frames.send(frame(digit_tensor(&inputs[1]))).await.expect("frame");
    let mut last = None;
    while let Some(message) = answers.message().await.expect("message") {
        if let Some(pb::infer_stream_response::Message::Final(f)) = message.message {
            last = Some(f);
        }
    }
    let last = last.expect("final");
    assert_eq!(last.exit_reason, pb::ExitReason::Deadline as i32);
    assert_eq!(last.timesteps, 1);
    drop(frames);
}

/// The next partial of a session's answer stream.
async fn next_partial(answers: &mut tonic::Streaming<pb::InferStreamResponse>) -> pb::Partial {
    match answers.message().await.expect("message").expect("partial").message {
        Some(pb::infer_stream_response::Message::Partial(p)) => p,
        other => panic!("expected a partial, got {other:?}"),
    }
}

#[tokio::test]
async fn a_session_waiting_for_its_frame_while_another_steps_keeps_its_membranes() {
    let server = Server::start(&shipped_models(), &[]);
    let mut grpc = client(&server).await;
    let (inputs, _) = heldout_digits();
    let start = || pb::SessionStart {
        model: "digits".into(),
        policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
        ..Default::default()
    };
    // Alone: two frames of digit 1.
    let (frames, mut answers) = open_session(&mut grpc, start(), None).await;
    let mut alone = Vec::new();
    for _ in 0..2 {
        frames.send(frame(digit_tensor(&inputs[1]))).await.expect("frame");
        alone.push(next_partial(&mut answers).await);
    }
    drop(frames);
    // Beside another session: its first frame, then three steps of the other session (an odd
    // number: the state sets alternate each step) while it waits, then its second frame.
    let (waiting, mut waiting_answers) = open_session(&mut grpc, start(), None).await;
    let (busy, mut busy_answers) = open_session(&mut grpc, start(), None).await;
    waiting.send(frame(digit_tensor(&inputs[1]))).await.expect("frame");
    let first = next_partial(&mut waiting_answers).await;
    for (t, input) in (1..=3u32).zip(&inputs[1..]) {
        busy.send(frame(digit_tensor(input))).await.expect("frame");
        assert_eq!(next_partial(&mut busy_answers).await.timestep, t);
    }
    waiting.send(frame(digit_tensor(&inputs[1]))).await.expect("frame");
    let second = next_partial(&mut waiting_answers).await;
    for (alone, beside) in alone.iter().zip([&first, &second]) {
        assert_eq!(alone.timestep, beside.timestep);
        for (a, b) in alone.probabilities.iter().zip(&beside.probabilities) {
            assert!(
                (a - b).abs() <= 1e-5,
                "timestep {}: {a} alone, {b} beside a busy session",
                alone.timestep
            );
        }
    }
    drop((waiting, busy));
}

#[tokio::test]
async fn a_session_of_raw_event_chunks_bins_like_the_unary_request() {
    let server = Server::start(&shipped_models(), &[]);
    let mut grpc = client(&server).await;
    let heldout = read_json(&shipped_models().join("event-digits/heldout.json"));
    for sample in heldout["events"].as_array().expect("events").iter().take(3) {
        let events: Vec<[i64; 4]> = sample
            .as_array()
            .expect("rows")
            .iter()
            .map(|e| {
                let v: Vec<i64> = e.as_array().expect("row").iter().flat_map(Value::as_i64).collect();
                [v[0], v[1], v[2], v[3]]
            })
            .collect();
        let columns = |chunk: &[[i64; 4]]| pb::Events {
            x: chunk.iter().map(|e| e[0]).collect(),
            y: chunk.iter().map(|e| e[1]).collect(),
            t_us: chunk.iter().map(|e| e[2]).collect(),
            p: chunk.iter().map(|e| e[3]).collect(),
        };
        let policy = pb::Policy { threshold: Some(1.0), ..Default::default() };
        let start =
            pb::SessionStart { model: "event-digits".into(), policy: Some(policy), ..Default::default() };
        let (tx, mut answers) = open_session(&mut grpc, start, None).await;
        for chunk in events.chunks(257) {
            let message = pb::session_request::Message::Events(columns(chunk));
            tx.send(pb::SessionRequest { message: Some(message) }).await.expect("chunk");
        }
        drop(tx);
        let mut last = None;
        while let Some(message) = answers.message().await.expect("message") {
            if let Some(pb::infer_stream_response::Message::Final(f)) = message.message {
                last = Some(f);
            }
        }
        let streamed = last.expect("final");
        // The same events in one unary request, stopped at the same timestep.
        let policy = pb::Policy {
            threshold: Some(1.0),
            max_timesteps: Some(streamed.timesteps),
            ..Default::default()
        };
        let whole = grpc
            .infer(infer_request("event-digits", pb::infer_request::Input::Events(columns(&events)), policy))
            .await
            .expect("unary")
            .into_inner();
        assert_eq!(streamed.timesteps, 10, "events span the whole window");
        assert_eq!(whole.timesteps, streamed.timesteps);
        for (a, b) in whole.probabilities.iter().zip(&streamed.probabilities) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }
}

async fn expect_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, mentions: &str) {
    let status = result.expect_err("an error");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(mentions), "{:?} should mention {mentions:?}", status.message());
}

#[tokio::test]
async fn bad_requests_get_a_status_code_and_a_message_naming_the_field() {
    let server = Server::start(&shipped_models(), &[]);
    let mut grpc = client(&server).await;
    let (inputs, _) = heldout_digits();
    let good = digit_tensor(&inputs[0]);
    let tensor = |t: pb::Tensor| pb::infer_request::Input::Tensor(t);
    let policy = pb::Policy::default();

    let unknown = infer_request("nope", tensor(good.clone()), policy.clone());
    expect_code(grpc.infer(unknown).await, Code::NotFound, "model \"nope\" is not loaded").await;
    let wrong_shape = pb::Tensor { shape: vec![8, 8], values: good.values.clone() };
    expect_code(
        grpc.infer(infer_request("digits", tensor(wrong_shape), policy.clone())).await,
        Code::InvalidArgument,
        "input: has shape [8, 8]",
    )
    .await;
    let short = pb::Tensor { shape: vec![1, 8, 8], values: vec![0.0; 63] };
    expect_code(
        grpc.infer(infer_request("digits", tensor(short), policy.clone())).await,
        Code::InvalidArgument,
        "holds 64 elements but input has 63",
    )
    .await;
    let mut nan = good.clone();
    nan.values[5] = f32::NAN;
    expect_code(
        grpc.infer(infer_request("digits", tensor(nan), policy.clone())).await,
        Code::InvalidArgument,
        "tensor[5]",
    )
    .await;
    let missing = pb::InferRequest { model: "digits".into(), ..Default::default() };
    expect_code(grpc.infer(missing).await, Code::InvalidArgument, "input: missing").await;
    let zero = pb::Policy { threshold: Some(0.0), ..Default::default() };
    expect_code(
        grpc.infer(infer_request("digits", tensor(good.clone()), zero)).await,
        Code::InvalidArgument,
        "threshold",
    )
    .await;
    let too_many = pb::Policy { max_timesteps: Some(99), ..Default::default() };
    expect_code(
        grpc.infer(infer_request("digits", tensor(good.clone()), too_many)).await,
        Code::InvalidArgument,
        "max_timesteps",
    )
    .await;
    let budget = pb::Policy { latency_budget_ms: Some(-1.0), ..Default::default() };
    expect_code(
        grpc.infer(infer_request("digits", tensor(good.clone()), budget)).await,
        Code::InvalidArgument,
        "latency_budget_ms",
    )
    .await;
    let events = pb::Events { x: vec![1], y: vec![1], t_us: vec![1], p: vec![0] };
    let to_static = infer_request("digits", pb::infer_request::Input::Events(events), policy.clone());
    expect_code(grpc.infer(to_static).await, Code::InvalidArgument, "not raw events").await;
    let ragged = pb::Events { x: vec![1, 2], y: vec![1], t_us: vec![1], p: vec![0] };
    let ragged = infer_request("event-digits", pb::infer_request::Input::Events(ragged), policy.clone());
    expect_code(grpc.infer(ragged).await, Code::InvalidArgument, "must be equal").await;
    let outside = pb::Events { x: vec![1, 40], y: vec![1, 1], t_us: vec![1, 2], p: vec![0, 0] };
    let outside = infer_request("event-digits", pb::infer_request::Input::Events(outside), policy.clone());
    expect_code(grpc.infer(outside).await, Code::InvalidArgument, "events[1]: x = 40").await;

    // Sessions: the first message must be the start; frames must fit; at most T of them.
    let (tx, rx) = mpsc::channel(4);
    tx.send(frame(good.clone())).await.expect("send");
    drop(tx);
    expect_code(
        grpc.session(ReceiverStream::new(rx)).await,
        Code::InvalidArgument,
        "first message must be `start`",
    )
    .await;
    let start = pb::SessionStart { model: "digits".into(), ..Default::default() };
    let (tx, mut answers) = open_session(&mut grpc, start, None).await;
    tx.send(frame(pb::Tensor { shape: vec![1, 4, 4], values: vec![0.0; 16] })).await.expect("send");
    let mut outcome = Ok(());
    while let Some(message) = answers.message().await.transpose() {
        if let Err(status) = message {
            outcome = Err(status);
            break;
        }
    }
    expect_code(outcome, Code::InvalidArgument, "frame 0: has shape [1, 4, 4]").await;
    let start = pb::SessionStart {
        model: "digits".into(),
        policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
        ..Default::default()
    };
    let (tx, mut answers) = open_session(&mut grpc, start, None).await;
    let mut outcome = Ok(());
    for _ in 0..9 {
        if tx.send(frame(good.clone())).await.is_err() {
            break;
        }
    }
    let mut finals = 0;
    while let Some(message) = answers.message().await.transpose() {
        match message {
            Ok(m) => {
                finals += usize::from(matches!(m.message, Some(pb::infer_stream_response::Message::Final(_))))
            }
            Err(status) => {
                outcome = Err(status);
                break;
            }
        }
    }
    // Either the ninth frame was refused, or the request answered after eight and took no more.
    if outcome.is_err() {
        expect_code(outcome, Code::InvalidArgument, "at most 8 timesteps").await;
    } else {
        assert_eq!(finals, 1);
    }
    drop(tx);

    // After all of that, the server still answers.
    let ok = grpc.infer(infer_request("digits", tensor(good), policy.clone())).await.expect("still serving");
    assert!(ok.into_inner().timesteps >= 1);
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = Server::start(&shipped_models(), &[]);
    let channel = Channel::from_shared(server.grpc.clone()).expect("uri").connect().await.expect("connects");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "spikeserve.anytime.v1.Anytime", "inference.GRPCInferenceService"] {
        let request = HealthCheckRequest { service: service.into() };
        let status = health.check(request).await.expect("check").into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.message().await.expect("message").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("a list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in
        ["spikeserve.anytime.v1.Anytime", "inference.GRPCInferenceService", "grpc.health.v1.Health"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}

#[tokio::test]
async fn the_infer_subcommand_prints_a_line_per_timestep_then_the_answer() {
    let server = Server::start(&shipped_models(), &[]);
    let http = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let body = json!({ "input": inputs[3], "threshold": 0.999 });
    let (_, expected) = infer(&http, &server.base, "digits", &body).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("digit.json");
    std::fs::write(&file, body.to_string()).expect("write");
    let output = std::process::Command::new(common::tools_binary())
        .args([
            "infer",
            "--model",
            "digits",
            "--threshold",
            "0.999",
            "--json",
            "--server",
            &server.grpc,
            "--input",
        ])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let (last, partials) = lines.split_last().expect("lines");
    assert_eq!(last["final"]["label"], expected["label"]);
    assert_eq!(last["final"]["timesteps"], expected["timesteps"]);
    assert_eq!(last["final"]["exit_reason"], expected["exit_reason"]);
    assert_eq!(partials.len() as u64, expected["timesteps"].as_u64().expect("timesteps"));
    // A wrong model is an error message and a failing exit status, not a panic.
    let output = std::process::Command::new(common::tools_binary())
        .args(["infer", "--model", "nope", "--server", &server.grpc, "--input"])
        .arg(&file)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_full_queue_is_resource_exhausted_over_grpc_and_429_over_http() {
    let server = Server::start(&shipped_models(), &["--max-batch", "1", "--queue-capacity", "1"]);
    let mut grpc = client(&server).await;
    let (inputs, _) = heldout_digits();
    // A session holds the only slot while it waits for frames...
    let start = pb::SessionStart {
        model: "digits".into(),
        policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
        ..Default::default()
    };
    let (frames, mut answers) = open_session(&mut grpc, start, None).await;
    frames.send(frame(digit_tensor(&inputs[0]))).await.expect("frame");
    assert!(answers.message().await.expect("partial").is_some());
    // ...one request waits in the queue...
    let mut queued_client = grpc.clone();
    let waiting = tokio::spawn(async move {
        let request = infer_request(
            "digits",
            pb::infer_request::Input::Tensor(digit_tensor(&inputs[1])),
            pb::Policy::default(),
        );
        queued_client.infer(request).await
    });
    let stats_url = server.url("/v1/models/digits/stats");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        let stats: Value = http.get(&stats_url).send().await.expect("stats").json().await.expect("json");
        if stats["queued"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...so the next one is refused at once, on either door.
    let (inputs, _) = heldout_digits();
    let refused = infer_request(
        "digits",
        pb::infer_request::Input::Tensor(digit_tensor(&inputs[2])),
        pb::Policy::default(),
    );
    expect_code(grpc.infer(refused).await, Code::ResourceExhausted, "queue is full").await;
    let (status, body) = infer(&http, &server.base, "digits", &json!({ "input": inputs[2] })).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    // Ending the session frees the slot; the waiting request is answered.
    drop(frames);
    while answers.message().await.expect("message").is_some() {}
    let answer = waiting.await.expect("task").expect("the queued request is answered");
    assert!(answer.into_inner().timesteps >= 1);
}

/// Under overload the server reads request bodies late, and the HTTP/2 library closes a connection
/// (GOAWAY `ENHANCE_YOUR_CALM`) once the small DATA frames it holds unread pass half of the
/// connection's window: with hyper's 1 MiB window, 3x overload dropped whole client connections.
/// The gRPC port's connection window is wider than a stream's: two streams may each send a whole
/// stream window (1 MiB) at once, which a 1 MiB connection window would not allow.
#[tokio::test]
async fn the_grpc_connection_window_holds_more_than_one_stream_window() {
    const STREAM_WINDOW: usize = 1 << 20;
    let server = Server::start(&shipped_models(), &[]);
    let address = server.grpc.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&address).await.expect("connects");
    // The client holds back at most 400 KiB a stream by default; let it ask for a whole window.
    let (mut sender, connection): (h2::client::SendRequest<prost::bytes::Bytes>, _) =
        h2::client::Builder::new()
            .max_send_buffer_size(STREAM_WINDOW)
            .handshake(tcp)
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut streams = Vec::new();
    for _ in 0..2 {
        sender = sender.ready().await.expect("a stream may open");
        let request = http::Request::post(format!("http://{address}/spikeserve.anytime.v1.Anytime/Infer"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a request head");
        let (_response, mut stream) = sender.send_request(request, false).expect("sent");
        stream.reserve_capacity(STREAM_WINDOW);
        streams.push(stream);
    }
    // The capacity arrives with the server's settings and window updates.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let granted: Vec<usize> = streams.iter().map(h2::SendStream::capacity).collect();
        if granted.iter().all(|&c| c == STREAM_WINDOW) {
            break;
        }
        assert!(std::time::Instant::now() < until, "send capacity granted per stream: {granted:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The requests a server has counted for `model` (`nv_inference_count`, one per request).
async fn requests_counted(server: &Server, model: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics")).await.expect("scrape").text().await.expect("text");
    text.lines()
        .filter(|line| {
            line.starts_with("nv_inference_count{") && line.contains(&format!("model=\"{model}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `spikeserve-tools bench --prime-grpc`: the client runs its own request path against another
/// server first, so that the first request it measures is the measured server's first request
/// and not the client's first use of its code.
#[tokio::test]
async fn the_load_generator_primes_itself_against_another_server() {
    let measured = Server::start(&shipped_models(), &[]);
    let primer = Server::start(&shipped_models(), &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let inputs = shipped_models().join("digits").join("heldout.json");
    let bench = |protocol: &str| {
        let mut command = std::process::Command::new(common::tools_binary());
        command
            .args(["bench", "--protocol", protocol, "--grpc", &measured.grpc, "--http", &measured.base])
            .args(["--model", "digits", "--clients", "1", "--requests", "5"])
            .args(["--warmup", "0", "--no-progress"])
            .args(["--prime-grpc", &primer.grpc, "--inputs"])
            .arg(&inputs)
            .arg("--json")
            .arg(&report);
        command.output().expect("runs")
    };
    let output = bench("grpc-unary");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(read_json(&report)["ok"], 5);
    assert_eq!(requests_counted(&primer, "digits").await, 200.0);
    assert_eq!(requests_counted(&measured, "digits").await, 5.0);
    // Over HTTP there is no gRPC path to prime: a clear refusal, not a silent run.
    let output = bench("http");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--prime-grpc goes with"), "{stderr}");
}
