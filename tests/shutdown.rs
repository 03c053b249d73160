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
    for _ in 0..2 {
        tx.send(frame(digit(&inputs[0]))).await.expect("frame");
    }
    drop(tx);
    let mut last = None;
    while let Some(message) = answers.message().await.expect("the stream ends cleanly") {
        if let Some(pb::infer_stream_response::Message::Final(f)) = message.message {
            last = Some(f);
        }
    }
    assert_eq!(last.expect("the request in flight is answered").timesteps, 3);
    drop(answers);
    drop(grpc);
    let exit = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = server.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "the server did not exit after draining");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
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
