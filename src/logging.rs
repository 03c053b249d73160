//! Logging: text or JSON lines on stderr, written by a thread of their own.
//!
//! Every answered request logs a line. Written from the async workers, each line would be a
//! blocking `write` to stderr: cheap into a file or a terminal, but a log pipe that falls behind (a
//! busy collector, a container runtime's full buffer) would stall every request behind it, and a
//! pipe nobody reads would stop the server. Lines go through a bounded queue to a writer thread
//! instead; when the queue is full a line is dropped rather than a request delayed, and the drops
//! are counted (`spikeserve_log_lines_dropped_total`).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset: our info lines, ONNX Runtime's warnings.
const DEFAULT_FILTER: &str = "info,ort=warn";

/// Lines dropped because the queue to the writer thread was full.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// A layer beside the log lines, with its own filter (the OpenTelemetry export, `telemetry.rs`).
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber. Keep the guard until the process ends: dropping it writes out
/// the lines still queued (for up to a second).
///
/// `queue_lines` bounds the memory held for a log reader that is behind (a line is about 300 bytes).
/// Escape codes for colours only go to a terminal, never into files or collectors. `RUST_LOG`
/// filters the log lines only: `traces` (when given) chooses what it sees itself.
pub fn init(format: LogFormat, queue_lines: usize, traces: Option<ExtraLayer>) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(queue_lines.max(1))
        .thread_name("log-writer")
        .finish(std::io::stderr());
    // `init` runs once per process; a second call would fail at `init()` below anyway.
    let _ = DROPPED.set(writer.error_counter());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let lines =
        tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(std::io::stderr().is_terminal());
    let lines: ExtraLayer = match format {
        LogFormat::Text => lines.with_filter(filter).boxed(),
        LogFormat::Json => lines.json().with_filter(filter).boxed(),
    };
    let layers: Vec<ExtraLayer> = std::iter::once(lines).chain(traces).collect();
    tracing_subscriber::registry().with(layers).init();
    guard
}

/// Log lines dropped so far because the log reader fell behind (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |counter| counter.dropped_lines() as u64)
}
