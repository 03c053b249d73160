//! OpenTelemetry traces against a real OTLP receiver: a collector started here (the OTLP trace
//! service over gRPC) records what the real server exports. A caller's `traceparent` (HTTP header or
//! gRPC metadata) makes the server's request span its child, with the door, model, id and exit as
//! attributes, the wait for a slot as a `queued` span and each timestep batch as a `step` event;
//! parent-based sampling follows the caller; and a collector that is dead or stalled changes nothing
//! for clients: the same answers, drops counted on `/metrics`, a clean exit.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{heldout_digits, infer, shipped_models, Server};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{json, Value};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;

/// An OTLP trace receiver on a loopback port: keeps every span it is sent, or (stalled) never
/// answers an export.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    service_names: Arc<Mutex<Vec<String>>>,
    stalled: bool,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.stalled {
            std::future::pending::<()>().await;
        }
        for resource_spans in request.into_inner().resource_spans {
            if let Some(resource) = &resource_spans.resource {
                if let Some(AnyValue::StringValue(name)) = attribute(&resource.attributes, "service.name") {
                    self.service_names.lock().expect("lock").push(name.clone());
                }
            }
            for scope_spans in resource_spans.scope_spans {
                self.spans.lock().expect("lock").extend(scope_spans.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    /// Starts the receiver; returns it and its `http://` endpoint.
    async fn start(stalled: bool) -> (Self, String) {
        let collector = Self { stalled, ..Self::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
        let addr: SocketAddr = listener.local_addr().expect("address");
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("lock").clone()
    }

    /// Waits until the spans of `trace_id` include a `request` span and a `queued` span (the two
    /// spans a traced request makes); returns them.
    async fn wait_for_trace(&self, trace_id: &[u8]) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Span> = self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
            let has = |name: &str| spans.iter().any(|s| s.name == name);
            if has("request") && has("queued") {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no request and queued spans for trace {trace_id:02x?}; got {spans:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> &'a str {
    match attribute(attributes, key) {
        Some(AnyValue::StringValue(value)) => value,
        other => panic!("attribute {key}: {other:?} in {attributes:?}"),
    }
}

fn int(attributes: &[KeyValue], key: &str) -> i64 {
    match attribute(attributes, key) {
        Some(AnyValue::IntValue(value)) => *value,
        other => panic!("attribute {key}: {other:?} in {attributes:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A made-up caller's trace: (trace id, parent span id).
fn caller(seed: u8) -> (Vec<u8>, Vec<u8>) {
    (
        (0..16).map(|i| seed.wrapping_mul(31).wrapping_add(i)).collect(),
        (0..8).map(|i| seed ^ (0x50 + i)).collect(),
    )
}

fn traceparent(trace_id: &[u8], parent: &[u8], sampled: bool) -> String {
    format!("00-{}-{}-{}", hex(trace_id), hex(parent), if sampled { "01" } else { "00" })
}

/// Checks the server's spans of one traced request against what its client sent and received.
fn check_request_trace(
    spans: &[Span],
    parent: &[u8],
    door: &str,
    id: &str,
    timesteps: i64,
    exit_reason: &str,
) {
    let request = spans.iter().find(|s| s.name == "request").expect("a request span");
    assert_eq!(request.parent_span_id, parent, "the request span is the caller's span's child");
    let attributes = &request.attributes;
    assert_eq!(text(attributes, "door"), door);
    assert_eq!(text(attributes, "model"), "digits");
    assert_eq!(text(attributes, "id"), id);
    assert_eq!(int(attributes, "timesteps"), timesteps);
    assert_eq!(text(attributes, "exit_reason"), exit_reason);

    let queued = spans.iter().find(|s| s.name == "queued").expect("a queued span");
    assert_eq!(queued.parent_span_id, request.span_id, "queued is the request's child");
    assert!(queued.start_time_unix_nano >= request.start_time_unix_nano);
    assert!(queued.end_time_unix_nano <= request.end_time_unix_nano);

    let steps: Vec<_> = request.events.iter().filter(|e| e.name == "step").collect();
    assert_eq!(steps.len() as i64, timesteps, "one step event per timestep: {:?}", request.events);
    for (t, step) in steps.iter().enumerate() {
        assert_eq!(int(&step.attributes, "timestep"), t as i64 + 1);
        assert!(int(&step.attributes, "batch_size") >= 1);
    }
    let exit = request.events.iter().find(|e| e.name == "exit").expect("an exit event");
    assert_eq!(text(&exit.attributes, "exit_reason"), exit_reason);
    assert_eq!(int(&exit.attributes, "timesteps"), timesteps);
}

fn digit_tensor(input: &Value) -> pb::Tensor {
    fn flatten(value: &Value, out: &mut Vec<f32>) {
        match value {
            Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
            other => out.push(other.as_f64().expect("number") as f32),
        }
    }
    let mut values = Vec::new();
    flatten(input, &mut values);
    pb::Tensor { shape: vec![1, 8, 8], values }
}

fn grpc_exit_reason(reason: i32) -> &'static str {
    match pb::ExitReason::try_from(reason).expect("an exit reason") {
        pb::ExitReason::Confident => "confident",
        pb::ExitReason::MaxTimesteps => "max_timesteps",
        pb::ExitReason::Deadline => "deadline",
        other => panic!("exit reason {other:?}"),
    }
}

async fn http_traced(
    server: &Server,
    input: &Value,
    id: &str,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Value {
    let mut request = reqwest::Client::new()
        .post(server.url("/v1/models/digits/infer"))
        .header("x-request-id", id)
        .json(&json!({"input": input}));
    if let Some(value) = traceparent {
        request = request.header("traceparent", value);
    }
    if let Some(value) = tracestate {
        request = request.header("tracestate", value);
    }
    let response = request.send().await.expect("request sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON answer")
}

/// A `/metrics` sample's value (0 when absent).
async fn metric(server: &Server, sample: &str) -> u64 {
    let text = reqwest::get(server.url("/metrics")).await.expect("scrape").text().await.expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().expect("a count"))
}

/// Polls `/metrics` until `sample` is above zero.
async fn wait_for_metric(server: &Server, sample: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = metric(server, sample).await;
        if value > 0 {
            return value;
        }
        assert!(Instant::now() < deadline, "{sample} stayed 0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then the exit status (the server must exit; a dead collector must not keep it up).
fn terminate(mut server: Server) -> std::process::ExitStatus {
    let pid = server.child.id().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_makes_the_request_span_its_child_on_http_and_grpc() {
    let (collector, endpoint) = Collector::start(false).await;
    let server = Server::start(
        &shipped_models(),
        &["--otlp-endpoint", &endpoint, "--otlp-service-name", "spikeserve-under-test"],
    );
    let (inputs, _) = heldout_digits();

    // HTTP: traceparent and tracestate headers.
    let (trace_id, parent) = caller(1);
    let answer = http_traced(
        &server,
        &inputs[0],
        "otel-http-1",
        Some(&traceparent(&trace_id, &parent, true)),
        Some("vendor=abc"),
    )
    .await;
    let spans = collector.wait_for_trace(&trace_id).await;
    check_request_trace(
        &spans,
        &parent,
        "http",
        "otel-http-1",
        answer["timesteps"].as_i64().expect("timesteps"),
        answer["exit_reason"].as_str().expect("exit_reason"),
    );
    let request = spans.iter().find(|s| s.name == "request").expect("request span");
    assert_eq!(request.trace_state, "vendor=abc", "the caller's tracestate is carried on");

    // gRPC: the same context as metadata.
    let (trace_id, parent) = caller(2);
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC connects");
    let mut call = tonic::Request::new(pb::InferRequest {
        model: "digits".into(),
        request_id: "otel-grpc-1".into(),
        input: Some(pb::infer_request::Input::Tensor(digit_tensor(&inputs[1]))),
        ..Default::default()
    });
    call.metadata_mut().insert("traceparent", traceparent(&trace_id, &parent, true).parse().expect("ASCII"));
    let answer = grpc.infer(call).await.expect("answered").into_inner();
    let spans = collector.wait_for_trace(&trace_id).await;
    check_request_trace(
        &spans,
        &parent,
        "grpc",
        "otel-grpc-1",
        i64::from(answer.timesteps),
        grpc_exit_reason(answer.exit_reason),
    );

    // Without a traceparent a request starts a trace of its own (ratio 1 by default).
    let answer = http_traced(&server, &inputs[2], "otel-http-root", None, None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let root = loop {
        let found = collector.spans().into_iter().find(|s| {
            s.name == "request" && matches!(attribute(&s.attributes, "id"), Some(AnyValue::StringValue(id)) if id == "otel-http-root")
        });
        if let Some(span) = found {
            break span;
        }
        assert!(Instant::now() < deadline, "no span for the request without a traceparent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(root.parent_span_id.is_empty(), "a root span");
    assert_eq!(int(&root.attributes, "timesteps"), answer["timesteps"].as_i64().expect("timesteps"));
    assert!(collector.service_names.lock().expect("lock").iter().all(|name| name == "spikeserve-under-test"));

    assert!(wait_for_metric(&server, "spikeserve_trace_spans_exported_total").await >= 6);
    assert_eq!(metric(&server, "spikeserve_trace_spans_dropped_total{reason=\"queue_full\"}").await, 0);
    assert_eq!(metric(&server, "spikeserve_trace_spans_dropped_total{reason=\"export_failed\"}").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_caller_and_the_ratio_applies_to_the_rest() {
    let (collector, endpoint) = Collector::start(false).await;
    let server =
        Server::start(&shipped_models(), &["--otlp-endpoint", &endpoint, "--otlp-sample-ratio", "0"]);
    let (inputs, _) = heldout_digits();

    // Not sampled: the caller said no, and (ratio 0) a request without a caller.
    let (unsampled_trace, parent) = caller(3);
    http_traced(
        &server,
        &inputs[0],
        "otel-unsampled",
        Some(&traceparent(&unsampled_trace, &parent, false)),
        None,
    )
    .await;
    http_traced(&server, &inputs[1], "otel-no-caller", None, None).await;
    // Sampled: the caller said yes, whatever the ratio.
    let (sampled_trace, parent) = caller(4);
    let answer = http_traced(
        &server,
        &inputs[2],
        "otel-sampled",
        Some(&traceparent(&sampled_trace, &parent, true)),
        None,
    )
    .await;
    let spans = collector.wait_for_trace(&sampled_trace).await;
    check_request_trace(
        &spans,
        &parent,
        "http",
        "otel-sampled",
        answer["timesteps"].as_i64().expect("timesteps"),
        answer["exit_reason"].as_str().expect("exit_reason"),
    );
    // Spans leave in the order they end, so the earlier requests' would have arrived by now.
    let others: Vec<_> = collector.spans().into_iter().filter(|s| s.trace_id != sampled_trace).collect();
    assert!(others.is_empty(), "only the sampled caller's trace is exported: {others:?}");
}

/// Sends the held-out digits one at a time (so that each steps alone, as on the other server) and
/// returns what each answer said.
async fn answers(server: &Server, inputs: &[Value]) -> Vec<(u64, u64, String, f64)> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for input in inputs {
        let (status, answer) = infer(&client, &server.base, "digits", &json!({"input": input})).await;
        assert_eq!(status, 200, "{answer}");
        out.push((
            answer["class_index"].as_u64().expect("class_index"),
            answer["timesteps"].as_u64().expect("timesteps"),
            answer["exit_reason"].as_str().expect("exit_reason").to_owned(),
            answer["confidence"].as_f64().expect("confidence"),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_changes_no_answer_and_its_spans_are_counted_as_dropped() {
    // A port that was just free and is closed now: every export is refused.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let (inputs, _) = heldout_digits();
    let inputs = &inputs[..inputs.len().min(40)];
    let plain = Server::start(&shipped_models(), &[]);
    let expected = answers(&plain, inputs).await;
    drop(plain);

    let traced = Server::start(&shipped_models(), &["--otlp-endpoint", &dead]);
    assert_eq!(answers(&traced, inputs).await, expected, "the same answers with tracing to a dead collector");
    let failed =
        wait_for_metric(&traced, "spikeserve_trace_spans_dropped_total{reason=\"export_failed\"}").await;
    assert!(failed <= 2 * inputs.len() as u64, "{failed} spans for {} requests", inputs.len());
    assert_eq!(metric(&traced, "spikeserve_trace_spans_exported_total").await, 0);
    assert!(terminate(traced).success(), "a clean exit with the collector dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_fills_the_span_queue_and_requests_go_on() {
    let (collector, endpoint) = Collector::start(true).await;
    let server = Server::start(&shipped_models(), &["--otlp-endpoint", &endpoint, "--otlp-queue-spans", "1"]);
    let (inputs, _) = heldout_digits();
    let client = reqwest::Client::new();
    // Two spans per request and room for one: the queue overflows while the export hangs.
    for input in inputs.iter().take(20) {
        let (status, answer) = infer(&client, &server.base, "digits", &json!({"input": input})).await;
        assert_eq!(status, 200, "{answer}");
    }
    let dropped =
        wait_for_metric(&server, "spikeserve_trace_spans_dropped_total{reason=\"queue_full\"}").await;
    assert!(dropped <= 40, "{dropped} spans dropped of 40");
    assert!(collector.spans().is_empty(), "the stalled collector accepted nothing");
    assert!(terminate(server).success(), "a clean exit with the collector stalled");
}
