//! `spikeserve-tools soak`: many clients against a running server for minutes, mixing every way of
//! asking (gRPC unary, server streaming and sessions, HTTP JSON and SSE) with clients that give up,
//! clients that drop their connection, and requests with tight budgets. It counts every request's
//! fate and fails if any got an error it should not have, if the server's slots do not return to
//! zero, or (with `--server-pid`) if resident memory grew.
//!
//! With `--until-shutdown` it is the load for a SIGTERM test: once the server refuses a request
//! because it is shutting down, clients stop sending and wait for their requests in flight, which
//! must all be answered.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use tonic::Code;

use crate::client::{exit_name, follow, ClientAccess, Grpc, Http, SseStream, StreamEnd};
use crate::payload::{payloads, Payload};
use crate::progress;
use crate::stats::{percentiles, Percentiles};

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    #[arg(long, default_value = "digits")]
    pub model: String,
    /// The held-out file: {"inputs": [...]} (tensors) or {"events": [...]} (raw events).
    #[arg(long, value_name = "FILE")]
    pub inputs: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub http: String,
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    pub grpc: String,
    /// Concurrent clients, each sending its next request when the last one is over.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    #[arg(long, default_value_t = 120.0)]
    pub duration_secs: f64,
    /// Share of requests whose client gives up early (after a few milliseconds, or after the
    /// first partial of a stream).
    #[arg(long, default_value_t = 0.1)]
    pub cancel_fraction: f64,
    /// Share of requests sent on a connection of their own that the client closes mid-request.
    #[arg(long, default_value_t = 0.05)]
    pub disconnect_fraction: f64,
    /// Share of requests with a 5 ms latency budget (a deadline exit, or `deadline_exceeded`
    /// when the queue ate it, are both expected answers for them).
    #[arg(long, default_value_t = 0.1)]
    pub budget_fraction: f64,
    /// gRPC connections the clients share (HTTP/2 streams multiplex on them).
    #[arg(long, default_value_t = 8)]
    pub grpc_connections: usize,
    /// The server's process id: its resident memory is sampled every second.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Stop sending once the server says it is shutting down; wait for what is in flight.
    #[arg(long)]
    pub until_shutdown: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub access: ClientAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Door {
    GrpcUnary,
    GrpcStream,
    GrpcSession,
    Http,
    Sse,
}

const DOORS: [Door; 5] = [Door::GrpcUnary, Door::GrpcStream, Door::GrpcSession, Door::Http, Door::Sse];

/// What the client does with its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Wait,
    GiveUp,
    Disconnect,
}

/// How a request ended, as the client saw it.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Answered {
        timesteps: u32,
        exit_reason: String,
    },
    Overloaded,
    /// Its budget ran out in the queue (only expected of requests that had one).
    DeadlineBeforeFirstStep,
    /// The server is draining, or no longer takes connections.
    ShuttingDown,
    /// The client gave up or dropped its connection, as it meant to.
    LeftByClient,
    /// During shutdown the connection broke under the call (an HTTP/2 protocol error): the client
    /// cannot tell whether it was answered. `scripts/soak.sh` settles it with the server's final
    /// counts, which must equal the answers the clients received.
    UnsettledAtShutdown,
    Failed(String),
}

/// A tiny deterministic generator (xorshift64*): the mix must be reproducible from `--seed`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Clone)]
struct Doors {
    http: Http,
    grpc_url: Arc<String>,
    channels: Arc<Vec<Grpc>>,
    /// TLS trust and token, for the connections a disconnecting client opens of its own.
    access: Arc<ClientAccess>,
    model: Arc<String>,
    timesteps: usize,
    frame_len: usize,
    /// The run ends with a shutdown (`--until-shutdown`).
    during_shutdown: bool,
}

