//! `spikeserve bench`: a load generator for a running server (closed loop: N concurrent clients;
//! open loop: a fixed arrival rate) over gRPC unary, gRPC streaming, HTTP JSON or SSE, and the
//! in-process floor (a raw ONNX Runtime stepping loop at batch 1). Reports throughput, latency
//! percentiles, time to first partial, average timesteps and exit reasons, as a table and as JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::api::grpc::anytime_pb as pb;
use crate::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use crate::backend::{Device, OrtRuntime, StepSession};
use crate::engine::{CutoffPolicy, RunningPrediction};
use crate::input::{decode_json_events, decode_json_tensor, into_frames};
use crate::model::ModelContract;

use super::access::{with_authorization, ClientAccess};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    GrpcUnary,
    GrpcStream,
    Http,
    Sse,
    /// Not an inference: an empty gRPC call (`grpc.health.v1.Health/Check`), answered without
    /// touching a model. The round trip every gRPC request pays (client, loopback, HTTP/2,
    /// protobuf): the transport's floor, to set beside the model's.
    GrpcHealth,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "digits")]
    pub model: String,
    /// The held-out file: {"inputs": [...]} (tensors) or {"events": [...]} (raw events).
    #[arg(long, value_name = "FILE")]
    pub inputs: PathBuf,
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: Protocol,
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub http: String,
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    pub grpc: String,
    /// Closed loop: this many clients, each sending its next request when the last is answered.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Open loop: requests per second at fixed intervals (latency counts from the planned start,
    /// so a slow server cannot hide its queueing).
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Requests sent first and not measured.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Latency budgets to mix, in milliseconds, each with an optional share (`20:3,200:7`: 30% at
    /// 20 ms, 70% at 200 ms; equal shares without). The report then counts, per budget and
    /// priority, the answers within budget (the server's own judgement: any exit but `deadline`),
    /// deadline exits and refusals.
    #[arg(long, value_delimiter = ',', value_name = "MS[:SHARE]", value_parser = budget_share)]
    pub budgets_ms: Vec<(f64, u32)>,
    /// Priority classes to mix (`1,2`), in equal shares, independently of the budgets.
    #[arg(long, value_delimiter = ',', value_name = "CLASS")]
    pub priorities: Vec<u32>,
    /// The floor instead of a server: step the model in this process at batch 1.
    #[arg(long)]
    pub floor: bool,
    /// The model directory for `--floor` (model.onnx).
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// The ONNX Runtime library, for `--floor`.
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "PATH")]
    pub ort_library: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub access: ClientAccess,
}

/// One request's outcome.
#[derive(Debug, Clone)]
struct Sample {
    latency: Duration,
    first_partial: Option<Duration>,
    outcome: Result<(u64, String), String>,
    /// Which budget and priority mix class it was sent in.
    class: usize,
}

/// What one mix class (a budget and a priority) got.
#[derive(Debug, Serialize)]
pub struct ClassReport {
    pub budget_ms: Option<f64>,
    pub priority: Option<u32>,
    pub sent: usize,
    pub within_budget: usize,
    pub deadline_exits: usize,
    pub refused: BTreeMap<String, usize>,
    /// `within_budget / sent`.
    pub goodput: f64,
    pub answered_latency_ms: Percentiles,
}

/// `MS` or `MS:SHARE` (a positive budget, a share of at least 1).
fn budget_share(text: &str) -> Result<(f64, u32), String> {
    let (ms, share) = text.split_once(':').unwrap_or((text, "1"));
    let ms: f64 = ms.trim().parse().map_err(|_| format!("`{ms}` is not a number of milliseconds"))?;
    let share: u32 = share.trim().parse().map_err(|_| format!("`{share}` is not a whole share"))?;
    if !(ms.is_finite() && ms > 0.0) || share == 0 {
        return Err(format!("`{text}`: the budget must be positive and the share at least 1"));
    }
    Ok((ms, share))
}

/// The budget and priority mix: class `c` of request `i` and the policy it sends.
#[derive(Debug, Clone)]
struct Mix {
    budgets: Vec<Option<f64>>,
    /// Budget index by position in a cycle that repeats each budget by its share.
    budget_cycle: Vec<usize>,
    priorities: Vec<Option<u32>>,
}

