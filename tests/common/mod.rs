//! Test support: runs the real `spikeserve` binary on a loopback port and talks to it over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::Value;

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shipped_models() -> PathBuf {
    project_root().join("models")
}

/// The ONNX Runtime library the tests run against; `make test` sets it.
pub fn ort_library() -> String {
    std::env::var("ORT_DYLIB_PATH")
        .expect("ORT_DYLIB_PATH must point at libonnxruntime.so.1.31.1; run the tests with `make test`")
}

/// How close to the threshold a server's confidence must lie for its exit to be allowed to differ
/// from `eval.json`'s. `eval.json` was written on the machine that trained the model, and ONNX
/// Runtime's kernels take CPU-specific SIMD paths (AVX-512 against AVX2), so the same graph on
/// another CPU gives logits that differ in the last bits (the cards measure ~3e-6 between torch and
/// ONNX Runtime, a far larger gap). Comparisons within one run on one machine (batched against
/// alone, streamed against unary) stay exact.
pub const CROSS_CPU_CONFIDENCE_TOLERANCE: f64 = 1e-4;

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT` (`https://` when the server runs TLS).
    pub base: String,
    /// `http://127.0.0.1:PORT` of the gRPC services (`https://` with TLS).
    pub grpc: String,
    /// The log lines up to and including "listening".
    pub startup_log: Vec<String>,
    /// The log lines after "listening", as they come.
    pub log: mpsc::Receiver<String>,
    /// Cleared by [`Server::stop_reading_log`].
    reading_log: Arc<AtomicBool>,
}

impl Server {
    pub fn start(models: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(models, extra, &[])
    }