impl Doors {
    async fn send(&self, door: Door, payload: &Payload, behaviour: Behaviour, rng: &mut Rng) -> Fate {
        let give_up_after = Duration::from_micros(200 + rng.below(5000) as u64);
        let channel = rng.below(self.channels.len());
        let request = async {
            match door {
                Door::Http | Door::Sse => {
                    let http = if behaviour == Behaviour::Disconnect {
                        // A connection of its own, closed when the future is dropped.
                        let builder = reqwest::Client::builder().pool_max_idle_per_host(0);
                        match Http::new(&self.access, builder, self.http.base()) {
                            Ok(http) => http,
                            Err(error) => return Fate::Failed(format!("http client: {error:#}")),
                        }
                    } else {
                        self.http.clone()
                    };
                    self.http_request(&http, door == Door::Sse, payload, behaviour).await
                }
                _ => {
                    let grpc = if behaviour == Behaviour::Disconnect {
                        match Grpc::connect(&self.access, &self.grpc_url).await {
                            Ok(grpc) => grpc,
                            Err(error) => return connect_failure(&format!("{error:#}")),
                        }
                    } else {
                        self.channels[channel].clone()
                    };
                    self.grpc_request(&grpc, door, payload, behaviour).await
                }
            }
        };
        match behaviour {
            Behaviour::Wait => request.await,
            // Dropping the request mid-way is the point: the server must free what it held.
            Behaviour::GiveUp | Behaviour::Disconnect => {
                match tokio::time::timeout(give_up_after, request).await {
                    Ok(fate) => fate,
                    Err(_) => Fate::LeftByClient,
                }
            }
        }
    }

    async fn http_request(&self, http: &Http, sse: bool, payload: &Payload, behaviour: Behaviour) -> Fate {
        let response = match http.infer(&self.model, &payload.body, sse).send().await {
            Ok(response) => response,
            Err(error) if error.is_connect() => return Fate::ShuttingDown,
            Err(error) if self.during_shutdown && closed_before_read(&error) => return Fate::ShuttingDown,
            Err(error) => return Fate::Failed(format!("http: {}", error_chain(&error))),
        };
        let status = response.status().as_u16();
        if status != 200 {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            return refusal(&code, &format!("http {status} {code}"));
        }
        if !sse {
            return match response.json::<Value>().await {
                Ok(body) => answered_json(&body),
                Err(error) => Fate::Failed(format!("http body: {error}")),
            };
        }
        let mut events = SseStream::new(response);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => return Fate::Failed(format!("sse body: {error}")),
            };
            match event.event.as_str() {
                "partial" if behaviour == Behaviour::GiveUp => return Fate::LeftByClient,
                "final" => return answered_json(&event.json()),
                "error" => {
                    let code = event.json()["error"]["code"].as_str().unwrap_or("").to_owned();
                    return refusal(&code, &format!("sse error {code}"));
                }
                _ => {}
            }
        }
        Fate::Failed("sse: the stream ended without a final event".into())
    }

    async fn grpc_request(&self, grpc: &Grpc, door: Door, payload: &Payload, behaviour: Behaviour) -> Fate {
        let stream = match door {
            Door::GrpcUnary => {
                return match grpc.infer(payload.grpc.clone()).await {
                    Ok(answer) => Fate::Answered {
                        timesteps: answer.timesteps,
                        exit_reason: exit_name(answer.exit_reason),
                    },
                    Err(status) => grpc_refusal(&status, self.during_shutdown),
                }
            }
            Door::GrpcStream => grpc.infer_stream(payload.grpc.clone()).await,
            // A session sends the request's input frame by frame, then half-closes.
            _ => grpc.session(&payload.grpc, self.frame_len, self.timesteps).await,
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(status) => return grpc_refusal(&status, self.during_shutdown),
        };
        let give_up = behaviour == Behaviour::GiveUp;
        let end =
            follow(&mut stream, |_| if give_up { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
                .await;
        match end {
            StreamEnd::Final(answer) => {
                Fate::Answered { timesteps: answer.timesteps, exit_reason: exit_name(answer.exit_reason) }
            }
            StreamEnd::Stopped => Fate::LeftByClient,
            StreamEnd::Closed => Fate::Failed("gRPC stream ended without a final answer".into()),
            StreamEnd::Failed(status) => grpc_refusal(&status, self.during_shutdown),
        }
    }
}

/// An error and its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The server closed an idle keep-alive connection just as the client sent a request on it (what
/// a draining HTTP/1.1 server does): the request was never read, so it was never accepted.
/// (It closes with a reset when the request's bytes are already in its receive buffer.)
fn closed_before_read(error: &reqwest::Error) -> bool {
    let chain = error_chain(error);
    error.is_request()
        && (chain.contains("connection closed before message completed")
            || chain.contains("(SendRequest): connection error: Connection reset by peer"))
}

fn answered_json(body: &Value) -> Fate {
    match (body["timesteps"].as_u64(), body["exit_reason"].as_str()) {
        (Some(timesteps), Some(reason)) => {
            Fate::Answered { timesteps: timesteps as u32, exit_reason: reason.to_owned() }
        }
        _ => Fate::Failed(format!("an answer without timesteps or exit reason: {body}")),
    }
}

fn refusal(code: &str, description: &str) -> Fate {
    match code {
        "overloaded" => Fate::Overloaded,
        "deadline_exceeded" => Fate::DeadlineBeforeFirstStep,
        "shutting_down" | "not_ready" => Fate::ShuttingDown,
        _ => Fate::Failed(description.to_owned()),
    }
}

fn grpc_refusal(status: &tonic::Status, during_shutdown: bool) -> Fate {
    let code = status.metadata().get("spikeserve-error-code").and_then(|v| v.to_str().ok()).unwrap_or("");
    match (status.code(), code) {
        (_, "overloaded" | "deadline_exceeded" | "shutting_down") => refusal(code, ""),
        // The draining server's GOAWAY names the last stream it will serve; calls the client had
        // not got onto the connection before it closed are cancelled unsent, never accepted.
        (Code::Cancelled, "") if during_shutdown && status.message().contains("operation was canceled") => {
            Fate::ShuttingDown
        }
        // Transport-level: the server closed its listener (shutdown) before the call was sent.
        (Code::Unavailable, _) if code.is_empty() => connect_failure(status.message()),
        (_, "") if during_shutdown && status.message().contains("h2 protocol error") => {
            Fate::UnsettledAtShutdown
        }
        _ => Fate::Failed(format!(
            "gRPC {:?} {code}: {}{}",
            status.code(),
            status.message(),
            status_causes(status)
        )),
    }
}

/// What lies under a status the transport made (`: cause: cause ...`), empty for a server's own.
fn status_causes(status: &tonic::Status) -> String {
    let mut causes = String::new();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        causes.push_str(&format!(": {error}"));
        source = error.source();
    }
    causes
}