impl Mix {
    fn new(args: &BenchArgs) -> Self {
        let (budgets, budget_cycle) = if args.budgets_ms.is_empty() {
            (vec![None], vec![0])
        } else {
            let cycle = args
                .budgets_ms
                .iter()
                .enumerate()
                .flat_map(|(i, &(_, share))| std::iter::repeat_n(i, share as usize))
                .collect();
            (args.budgets_ms.iter().map(|&(ms, _)| Some(ms)).collect(), cycle)
        };
        let priorities = if args.priorities.is_empty() {
            vec![None]
        } else {
            args.priorities.iter().map(|&p| Some(p)).collect()
        };
        Self { budgets, budget_cycle, priorities }
    }

    fn classes(&self) -> usize {
        self.budgets.len() * self.priorities.len()
    }

    /// Budgets cycle with their shares; priorities alternate once per budget cycle, so the two
    /// are independent.
    fn class_of(&self, request: usize) -> usize {
        let budget = self.budget_cycle[request % self.budget_cycle.len()];
        let priority = (request / self.budget_cycle.len()) % self.priorities.len();
        priority * self.budgets.len() + budget
    }

    fn budget(&self, class: usize) -> Option<f64> {
        self.budgets[class % self.budgets.len()]
    }

    fn priority(&self, class: usize) -> Option<u32> {
        self.priorities[class / self.budgets.len()]
    }

    /// `payload` with the class's budget and priority set (in the JSON body and the gRPC policy).
    fn apply(&self, payload: &Payload, class: usize) -> Payload {
        payload.with_policy(self.budget(class), self.priority(class))
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub protocol: Option<Protocol>,
    pub model: String,
    pub mode: &'static str,
    pub clients: usize,
    pub rate: Option<f64>,
    pub requests: usize,
    pub ok: usize,
    pub errors: BTreeMap<String, usize>,
    pub duration_s: f64,
    pub throughput_rps: f64,
    pub latency_ms: Percentiles,
    pub ttfp_ms: Option<Percentiles>,
    pub mean_timesteps: f64,
    pub exit_reasons: BTreeMap<String, usize>,
    /// Per budget and priority class, when `--budgets-ms` or `--priorities` mix them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassReport>,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

pub(super) fn percentiles(mut values: Vec<f64>) -> Percentiles {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        let index = ((values.len() as f64 - 1.0) * q).round() as usize;
        values[index.min(values.len() - 1)]
    };
    let mean = if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 };
    Percentiles {
        mean,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: values.last().copied().unwrap_or(f64::NAN),
    }
}

/// What one request sends, prepared once per held-out sample: the `/v1` JSON body and the gRPC
/// message.
#[derive(Clone)]
pub(super) struct Payload {
    pub(super) body: Arc<Vec<u8>>,
    pub(super) grpc: pb::InferRequest,
}

impl Payload {
    /// This payload with a latency budget and a priority class set where given (in the `/v1`
    /// JSON body and in the gRPC policy alike).
    pub(super) fn with_policy(&self, budget_ms: Option<f64>, priority: Option<u32>) -> Payload {
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
        Payload { body: Arc::new(serde_json::to_vec(&body).unwrap_or_default()), grpc }
    }
}

/// One payload per sample of a held-out file (`{"inputs": [...]}` or `{"events": [...]}`).
pub(super) fn payloads(inputs: &Path, model: &str, threshold: Option<f64>) -> anyhow::Result<Vec<Payload>> {
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
            let grpc = pb::InferRequest {
                model: model.to_owned(),
                input: Some(pb::infer_request::Input::Tensor(pb::Tensor {
                    shape: tensor.shape.iter().map(|&d| d as u64).collect(),
                    values: tensor.data,
                })),
                policy: Some(policy),
                ..Default::default()
            };
            out.push(Payload { body: Arc::new(serde_json::to_vec(&body)?), grpc });
        }
    } else if let Some(samples) = file.get("events").and_then(Value::as_array) {
        for sample in samples {
            let events = decode_json_events(sample)?;
            let mut body = json!({ "events": sample });
            if let Some(t) = threshold {
                body["threshold"] = json!(t);
            }
            let grpc = pb::InferRequest {
                model: model.to_owned(),
                input: Some(pb::infer_request::Input::Events(pb::Events::from(events.as_slice()))),
                policy: Some(policy),
                ..Default::default()
            };
            out.push(Payload { body: Arc::new(serde_json::to_vec(&body)?), grpc });
        }
    }
    if out.is_empty() {
        bail!("{} holds neither \"inputs\" nor \"events\"", inputs.display());
    }
    Ok(out)
}

