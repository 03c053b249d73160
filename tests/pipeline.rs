//! Every door takes the same steps (arrival, id, span, model lookup, exit, counting): the places
//! where doors had drifted apart, checked against the real server.

mod common;

use std::time::Duration;

use common::{shipped_models, Server};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The value of `spikeserve_requests_total` for one model label and status (0 when absent).
async fn failures(client: &reqwest::Client, server: &Server, model: &str, status: &str) -> f64 {
    let text = client.get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .filter(|line| line.starts_with("spikeserve_requests_total{"))
        .filter(|line| {
            line.contains(&format!("model=\"{model}\"")) && line.contains(&format!("status=\"{status}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn kserve_http_errors_echo_the_request_id() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    for (path, body) in [
        ("/v2/models/digits/infer", "{not json"),
        ("/v2/models/nope/infer", "{}"),
        ("/v2/models/digits/versions/99/infer", "{}"),
    ] {
        let response = client
            .post(server.url(path))
            .header("x-request-id", "trace-me-42")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert!(response.status().is_client_error(), "{path}: {}", response.status());
        let echoed = response.headers().get("x-request-id").and_then(|v| v.to_str().ok());
        assert_eq!(echoed, Some("trace-me-42"), "{path}");
    }
}

#[tokio::test]
async fn a_wrong_version_on_the_kserve_http_route_is_counted() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let before = failures(&client, &server, "_unknown", "model_not_found").await;
    let response = client
        .post(server.url("/v2/models/digits/versions/99/infer"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    let after = failures(&client, &server, "_unknown", "model_not_found").await;
    assert_eq!(after - before, 1.0, "the refused request is counted once");
}

#[tokio::test]
async fn a_session_that_fails_before_its_start_is_counted_and_logged_in_its_span() {
    let server = Server::start_with_env(&shipped_models(), &[], &[("RUST_LOG", "info,spikeserve=debug")]);
    let client = reqwest::Client::new();
    let before = failures(&client, &server, "_unknown", "invalid_field").await;
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC connects");
    let (tx, rx) = mpsc::channel(1);
    let frame = pb::Tensor { shape: vec![8, 8], values: vec![0.0; 64] };
    tx.send(pb::SessionRequest { message: Some(pb::session_request::Message::Frame(frame)) })
        .await
        .expect("send");
    drop(tx);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert("x-request-id", "no-start-7".parse().expect("ascii"));
    let status = grpc.session(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let after = failures(&client, &server, "_unknown", "invalid_field").await;
    assert_eq!(after - before, 1.0, "the refused session is counted once");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let logged = std::iter::from_fn(|| {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        server.log.recv_timeout(left).ok()
    })
    .any(|line| {
        line.contains("request refused") && line.contains("no-start-7") && line.contains("grpc-session")
    });
    assert!(logged, "the refusal is logged under the call's span (door and id)");
}