fn connect_failure(message: &str) -> Fate {
    let refused = ["connect", "Connection refused", "transport error", "connection reset"];
    if refused.iter().any(|word| message.contains(word)) {
        Fate::ShuttingDown
    } else {
        Fate::Failed(format!("gRPC transport: {message}"))
    }
}

#[derive(Debug, Default, Serialize)]
pub struct SoakReport {
    pub clients: usize,
    pub duration_s: f64,
    pub sent: usize,
    pub answered: usize,
    pub answered_per_s: f64,
    pub overloaded: usize,
    pub deadline_before_first_step: usize,
    pub shutting_down: usize,
    /// Calls whose connection broke during shutdown (see [`Fate::UnsettledAtShutdown`]).
    pub unsettled_at_shutdown: usize,
    pub left_by_client: usize,
    /// Errors that should not happen: must be zero.
    pub unexpected: BTreeMap<String, usize>,
    pub by_door: BTreeMap<String, BTreeMap<String, usize>>,
    pub exit_reasons: BTreeMap<String, usize>,
    pub mean_timesteps: f64,
    pub answered_latency_ms: Option<Percentiles>,
    /// The server's own count of answered and cancelled requests while the soak ran.
    pub server_answered: Option<u64>,
    pub server_cancelled: Option<u64>,
    pub slots_back_to_zero: Option<bool>,
    /// The server's resident memory: once warm (after a tenth of the run), at its largest, at the end.
    pub rss_mib: Option<RssSummary>,
}

#[derive(Debug, Serialize)]
pub struct RssSummary {
    pub warm: f64,
    pub max: f64,
    pub end: f64,
    pub samples: Vec<f64>,
}

struct Record {
    door: Door,
    fate: Fate,
    latency: Duration,
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.grpc_connections == 0 {
        bail!("--clients and --grpc-connections must be at least 1");
    }
    let payloads = Arc::new(payloads(&args.inputs, &args.model, None)?);
    let http = Http::new(&args.access, reqwest::Client::builder().pool_max_idle_per_host(1024), &args.http)?;
    let model: Value = http
        .get(&format!("/v1/models/{}", args.model))
        .send()
        .await
        .with_context(|| format!("asking {} for model {}", http.base(), args.model))?
        .json()
        .await?;
    let timesteps = model["timesteps"].as_u64().context("the model info has no timesteps")? as usize;
    let frame_len = model["frame_shape"]
        .as_array()
        .map(|dims| dims.iter().filter_map(Value::as_u64).product::<u64>() as usize)
        .context("the model info has no frame_shape")?;
    let mut channels = Vec::with_capacity(args.grpc_connections);
    for _ in 0..args.grpc_connections {
        channels.push(Grpc::connect(&args.access, &args.grpc).await?);
    }
    let doors = Doors {
        http: http.clone(),
        grpc_url: Arc::new(args.grpc.clone()),
        channels: Arc::new(channels),
        access: Arc::new(args.access.clone()),
        model: Arc::new(args.model.clone()),
        timesteps,
        frame_len,
        during_shutdown: args.until_shutdown,
    };
    let server_before = server_counts(&http, &args.model).await;