/// The clients' connections: one HTTP client (a pool) and one gRPC channel (HTTP/2 streams).
#[derive(Clone)]
struct Connections {
    http: reqwest::Client,
    infer_url: Arc<String>,
    grpc: Option<AnytimeClient<Channel>>,
    health: Option<HealthClient<Channel>>,
    /// `authorization` for gRPC requests (the HTTP client sends it by itself).
    authorization: Option<MetadataValue<Ascii>>,
    protocol: Protocol,
}

impl Connections {
    async fn send(&self, payload: &Payload) -> Sample {
        let started = Instant::now();
        let (first_partial, outcome) = match self.protocol {
            Protocol::Http => (None, self.http_json(payload).await),
            Protocol::Sse => self.sse(payload, started).await,
            Protocol::GrpcUnary => (None, self.grpc_unary(payload).await),
            Protocol::GrpcStream => self.grpc_stream(payload, started).await,
            Protocol::GrpcHealth => (None, self.grpc_health().await),
        };
        Sample { latency: started.elapsed(), first_partial, outcome, class: 0 }
    }

    fn post(&self, payload: &Payload) -> reqwest::RequestBuilder {
        self.http
            .post(self.infer_url.as_str())
            .header("content-type", "application/json")
            .body(payload.body.as_ref().clone())
    }

    async fn http_json(&self, payload: &Payload) -> Result<(u64, String), String> {
        let response = self.post(payload).send().await.map_err(|e| format!("connect: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("body: {e}"))?;
        if !status.is_success() {
            return Err(format!("http {}", status.as_u16()));
        }
        answer_of(&body)
    }

    async fn sse(
        &self,
        payload: &Payload,
        started: Instant,
    ) -> (Option<Duration>, Result<(u64, String), String>) {
        let response = match self.post(payload).header("accept", "text/event-stream").send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return (None, Err(format!("http {}", r.status().as_u16()))),
            Err(e) => return (None, Err(format!("connect: {e}"))),
        };
        let mut first = None;
        let mut buffer = String::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { return (first, Err("body".into())) };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let event = block.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim).unwrap_or("");
                let data = block.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim).unwrap_or("");
                match event {
                    "partial" if first.is_none() => first = Some(started.elapsed()),
                    "final" => {
                        let parsed: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                        return (first, answer_of(&parsed));
                    }
                    "error" => return (first, Err("sse error event".into())),
                    _ => {}
                }
            }
        }
        (first, Err("stream ended without a final event".into()))
    }

    async fn grpc_unary(&self, payload: &Payload) -> Result<(u64, String), String> {
        let mut client = self.grpc.clone().ok_or("no gRPC channel")?;
        let answer = client
            .infer(with_authorization(payload.grpc.clone(), self.authorization.as_ref()))
            .await
            .map_err(|s| grpc_refusal(&s))?
            .into_inner();
        Ok((u64::from(answer.timesteps), exit_name(answer.exit_reason)))
    }

    /// No model, no timestep: reported as 0 timesteps, exit reason `none`.
    async fn grpc_health(&self) -> Result<(u64, String), String> {
        let mut client = self.health.clone().ok_or("no gRPC channel")?;
        let request = HealthCheckRequest { service: String::new() };
        client
            .check(with_authorization(request, self.authorization.as_ref()))
            .await
            .map_err(|s| format!("grpc {:?}", s.code()))?;
        Ok((0, "none".into()))
    }

    async fn grpc_stream(
        &self,
        payload: &Payload,
        started: Instant,
    ) -> (Option<Duration>, Result<(u64, String), String>) {
        let Some(mut client) = self.grpc.clone() else { return (None, Err("no gRPC channel".into())) };
        let request = with_authorization(payload.grpc.clone(), self.authorization.as_ref());
        let mut stream = match client.infer_stream(request).await {
            Ok(s) => s.into_inner(),
            Err(s) => return (None, Err(format!("grpc {:?}", s.code()))),
        };
        let mut first = None;
        loop {
            match stream.message().await {
                Ok(Some(message)) => match message.message {
                    Some(pb::infer_stream_response::Message::Partial(_)) if first.is_none() => {
                        first = Some(started.elapsed());
                    }
                    Some(pb::infer_stream_response::Message::Final(f)) => {
                        return (first, Ok((u64::from(f.timesteps), exit_name(f.exit_reason))));
                    }
                    _ => {}
                },
                Ok(None) => return (first, Err("stream ended without a final answer".into())),
                Err(s) => return (first, Err(format!("grpc {:?}", s.code()))),
            }
        }
    }
}

