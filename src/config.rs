//! Command-line configuration: every flag can also come from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use std::time::Duration;

use crate::backend::Device;
use crate::engine::{Admission, EngineConfig, WarmupBatches};
use crate::model::registry::LoadOptions;
use crate::token::Token;

/// How the process logs: the same flags on `spikeserve` and `spikeserve-tools`.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "SPIKESERVE_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    /// Log lines held for a reader of stderr that falls behind; beyond this, lines are dropped
    /// (and counted in `spikeserve_log_lines_dropped_total`) so that requests never wait on logging.
    #[arg(
        long,
        env = "SPIKESERVE_LOG_QUEUE_LINES",
        default_value_t = 65_536,
        global = true,
        value_name = "LINES"
    )]
    pub log_queue_lines: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where ONNX Runtime comes from; shared by every subcommand that opens a model.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// The ONNX Runtime shared library (libonnxruntime.so.1.31.1 from the onnxruntime wheel).
    /// Defaults to the one in ./.venv.
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "PATH")]
    pub ort_library: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Directory of models: each `<name>/model.onnx` is served as `<name>`.
    #[arg(long, env = "SPIKESERVE_MODELS", default_value = "models", value_name = "DIR")]
    pub models: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, env = "SPIKESERVE_HTTP_ADDR", default_value = "0.0.0.0:8000", value_name = "ADDR")]
    pub http_addr: SocketAddr,
    /// Address of the gRPC services (anytime API, KServe v2, health, reflection).
    #[arg(long, env = "SPIKESERVE_GRPC_ADDR", default_value = "0.0.0.0:8001", value_name = "ADDR")]
    pub grpc_addr: SocketAddr,
    /// Serve `/metrics` on this address instead of the HTTP API's.
    #[arg(long, env = "SPIKESERVE_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// On SIGTERM/SIGINT: stop admitting, then wait at most this many seconds for the requests in
    /// flight before exiting.
    #[arg(long, env = "SPIKESERVE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// On SIGTERM/SIGINT, first report "not ready" for this many seconds while still answering
    /// (so that load balancers stop sending before connections close), then drain.
    #[arg(long, env = "SPIKESERVE_SHUTDOWN_DELAY_SECS", default_value_t = 0.0, value_parser = non_negative_seconds)]
    pub shutdown_delay_secs: f64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Where models run: `cpu`, or `cuda` / `cuda:N` (needs the onnxruntime-gpu library; never
    /// falls back to the CPU).
    #[arg(long, env = "SPIKESERVE_DEVICE", default_value = "cpu")]
    pub device: Device,
    /// ONNX Runtime intra-op threads per model.
    #[arg(long, env = "SPIKESERVE_INTRA_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub intra_threads: u16,
    /// Requests that may wait per model; beyond this a request is refused with 429.
    #[arg(long, env = "SPIKESERVE_QUEUE_CAPACITY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,
    /// Batch slots per model: requests stepped together in one timestep (1 turns batching off).
    #[arg(long, env = "SPIKESERVE_MAX_BATCH", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_batch: u32,
    /// When a model is idle and a request arrives, wait this long (microseconds) for more to
    /// fill the batch before the first step. 0 steps at once; under load batches fill anyway.
    #[arg(long, env = "SPIKESERVE_BATCH_WAIT_US", default_value_t = 0)]
    pub batch_wait_us: u64,
    /// When a model has nothing to step, poll this long (microseconds) for the next request before
    /// sleeping: waking a sleeping thread costs about as much as a small model's timestep. It
    /// polls only with a second core available and while requests have been arriving within the
    /// window, so a lightly loaded server does not burn CPU; 0 never polls.
    #[arg(long, env = "SPIKESERVE_IDLE_POLL_US", default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub idle_poll_us: u64,
    /// The order in which waiting requests get a batch slot: `deadline` (priority class first,
    /// then the earliest latency budget, then arrival) or `fifo` (arrival only).
    #[arg(long, env = "SPIKESERVE_ADMISSION", value_enum, default_value = "deadline")]
    pub admission: Admission,
    /// Admit a request with a latency budget even when, at the measured step time, the budget
    /// cannot cover its `min_timesteps` (by default it is refused with `deadline_exceeded` before it
    /// takes a batch slot).
    #[arg(long, env = "SPIKESERVE_NO_EARLY_REFUSAL")]
    pub no_early_refusal: bool,
    /// With deadline-aware admission, stop growing a batch where one more row would make the step
    /// too slow for a request with a budget that can still finish (one stepping, or the one being
    /// admitted). More tight budgets are then met under overload, and fewer requests in all (see
    /// BENCHMARKS.md, latency budgets under overload). Off: every free slot is filled.
    #[arg(long, env = "SPIKESERVE_BUDGET_BATCH_LIMIT")]
    pub budget_batch_limit: bool,
    /// Batch sizes each model steps once at load (and reload) before it is ready: `powers-of-two`
    /// (1, 2, 4, ... up to --max-batch), `off`, or a list such as `1,8,64`.
    #[arg(long, env = "SPIKESERVE_WARMUP", default_value = "powers-of-two", value_name = "SIZES")]
    pub warmup: WarmupBatches,
    /// Largest request body (HTTP) or message (gRPC) accepted, in bytes.
    #[arg(long, env = "SPIKESERVE_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// End a bidirectional session that sends no message for this many seconds (it holds a batch
    /// slot while it waits).
    #[arg(long, env = "SPIKESERVE_SESSION_IDLE_TIMEOUT_SECS", default_value_t = 30.0, value_parser = positive_seconds)]
    pub session_idle_timeout_secs: f64,
    /// Look at the models directory this often (seconds) and load new or changed models, unload
    /// removed ones; 0 turns the watching off (the repository API still loads and unloads).
    #[arg(long, env = "SPIKESERVE_RELOAD_INTERVAL_SECS", default_value_t = 2.0, value_parser = non_negative_seconds)]
    pub reload_interval_secs: f64,
    /// Refuse the repository API's load and unload (403 / PERMISSION_DENIED); the index stays
    /// readable and the models directory is still watched. For servers whose models only change
    /// by deployment, or whose ports are reachable without a token.
    #[arg(long, env = "SPIKESERVE_REPOSITORY_READ_ONLY")]
    pub repository_read_only: bool,
    /// Let web pages on this origin call the HTTP API (CORS), e.g. `https://app.example`; repeat the
    /// flag (or separate with commas) for more, or `*` for any origin. Off by default.
    #[arg(
        long = "cors-allow-origin",
        env = "SPIKESERVE_CORS_ALLOW_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_allow_origins: Vec<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// OpenTelemetry traces, exported over OTLP/gRPC; off unless an endpoint is given.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Export a span per request (with its queue time, the timestep batches it rode in and its exit)
    /// to this OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Callers' W3C `traceparent` headers
    /// (or gRPC metadata) make the server's spans part of their traces. Off by default.
    #[arg(long, env = "SPIKESERVE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The share of traces sampled when the caller did not decide (no `traceparent`); a caller's
    /// sampled flag is always followed.
    #[arg(long, env = "SPIKESERVE_OTLP_SAMPLE_RATIO", default_value_t = 1.0, value_parser = ratio, value_name = "RATIO")]
    pub otlp_sample_ratio: f64,
    /// Finished spans held for a collector that falls behind; beyond this spans are dropped (and
    /// counted in `spikeserve_trace_spans_dropped_total`) so that requests never wait on tracing.
    #[arg(long, env = "SPIKESERVE_OTLP_QUEUE_SPANS", default_value_t = 8_192, value_name = "SPANS")]
    pub otlp_queue_spans: usize,
    /// The `service.name` the spans are exported under.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "spikeserve", value_name = "NAME")]
    pub otlp_service_name: String,
}

fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        Ok(ratio) => Err(format!("must be between 0 and 1, found {ratio}")),
        Err(error) => Err(error.to_string()),
    }
}

/// Bearer-token authentication: off unless at least one token is given; tokens from the file and
/// from the list are all accepted.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// File of accepted bearer tokens: one a line; blank lines and lines starting with `#` are
    /// ignored.
    #[arg(long, env = "SPIKESERVE_AUTH_TOKENS_FILE", value_name = "PATH")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Accepted bearer tokens, comma separated. Prefer the environment variable or the file: a
    /// value on the command line can be read by other users of the machine (`ps`).
    // `Token` never prints its value, and `hide_env_values` keeps it out of `--help`.
    #[arg(
        long,
        env = "SPIKESERVE_AUTH_TOKENS",
        value_name = "TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = Token::parse
    )]
    pub auth_tokens: Vec<Token>,
    /// Require the token on the health checks (HTTP /health and /v2/health/*, gRPC
    /// grpc.health.v1) and /metrics too; they are open by default for probes and scrapers.
    #[arg(long, env = "SPIKESERVE_AUTH_HEALTH")]
    pub auth_health: bool,
}

/// TLS for the HTTP and gRPC ports (the `--metrics-addr` port stays plain HTTP).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (the server's certificate first); needs --tls-key.
    #[arg(long, env = "SPIKESERVE_TLS_CERT", value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, env = "SPIKESERVE_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn non_negative_seconds(text: &str) -> Result<f64, String> {
    if text.trim() == "0" {
        return Ok(0.0);
    }
    positive_seconds(text)
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 => Ok(seconds),
        Ok(seconds) => Err(format!("must be a positive number of seconds, found {seconds}")),
        Err(error) => Err(error.to_string()),
    }
}

impl ServeConfig {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            intra_threads: usize::from(self.intra_threads),
            device: self.device,
            engine: EngineConfig {
                max_batch: self.max_batch as usize,
                batch_wait: Duration::from_micros(self.batch_wait_us),
                idle_poll: Duration::from_micros(self.idle_poll_us),
                queue_capacity: self.queue_capacity as usize,
                admission: self.admission,
                early_refusal: !self.no_early_refusal,
                budget_batch_limit: self.budget_batch_limit,
                warmup: self.warmup,
            },
        }
    }
}