    let duration = Duration::from_secs_f64(args.duration_secs.max(0.0));
    let started = Instant::now();
    let shutting_down = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let bar = progress::bar(0, args.no_progress);
    let rss = tokio::spawn(sample_rss(args.server_pid, duration, shutting_down.clone()));
    let mut clients = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let (doors, payloads, records, bar, stop) =
            (doors.clone(), payloads.clone(), records.clone(), bar.clone(), shutting_down.clone());
        let args = args.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = Rng::new(args.seed.wrapping_add(client as u64 * 7919));
            while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
                let door = DOORS[rng.below(DOORS.len())];
                let roll = rng.unit();
                let behaviour = if roll < args.disconnect_fraction {
                    Behaviour::Disconnect
                } else if roll < args.disconnect_fraction + args.cancel_fraction {
                    Behaviour::GiveUp
                } else {
                    Behaviour::Wait
                };
                let mut payload = payloads[rng.below(payloads.len())].clone();
                let budgeted = rng.unit() < args.budget_fraction;
                if budgeted {
                    payload = payload.with_policy(Some(5.0), None);
                }
                let sent = Instant::now();
                let mut fate = doors.send(door, &payload, behaviour, &mut rng).await;
                if fate == Fate::DeadlineBeforeFirstStep && !budgeted {
                    fate = Fate::Failed("deadline_exceeded without a budget".into());
                }
                if fate == Fate::ShuttingDown && args.until_shutdown {
                    stop.store(true, Ordering::Relaxed);
                }
                bar.inc(1);
                if let Ok(mut records) = records.lock() {
                    records.push(Record { door, fate, latency: sent.elapsed() });
                }
            }
        }));
    }
    for client in clients {
        client.await?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    shutting_down.store(true, Ordering::Relaxed);
    let rss = rss.await.ok().flatten();

    let mut report =
        summarize(&records.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default(), elapsed);
    report.clients = args.clients;
    report.rss_mib = rss;
    if !args.until_shutdown {
        report.slots_back_to_zero = Some(slots_settle(&http, &args.model).await);
        if let (Some(before), Some(after)) = (server_before, server_counts(&http, &args.model).await) {
            report.server_answered = Some(after.0.saturating_sub(before.0));
            report.server_cancelled = Some(after.1.saturating_sub(before.1));
        }
    }
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let unexpected: usize = report.unexpected.values().sum();
    if unexpected > 0 {
        bail!("{unexpected} requests failed in ways they should not have: {:?}", report.unexpected);
    }
    if report.slots_back_to_zero == Some(false) {
        bail!("the server's slots or queue did not return to zero after the soak");
    }
    if let Some(rss) = &report.rss_mib {
        // Flat: the end within 25% (and 16 MiB) of the warm figure; allocator slack is not growth.
        if rss.end > rss.warm * 1.25 && rss.end - rss.warm > 16.0 {
            bail!("resident memory grew from {:.1} MiB (warm) to {:.1} MiB (end)", rss.warm, rss.end);
        }
    }
    Ok(())
}