    /// As [`Server::start`], with extra environment variables for the server.
    pub fn start_with_env(models: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spikeserve"))
            .args([
                "--log-format",
                "json",
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .arg("--models")
            .arg(models)
            .args(extra)
            .env("ORT_DYLIB_PATH", ort_library())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting spikeserve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (lines, log) = mpsc::channel();
        let reading_log = Arc::new(AtomicBool::new(true));
        let reading = Arc::clone(&reading_log);
        std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut line = String::new();
            while reading.load(Ordering::Relaxed) {
                line.clear();
                match stderr.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if lines.send(line.trim_end().to_owned()).is_err() {
                            return;
                        }
                    }
                }
            }
            // A stalled log reader: the pipe stays open and nobody reads it, until the test ends.
            loop {
                std::thread::park();
            }
        });
        let mut seen = Vec::new();
        loop {
            match log.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    let listening = listening_addresses(&line);
                    seen.push(line);
                    if let Some((http, grpc, tls)) = listening {
                        let scheme = if tls { "https" } else { "http" };
                        return Self {
                            child,
                            base: format!("{scheme}://{http}"),
                            grpc: format!("{scheme}://{grpc}"),
                            startup_log: seen,
                            log,
                            reading_log,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("server did not start listening; its log:\n{}", seen.join("\n"));
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Where `/metrics` is served when the server was started with `--metrics-addr` (as logged at
    /// start-up, so that port 0 can be asked for).
    pub fn metrics_addr(&self) -> String {
        self.startup_log
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find_map(|record| record["fields"]["metrics_addr"].as_str().map(str::to_owned))
            .expect("the metrics address is logged")
    }

    /// Stops reading the server's stderr (after at most one more line) while keeping the pipe open:
    /// a log collector that has stalled.
    pub fn stop_reading_log(&self) {
        self.reading_log.store(false, Ordering::Relaxed);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP and gRPC addresses, and whether both run TLS, from the "listening" log line (written
/// once the models are loaded).
fn listening_addresses(line: &str) -> Option<(String, String, bool)> {
    let record: Value = serde_json::from_str(line).ok()?;
    let fields = record.get("fields")?;
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    let field = |name: &str| fields.get(name)?.as_str().map(str::to_owned);
    let tls = fields.get("tls").and_then(Value::as_bool).unwrap_or(false);
    Some((field("http_addr")?, field("grpc_addr")?, tls))
}

/// Runs the binary to completion (for start-up failures and `inspect`).
pub fn run_binary(args: &[&str], ort: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spikeserve"));
    command.args(args).env_remove("ORT_DYLIB_PATH");
    if let Some(ort) = ort {
        command.env("ORT_DYLIB_PATH", ort);
    }
    command.output().expect("running spikeserve")
}

/// The load tools' binary (`spikeserve-tools`: `infer`, `bench`, `soak`). It belongs to another
/// package of the workspace, and Cargo names only this package's binaries to its tests, so it is
/// found beside the server's; `cargo test --workspace` (what `make test` runs) builds both.
pub fn tools_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_spikeserve")).with_file_name("spikeserve-tools");
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --workspace` (as `make test` does)",
        path.display()
    );
    path
}

/// POSTs a JSON body to the infer route and returns status and JSON answer.
pub async fn infer(client: &reqwest::Client, base: &str, model: &str, body: &Value) -> (u16, Value) {
    let response =
        client.post(format!("{base}/v1/models/{model}/infer")).json(body).send().await.expect("request sent");
    let status = response.status().as_u16();
    let json = response.json().await.expect("JSON answer");
    (status, json)
}

/// The held-out digits shipped with the model: (inputs, targets).
pub fn heldout_digits() -> (Vec<Value>, Vec<usize>) {
    let heldout = read_json(&shipped_models().join("digits/heldout.json"));
    let inputs = heldout["inputs"].as_array().expect("inputs").clone();
    let targets = heldout["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t.as_u64().expect("target") as usize)
        .collect();
    (inputs, targets)
}

/// Posts `body` to `/v1` as JSON and as SSE; both must be refused with 400 before any stream starts.
/// Returns each `Accept` with its JSON error.
pub async fn refused_on_v1_and_sse(
    http: &reqwest::Client,
    server: &Server,
    body: &Value,
) -> Vec<(&'static str, Value)> {
    let mut errors = Vec::new();
    for accept in ["application/json", "text/event-stream"] {
        let response = http
            .post(server.url("/v1/models/digits/infer"))
            .header("accept", accept)
            .json(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 400, "{body} ({accept})");
        errors.push((accept, response.json().await.expect("JSON error")));
    }
    errors
}

/// Opens a gRPC `Session` on `model` whose start carries `policy`, and returns the status it is
/// refused with (at the call, or as the stream's first message).
pub async fn session_refusal(
    grpc: &mut spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient<tonic::transport::Channel>,
    model: &str,
    policy: spikeserve::api::grpc::anytime_pb::Policy,
) -> tonic::Status {
    use spikeserve::api::grpc::anytime_pb as pb;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let start = pb::SessionStart { model: model.into(), policy: Some(policy), ..Default::default() };
    tx.send(pb::SessionRequest { message: Some(pb::session_request::Message::Start(start)) })
        .await
        .expect("start");
    match grpc.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Err(status) => status,
        Ok(stream) => stream.into_inner().message().await.expect_err("the session is refused"),
    }
}

/// Every model shipped in `models/`, in the order the server lists them.
pub const SHIPPED_MODELS: [&str; 8] = [
    "digits",
    "digits-snntorch",
    "digits-str",
    "digits-tet",
    "event-digits",
    "event-digits-str",
    "event-digits-tet",
    "mnist-events",
];

/// Posts `body` to `/v1/models/{model}/infer` asking for Server-Sent Events, and returns the JSON of
/// its `final` event.
pub async fn sse_final(http: &reqwest::Client, server: &Server, model: &str, body: &Value) -> Value {
    let text = http
        .post(server.url(&format!("/v1/models/{model}/infer")))
        .header("accept", "text/event-stream")
        .json(body)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("a stream");
    let mut event = "";
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim();
        } else if let Some(data) = line.strip_prefix("data:") {
            if event == "final" {
                return serde_json::from_str(data.trim()).expect("a final answer");
            }
        }
    }
    panic!("no final event in {text:?}");
}
