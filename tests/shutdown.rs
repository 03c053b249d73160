//! SIGTERM drains: the server stops admitting at once, the requests in flight finish, and the
//! process exits 0. Model loading: health says "not serving" until the models are in.

mod common;

use std::time::{Duration, Instant};

use common::{heldout_digits, shipped_models, Server};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn digit(input: &serde_json::Value) -> pb::Tensor {
    let values = input
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| r.as_array().expect("row").clone())
        .flat_map(|r| r.as_array().expect("cols").clone())
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    pb::Tensor { shape: vec![1, 8, 8], values }
}

fn frame(tensor: pb::Tensor) -> pb::SessionRequest {
    pb::SessionRequest { message: Some(pb::session_request::Message::Frame(tensor)) }
}

#[tokio::test]
async fn sigterm_finishes_the_requests_in_flight_refuses_new_ones_and_exits_zero() {
    let mut server = Server::start(&shipped_models(), &["--shutdown-grace-secs", "20"]);
    let (inputs, _) = heldout_digits();
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("connects");
    let (tx, rx) = mpsc::channel(8);
    let start = pb::SessionStart {
        model: "digits".into(),
        policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
        ..Default::default()
    };
    tx.send(pb::SessionRequest { message: Some(pb::session_request::Message::Start(start)) })
        .await
        .expect("start");
    tx.send(frame(digit(&inputs[0]))).await.expect("frame");
    let mut answers = grpc.session(ReceiverStream::new(rx)).await.expect("session").into_inner();
    assert!(answers.message().await.expect("partial").is_some());

    let pid = server.child.id().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    // Admission stops: a new HTTP connection is refused or answered 503.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let refused = match reqwest::get(server.url("/health")).await {
            Err(_) => true,
            Ok(response) => response.status() == 503,
        };
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "the server kept admitting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The session in flight goes on: two more frames, then the client ends it.
    assert_eq!(end_session(tx, &mut answers, &inputs[0]).await.timesteps, 3);
    drop(answers);
    drop(grpc);
    let exit = wait_for_exit(&mut server, Duration::from_secs(15)).await;
    assert!(exit.success(), "exit status {exit}");
    let log: Vec<String> = server.log.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("every request in flight was answered")), "{log:?}");
    // The last word on what was answered: the one session, for the model that served it.
    let counts = log
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|line| line["fields"].clone())
        .find(|fields| fields["message"] == "final counts" && fields["model"] == "digits");
    let counts = counts.unwrap_or_else(|| panic!("no final counts for digits: {log:?}"));
    assert_eq!((counts["answered"].as_u64(), counts["cancelled"].as_u64()), (Some(1), Some(0)), "{counts}");
}

#[tokio::test]
async fn with_a_shutdown_delay_readiness_turns_first_and_requests_are_still_answered() {
    let mut server = Server::start(&shipped_models(), &["--shutdown-delay-secs", "1.5"]);
    let (inputs, _) = heldout_digits();
    let client = reqwest::Client::new();
    let infer = || {
        client
            .post(server.url("/v1/models/digits/infer"))
            .json(&serde_json::json!({ "input": inputs[0] }))
            .send()
    };
    assert_eq!(infer().await.expect("sent").status(), 200);
    let signalled = Instant::now();
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    // Readiness turns at once (KServe's ready route answers 400 when not ready)...
    loop {
        let ready =
            client.get(server.url("/v2/health/ready")).send().await.expect("still listening").status();
        if ready == 400 {
            break;
        }
        assert!(signalled.elapsed() < Duration::from_secs(1), "readiness did not turn");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...while requests, on this kept-alive connection or a new one, are still answered.
    assert_eq!(infer().await.expect("sent").status(), 200);
    let fresh = reqwest::Client::new()
        .post(server.url("/v1/models/digits/infer"))
        .json(&serde_json::json!({ "input": inputs[1] }))
        .send()
        .await
        .expect("a new connection is accepted during the delay");
    assert_eq!(fresh.status(), 200);
    assert!(signalled.elapsed() < Duration::from_millis(1500), "the checks ran after the delay");
    let exit = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(15), "the server did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit}");
    assert!(signalled.elapsed() >= Duration::from_millis(1500), "exited before the delay was over");
    let log: Vec<String> = server.log.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("shutdown delay")), "{log:?}");
}