fn summarize(records: &[Record], elapsed: Duration) -> SoakReport {
    let mut report =
        SoakReport { duration_s: elapsed.as_secs_f64(), sent: records.len(), ..Default::default() };
    let (mut timesteps, mut latencies) = (0u64, Vec::new());
    for record in records {
        let name = match &record.fate {
            Fate::Answered { timesteps: t, exit_reason } => {
                report.answered += 1;
                timesteps += u64::from(*t);
                latencies.push(record.latency.as_secs_f64() * 1e3);
                *report.exit_reasons.entry(exit_reason.clone()).or_default() += 1;
                "answered"
            }
            Fate::Overloaded => {
                report.overloaded += 1;
                "overloaded"
            }
            Fate::DeadlineBeforeFirstStep => {
                report.deadline_before_first_step += 1;
                "deadline_before_first_step"
            }
            Fate::ShuttingDown => {
                report.shutting_down += 1;
                "shutting_down"
            }
            Fate::LeftByClient => {
                report.left_by_client += 1;
                "left_by_client"
            }
            Fate::UnsettledAtShutdown => {
                report.unsettled_at_shutdown += 1;
                "unsettled_at_shutdown"
            }
            Fate::Failed(why) => {
                *report.unexpected.entry(why.clone()).or_default() += 1;
                "unexpected"
            }
        };
        let door = serde_json::to_value(record.door).ok().and_then(|v| v.as_str().map(str::to_owned));
        *report.by_door.entry(door.unwrap_or_default()).or_default().entry(name.to_owned()).or_default() += 1;
    }
    report.answered_per_s = report.answered as f64 / elapsed.as_secs_f64().max(1e-9);
    report.mean_timesteps = timesteps as f64 / report.answered.max(1) as f64;
    report.answered_latency_ms = (!latencies.is_empty()).then(|| percentiles(latencies));
    report
}

/// The server's (answered, cancelled) counts for the model, from its stats route.
async fn server_counts(http: &Http, model: &str) -> Option<(u64, u64)> {
    let stats = http.get_json(&format!("/v1/models/{model}/stats")).await.ok()?;
    let exits = &stats["exits"];
    let answered = ["confident", "max_timesteps", "deadline"].iter().filter_map(|k| exits[k].as_u64()).sum();
    Some((answered, exits["cancelled"].as_u64()?))
}

/// Whether every slot and queue place of the model is free again within ten seconds.
async fn slots_settle(http: &Http, model: &str) -> bool {
    for _ in 0..200 {
        if let Ok(stats) = http.get_json(&format!("/v1/models/{model}/stats")).await {
            if stats["active_slots"] == 0 && stats["queued"] == 0 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Samples the server's VmRSS once a second until the soak ends.
async fn sample_rss(pid: Option<u32>, duration: Duration, done: Arc<AtomicBool>) -> Option<RssSummary> {
    let pid = pid?;
    let started = Instant::now();
    let (mut samples, mut warm) = (Vec::new(), None);
    while !done.load(Ordering::Relaxed) {
        let status = tokio::fs::read_to_string(format!("/proc/{pid}/status")).await.ok();
        let kib = status.as_deref().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        });
        if let Some(kib) = kib {
            let mib = kib / 1024.0;
            samples.push(mib);
            if warm.is_none() && started.elapsed() >= duration / 10 {
                warm = Some(mib);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let end = *samples.last()?;
    Some(RssSummary {
        warm: warm.unwrap_or(end),
        max: samples.iter().copied().fold(f64::MIN, f64::max),
        end,
        samples,
    })
}

fn print_report(report: &SoakReport) {
    println!(
        "soak: {} clients, {:.0} s, {} requests: {} answered ({:.0}/s, mean {:.2} timesteps), {} overloaded, \
         {} deadline before the first step, {} left by their client, {} refused for shutdown, \
         {} unsettled at shutdown, {} unexpected",
        report.clients,
        report.duration_s,
        report.sent,
        report.answered,
        report.answered_per_s,
        report.mean_timesteps,
        report.overloaded,
        report.deadline_before_first_step,
        report.left_by_client,
        report.shutting_down,
        report.unsettled_at_shutdown,
        report.unexpected.values().sum::<usize>(),
    );
    for (door, fates) in &report.by_door {
        println!("  {door:<13} {fates:?}");
    }
    if let Some(latency) = &report.answered_latency_ms {
        println!(
            "  answered latency ms: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
            latency.p50, latency.p90, latency.p99, latency.max
        );
    }
    if let (Some(answered), Some(cancelled)) = (report.server_answered, report.server_cancelled) {
        println!("  server: {answered} answered, {cancelled} cancelled");
    }
    if let Some(zero) = report.slots_back_to_zero {
        println!("  slots and queue back to zero: {zero}");
    }
    if let Some(rss) = &report.rss_mib {
        println!("  server RSS MiB: warm {:.1}, max {:.1}, end {:.1}", rss.warm, rss.max, rss.end);
    }
    for (error, count) in &report.unexpected {
        println!("  UNEXPECTED x{count}: {error}");
    }
}