/// A gRPC refusal as the report names it: the code, and the server's error code where it tells
/// refusals of one gRPC code apart (a budget refused at admission, or one that ran out in the queue).
fn grpc_refusal(status: &tonic::Status) -> String {
    let code = status.metadata().get("spikeserve-error-code").and_then(|v| v.to_str().ok()).unwrap_or("");
    match (status.code(), code) {
        (tonic::Code::DeadlineExceeded, _) if status.message().contains("cannot be met") => {
            "grpc DeadlineExceeded (refused at admission)".into()
        }
        (tonic::Code::DeadlineExceeded, _) => "grpc DeadlineExceeded (expired in the queue)".into(),
        (code, _) => format!("grpc {code:?}"),
    }
}

fn answer_of(body: &Value) -> Result<(u64, String), String> {
    let timesteps = body["timesteps"].as_u64().ok_or("answer without timesteps")?;
    let reason = body["exit_reason"].as_str().unwrap_or("unknown").to_owned();
    Ok((timesteps, reason))
}

/// An exit reason's wire value as its name (`confident`, `max_timesteps`, ...).
pub(super) fn exit_name(reason: i32) -> String {
    pb::ExitReason::try_from(reason)
        .map(|r| r.as_str_name().trim_start_matches("EXIT_REASON_").to_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

pub(super) fn progress(total: usize, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {pos}/{len} requests {wide_bar} {per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = if args.floor { floor(&args)? } else { against_server(&args).await? };
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn against_server(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let base = payloads(&args.inputs, &args.model, args.threshold)?;
    let mix = Mix::new(args);
    // One copy of the samples per mix class: request i sends sample i of its class's copy.
    let classes: Vec<Vec<Payload>> =
        (0..mix.classes()).map(|c| base.iter().map(|p| mix.apply(p, c)).collect()).collect();
    let payloads = Arc::new(base);
    let classes = Arc::new(classes);
    let class_mix = Arc::new(mix.clone());
    let channel = match args.protocol {
        Protocol::GrpcUnary | Protocol::GrpcStream | Protocol::GrpcHealth => {
            Some(args.access.grpc_channel(&args.grpc).await?)
        }
        Protocol::Http | Protocol::Sse => None,
    };
    let grpc = channel.clone().map(|c| AnytimeClient::new(c).max_decoding_message_size(64 << 20));
    let health = channel.map(HealthClient::new);
    let connections = Connections {
        http: args.access.http_client(reqwest::Client::builder().pool_max_idle_per_host(1024), &args.http)?,
        infer_url: Arc::new(format!("{}/v1/models/{}/infer", args.http.trim_end_matches('/'), args.model)),
        grpc,
        health,
        authorization: args.access.grpc_authorization()?,
        protocol: args.protocol,
    };
    // Warm-up: connections open, caches warm; not measured.
    for i in 0..args.warmup {
        let sample = connections.send(&payloads[i % payloads.len()]).await;
        if let Err(error) = sample.outcome {
            bail!("warm-up request failed: {error}");
        }
    }
    let bar = progress(args.requests, args.no_progress);
    let samples = Arc::new(Mutex::new(Vec::with_capacity(args.requests)));
    let started = Instant::now();
    match args.rate {
        None => {
            let next = Arc::new(AtomicUsize::new(0));
            let mut clients = Vec::new();
            for _ in 0..args.clients {
                let (next, classes, mix, samples, connections, bar) = (
                    next.clone(),
                    classes.clone(),
                    class_mix.clone(),
                    samples.clone(),
                    connections.clone(),
                    bar.clone(),
                );
                let total = args.requests;
                clients.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return;
                        }
                        let class = mix.class_of(i);
                        let batch = &classes[class];
                        let mut sample = connections.send(&batch[i % batch.len()]).await;
                        sample.class = class;
                        if let Ok(mut s) = samples.lock() {
                            s.push(sample);
                        }
                        bar.inc(1);
                    }
                }));
            }
            for client in clients {
                client.await?;
            }
        }
        Some(rate) => {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate must be a positive number of requests per second");
            }
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = Vec::with_capacity(args.requests);
            for i in 0..args.requests {
                let planned = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(planned.into()).await;
                let (classes, samples, connections, bar) =
                    (classes.clone(), samples.clone(), connections.clone(), bar.clone());
                let class = class_mix.class_of(i);
                tasks.push(tokio::spawn(async move {
                    let batch = &classes[class];
                    let mut sample = connections.send(&batch[i % batch.len()]).await;
                    sample.class = class;
                    // Counted from the planned start: late sends are the server's queueing too.
                    sample.latency = planned.elapsed();
                    if let Ok(mut s) = samples.lock() {
                        s.push(sample);
                    }
                    bar.inc(1);
                }));
            }
            for task in tasks {
                task.await?;
            }
        }
    }
    let duration = started.elapsed();
    bar.finish_and_clear();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let mut report = summarize(args, if args.rate.is_some() { "open" } else { "closed" }, &samples, duration);
    if mix.classes() > 1 || !args.budgets_ms.is_empty() || !args.priorities.is_empty() {
        report.classes = (0..mix.classes()).map(|c| class_report(&mix, c, &samples)).collect();
    }
    Ok(report)
}