/// Sends two more frames of `input`, half-closes, and reads the session to its final answer (the
/// call must end with OK).
async fn end_session(
    tx: mpsc::Sender<pb::SessionRequest>,
    answers: &mut tonic::Streaming<pb::InferStreamResponse>,
    input: &serde_json::Value,
) -> pb::InferResponse {
    for _ in 0..2 {
        tx.send(frame(digit(input))).await.expect("frame");
    }
    drop(tx);
    let mut last = None;
    while let Some(message) = answers.message().await.expect("the session ends with OK") {
        if let Some(pb::infer_stream_response::Message::Final(f)) = message.message {
            last = Some(f);
        }
    }
    last.expect("the session's final answer")
}

/// A session on `digits` at threshold 1.0 that has stepped one frame of `input` (its first partial
/// read): the frame sender and the answers.
async fn open_session(
    grpc: &mut AnytimeClient<tonic::transport::Channel>,
    input: &serde_json::Value,
) -> (mpsc::Sender<pb::SessionRequest>, tonic::Streaming<pb::InferStreamResponse>) {
    let (tx, rx) = mpsc::channel(8);
    tx.send(session_start(1.0)).await.expect("start");
    tx.send(frame(digit(input))).await.expect("frame");
    let mut session = grpc.session(ReceiverStream::new(rx)).await.expect("session").into_inner();
    assert!(session.message().await.expect("partial").is_some());
    (tx, session)
}

fn session_start(threshold: f64) -> pb::SessionRequest {
    let start = pb::SessionStart {
        model: "digits".into(),
        policy: Some(pb::Policy { threshold: Some(threshold), ..Default::default() }),
        ..Default::default()
    };
    pb::SessionRequest { message: Some(pb::session_request::Message::Start(start)) }
}

fn send_sigterm(server: &Server) {
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
}

/// Waits for the process to end without blocking the test's runtime: the client connections must
/// still answer the server's HTTP/2 PING while it closes them.
async fn wait_for_exit(server: &mut Server, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let log: Vec<String> = server.log.try_iter().collect();
            panic!("the server did not exit within {within:?}; its log:\n{}", log.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn json_log(server: &Server) -> Vec<serde_json::Value> {
    server
        .log
        .try_iter()
        .filter_map(|l| serde_json::from_str(&l).ok())
        .map(|r: serde_json::Value| r["fields"].clone())
        .collect()
}

fn error_code(status: &tonic::Status) -> &str {
    status.metadata().get("spikeserve-error-code").and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A session and a server stream held open across SIGTERM get their final answers (the stream's
/// last partials and trailers are read only after the signal); calls started after it, on the same
/// connections or new ones, get UNAVAILABLE / 503 `shutting_down`, and HTTP/1.1 answers close
/// their connection.
#[tokio::test]
async fn calls_open_at_sigterm_get_their_answers_and_later_calls_a_retryable_status() {
    let mut server = Server::start(&shipped_models(), &["--shutdown-grace-secs", "20"]);
    let (inputs, _) = heldout_digits();
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("connects");
    let (tx, mut session) = open_session(&mut grpc, &inputs[0]).await;
    // A stream of all 8 timesteps, of which the client reads one partial before the signal.
    let request = pb::InferRequest {
        model: "digits".into(),
        input: Some(pb::infer_request::Input::Tensor(digit(&inputs[1]))),
        policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
        ..Default::default()
    };
    let mut stream = grpc.infer_stream(request.clone()).await.expect("stream").into_inner();
    assert!(stream.message().await.expect("first partial").is_some());
    let http = reqwest::Client::new();

    send_sigterm(&server);
    // New calls are refused with a status while the connections stay open: HTTP (kept alive)...
    // (one sent before the server has seen the signal is still answered, and counted below).
    let mut answered_before_refusal = 0;
    let refused = loop {
        let response = http
            .post(server.url("/v1/models/digits/infer"))
            .json(&serde_json::json!({ "input": inputs[2] }))
            .send()
            .await
            .expect("the HTTP port answers while calls are in flight");
        if response.status() == 503 {
            break response;
        }
        assert_eq!(response.status(), 200);
        answered_before_refusal += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(refused.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    // A name no model answers to is still not found while draining, and counted under the one
    // label for unknown names: clients cannot add metric labels, draining or not.
    let unknown = http
        .post(server.url("/v1/models/no-such-model-7/infer"))
        .json(&serde_json::json!({ "input": inputs[2] }))
        .send()
        .await
        .expect("answered while draining");
    assert_eq!(unknown.status(), 404);
    let metrics = http.get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(!metrics.contains("no-such-model-7"), "an unknown name became a label");
    assert!(
        metrics.contains(
            r#"spikeserve_requests_total{model="_unknown",status="model_not_found",exit_reason="none"} 1"#
        ),
        "{metrics}"
    );
    // ...gRPC on the connection that holds the open calls...
    let status = grpc.infer(request.clone()).await.expect_err("refused after SIGTERM");
    assert_eq!(
        (status.code(), error_code(&status)),
        (tonic::Code::Unavailable, "shutting_down"),
        "{status:?}"
    );
    // ...and gRPC on a new connection.
    let mut fresh = AnytimeClient::connect(server.grpc.clone()).await.expect("connects while draining");
    let status = fresh.infer(request).await.expect_err("refused after SIGTERM");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // The stream: every partial, its final answer, then a clean end (trailers with OK).
    let mut partials = 1;
    let mut last = None;
    while let Some(message) = stream.message().await.expect("the stream ends with OK") {
        match message.message {
            Some(pb::infer_stream_response::Message::Partial(_)) => partials += 1,
            Some(pb::infer_stream_response::Message::Final(f)) => last = Some(f),
            None => panic!("an empty stream message"),
        }
    }
    assert_eq!(partials, 8);
    assert_eq!(last.expect("the stream's final answer").timesteps, 8);
    // The session: two more frames after the signal, then the client ends it.
    assert_eq!(end_session(tx, &mut session, &inputs[0]).await.timesteps, 3);
    drop((session, stream, grpc, fresh));

    let exit = wait_for_exit(&mut server, Duration::from_secs(15)).await;
    assert!(exit.success(), "exit status {exit}");
    let log = json_log(&server);
    assert!(log.iter().any(|f| f["message"] == "stopped: every request in flight was answered"), "{log:?}");
    let counts = log.iter().find(|f| f["message"] == "final counts" && f["model"] == "digits");
    let counts = counts.unwrap_or_else(|| panic!("no final counts for digits: {log:?}"));
    assert_eq!(
        (counts["answered"].as_u64(), counts["cancelled"].as_u64()),
        (Some(2 + answered_before_refusal), Some(0)),
        "{counts}"
    );
}

/// A session still open when the grace period runs out is ended with UNAVAILABLE `shutting_down`
/// (counted and logged), not by a broken connection, and the server exits 0 soon after.
#[tokio::test]
async fn a_call_still_open_when_the_grace_period_ends_gets_a_status() {
    let mut server = Server::start(&shipped_models(), &["--shutdown-grace-secs", "1"]);
    let (inputs, _) = heldout_digits();
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("connects");
    let (tx, mut session) = open_session(&mut grpc, &inputs[0]).await;
    let signalled = Instant::now();
    send_sigterm(&server);
    // The client never ends its session: the grace period does.
    let status = loop {
        match session.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the session ended without an answer or a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        (status.code(), error_code(&status)),
        (tonic::Code::Unavailable, "shutting_down"),
        "{status:?}"
    );
    assert!(status.message().contains("grace period"), "{status:?}");
    assert!(signalled.elapsed() >= Duration::from_millis(900), "ended before the grace period was over");
    drop(tx);
    let exit = wait_for_exit(&mut server, Duration::from_secs(10)).await;
    assert!(exit.success(), "exit status {exit}");
    let log = json_log(&server);
    let cut =
        log.iter().find(|f| f["message"].as_str().is_some_and(|m| m.starts_with("the grace period ran out")));
    assert_eq!(cut.unwrap_or_else(|| panic!("{log:?}"))["requests"].as_u64(), Some(1));
    let counts = log.iter().find(|f| f["message"] == "final counts" && f["model"] == "digits");
    let counts = counts.unwrap_or_else(|| panic!("no final counts for digits: {log:?}"));
    assert_eq!((counts["answered"].as_u64(), counts["failed"].as_u64()), (Some(0), Some(1)), "{counts}");
}