fn class_report(mix: &Mix, class: usize, samples: &[Sample]) -> ClassReport {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.class == class).collect();
    let mut refused = BTreeMap::new();
    let (mut within_budget, mut deadline_exits, mut latencies) = (0, 0, Vec::new());
    for sample in &mine {
        match &sample.outcome {
            Ok((_, reason)) if reason == "deadline" => {
                deadline_exits += 1;
                latencies.push(sample.latency.as_secs_f64() * 1e3);
            }
            Ok(_) => {
                within_budget += 1;
                latencies.push(sample.latency.as_secs_f64() * 1e3);
            }
            Err(code) => *refused.entry(code.clone()).or_insert(0) += 1,
        }
    }
    ClassReport {
        budget_ms: mix.budget(class),
        priority: mix.priority(class),
        sent: mine.len(),
        within_budget,
        deadline_exits,
        refused,
        goodput: within_budget as f64 / mine.len().max(1) as f64,
        answered_latency_ms: percentiles(latencies),
    }
}

fn summarize(args: &BenchArgs, mode: &'static str, samples: &[Sample], duration: Duration) -> Report {
    let mut errors = BTreeMap::new();
    let mut exit_reasons = BTreeMap::new();
    let mut timesteps = 0u64;
    let mut ok = 0usize;
    for sample in samples {
        match &sample.outcome {
            Ok((t, reason)) => {
                ok += 1;
                timesteps += t;
                *exit_reasons.entry(reason.clone()).or_insert(0) += 1;
            }
            Err(code) => *errors.entry(code.clone()).or_insert(0) += 1,
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let first: Vec<f64> = samples.iter().filter_map(|s| s.first_partial).map(ms).collect();
    Report {
        protocol: (!args.floor).then_some(args.protocol),
        model: args.model.clone(),
        mode,
        clients: if args.floor { 1 } else { args.clients },
        rate: args.rate,
        requests: samples.len(),
        ok,
        errors,
        duration_s: duration.as_secs_f64(),
        throughput_rps: ok as f64 / duration.as_secs_f64().max(1e-9),
        latency_ms: percentiles(samples.iter().map(|s| ms(s.latency)).collect()),
        ttfp_ms: (!first.is_empty()).then(|| percentiles(first)),
        mean_timesteps: timesteps as f64 / ok.max(1) as f64,
        exit_reasons,
        classes: Vec::new(),
    }
}

/// The floor: the model stepped at batch 1 in this process, with the same cutoff rule.
fn floor(args: &BenchArgs) -> anyhow::Result<Report> {
    let dir = args.model_dir.as_ref().context("--floor needs --model-dir")?;
    let runtime = OrtRuntime::load(args.ort_library.as_deref())?;
    let (session, signature) = StepSession::open(&runtime, &dir.join("model.onnx"), 1, Device::Cpu)?;
    let contract = ModelContract::from_signature(&signature)?;
    let mut session = StepSession::new(session, contract.clone());
    session.reserve_slots(1)?;
    let text = std::fs::read_to_string(&args.inputs)?;
    let file: Value = serde_json::from_str(&text)?;
    // Tensors become frames here; raw events are binned inside the timed loop, as the server bins
    // each request's events, so that both sides do the same work per request.
    let mut frames = Vec::new();
    if let Some(inputs) = file.get("inputs").and_then(Value::as_array) {
        for input in inputs {
            frames.push(FloorInput::Frames(into_frames(decode_json_tensor(input, None)?, &contract)?));
        }
    } else if let (Some(samples), Some(binning)) =
        (file.get("events").and_then(Value::as_array), contract.events)
    {
        for sample in samples {
            frames.push(FloorInput::Events(decode_json_events(sample)?, binning));
        }
    }
    if frames.is_empty() {
        bail!("no inputs the model takes in {}", args.inputs.display());
    }
    let policy = CutoffPolicy {
        threshold: args.threshold.unwrap_or(contract.default_threshold),
        min_timesteps: 1,
        max_timesteps: contract.timesteps,
        max_variance: None,
        calibrated_for: None,
    };
    let frame_len = contract.frame_len();
    let mut run_one = |input: &FloorInput| -> anyhow::Result<(u64, &'static str)> {
        let binned;
        let request = match input {
            FloorInput::Frames(frames) => frames,
            FloorInput::Events(events, binning) => {
                binned = crate::engine::RequestFrames::Sequence {
                    data: binning.bin(events)?,
                    count: binning.bins,
                };
                &binned
            }
        };
        session.zero_row(0);
        let mut prediction = RunningPrediction::new(contract.num_classes);
        loop {
            let t = prediction.timesteps();
            let frame: &[f32] = match request {
                crate::engine::RequestFrames::Static(data) => data,
                crate::engine::RequestFrames::Sequence { data, .. } => {
                    &data[t * frame_len..(t + 1) * frame_len]
                }
                crate::engine::RequestFrames::Stream(_) => bail!("streams are not benchmarked"),
            };
            session.frame_mut(0)?.copy_from_slice(frame);
            session.step(1)?;
            let confidence = prediction.add(session.logits(0));
            if let Some(reason) = policy.decide(prediction.timesteps(), confidence, 0.0) {
                return Ok((prediction.timesteps() as u64, reason.as_str()));
            }
        }
    };
    for i in 0..args.warmup {
        run_one(&frames[i % frames.len()])?;
    }
    let bar = progress(args.requests, args.no_progress);
    let mut samples = Vec::with_capacity(args.requests);
    let started = Instant::now();
    for i in 0..args.requests {
        let begun = Instant::now();
        let (t, reason) = run_one(&frames[i % frames.len()])?;
        samples.push(Sample {
            latency: begun.elapsed(),
            first_partial: None,
            outcome: Ok((t, reason.to_owned())),
            class: 0,
        });
        bar.inc(1);
    }
    let duration = started.elapsed();
    bar.finish_and_clear();
    Ok(summarize(args, "floor", &samples, duration))
}

/// One held-out sample for the floor: frames ready to step, or raw events to bin first.
enum FloorInput {
    Frames(crate::engine::RequestFrames),
    Events(Vec<crate::input::events::Event>, crate::input::EventBinning),
}

fn print_report(r: &Report) {
    let what = match r.protocol {
        Some(p) => format!("{p:?}").to_lowercase(),
        None => "floor".into(),
    };
    println!(
        "{what} {} | {} | clients {} | {} ok of {} | {:.0} req/s | latency ms p50 {:.3} p90 {:.3} p99 {:.3} | mean timesteps {:.3}",
        r.model,
        r.mode,
        r.clients,
        r.ok,
        r.requests,
        r.throughput_rps,
        r.latency_ms.p50,
        r.latency_ms.p90,
        r.latency_ms.p99,
        r.mean_timesteps
    );
    if let Some(t) = &r.ttfp_ms {
        println!("  time to first partial ms: p50 {:.3} p90 {:.3} p99 {:.3}", t.p50, t.p90, t.p99);
    }
    if !r.errors.is_empty() {
        println!("  errors: {:?}", r.errors);
    }
    println!("  exit reasons: {:?}", r.exit_reasons);
    for c in &r.classes {
        println!(
            "  budget {} ms, priority {}: {} sent, {} within budget ({:.1}%), {} deadline exits, refused {:?}, answered p99 {:.3} ms",
            c.budget_ms.map_or("-".into(), |b| format!("{b}")),
            c.priority.map_or("-".into(), |p| p.to_string()),
            c.sent,
            c.within_budget,
            c.goodput * 100.0,
            c.deadline_exits,
            c.refused,
            c.answered_latency_ms.p99
        );
    }
}
