//! OpenTelemetry traces: each request's span (and the spans and events below it) exported over
//! OTLP/gRPC to a collector, when `--otlp-endpoint` is set; nothing at all otherwise.
//!
//! A request's `traceparent`/`tracestate` (HTTP headers or gRPC metadata) make its span a child of
//! the caller's, so the server's part shows up inside the client's trace. Sampling is parent-based:
//! a caller's decision is kept, and a request that comes without one is sampled at
//! `--otlp-sample-ratio`.
//!
//! Exporting never holds up a request. A finished span goes into a bounded queue (`try_send`,
//! never a wait) read by a thread of its own, which batches the spans and sends them with its own
//! async runtime, so that a slow or dead collector costs the request workers nothing. When the queue
//! is full a span is dropped, and spans whose export failed are dropped too; both are counted
//! (`spikeserve_trace_spans_dropped_total`), as the log writer counts its dropped lines. The SDK's
//! `BatchSpanProcessor` does the same queueing but keeps its drop count to itself, which is why
//! the queue here is ours; the exporter is `opentelemetry-otlp`'s.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, Span as SdkSpan, SpanData, SpanExporter as _, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;
use tonic::metadata::{KeyRef, MetadataMap};
use tracing::Span;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::{Layer, Registry};

use crate::config::TelemetryArgs;
use crate::engine::TRACE_TARGET;

/// Spans sent to the collector in one export at most.
const MAX_BATCH: usize = 512;

/// After the first span of a quiet spell, how long the export thread waits for more to send with it.
const BATCH_DELAY: Duration = Duration::from_millis(200);

/// One export's limit, retries included (the exporter retries a collector that is unavailable).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// At shutdown, how long the spans still queued get to reach the collector. A dead collector is
/// not waited for beyond this.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// Set once the exporter runs: every other function here is a cheap no-op before that.
static ENABLED: AtomicBool = AtomicBool::new(false);
static DROPPED_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
static DROPPED_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("--otlp-endpoint {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("cannot start the span export thread: {0}")]
    Thread(std::io::Error),
}

/// Span counts since start: exported, and dropped for a full queue or a failed export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanCounts {
    pub exported: u64,
    pub dropped_queue_full: u64,
    pub dropped_export_failed: u64,
}

/// The span counts so far (all zero while tracing is off).
pub fn span_counts() -> SpanCounts {
    SpanCounts {
        exported: EXPORTED.load(Ordering::Relaxed),
        dropped_queue_full: DROPPED_QUEUE_FULL.load(Ordering::Relaxed),
        dropped_export_failed: DROPPED_EXPORT_FAILED.load(Ordering::Relaxed),
    }
}

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The running exporter: its layer goes into the log subscriber, and [`Tracing::shutdown`] sends
/// what is still queued before the process exits.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Starts the export thread when `--otlp-endpoint` is set; `None` (tracing off) otherwise.
    pub fn start(args: &TelemetryArgs) -> Result<Option<Self>, TelemetryError> {
        let Some(endpoint) = args.otlp_endpoint.clone() else { return Ok(None) };
        let resource = Resource::builder().with_service_name(args.otlp_service_name.clone()).build();
        let processor = QueueProcessor::start(endpoint, args.otlp_queue_spans.max(1), resource.clone())?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(args.otlp_sample_ratio))))
            .with_resource(resource)
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(Self { provider }))
    }

    /// The subscriber layer that turns `tracing` spans into OpenTelemetry spans. It sees only the
    /// server's own spans and events (a request's span, its `queued` span and `step` events, and
    /// the log lines written inside them), never the libraries' (the exporter's own gRPC client
    /// among them, which would otherwise trace its own exports).
    pub fn layer(&self) -> Box<dyn Layer<Registry> + Send + Sync> {
        let tracer = self.provider.tracer("spikeserve");
        let targets = Targets::new()
            .with_target(env!("CARGO_CRATE_NAME"), tracing::Level::INFO)
            .with_target(TRACE_TARGET, tracing::Level::TRACE);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_location(false)
            .with_filter(targets)
            .boxed()
    }

    /// Sends the spans still queued, for at most [`SHUTDOWN_FLUSH`], and stops the exporter.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        match self.provider.shutdown_with_timeout(SHUTDOWN_FLUSH) {
            Ok(()) => tracing::info!(counts = ?span_counts(), "span export stopped"),
            Err(error) => {
                tracing::warn!(%error, counts = ?span_counts(), "span export stopped without sending every span")
            }
        }
    }
}

/// The caller's trace context from W3C `traceparent`/`tracestate` headers; `None` when tracing is
/// off or the caller sent none (or an invalid one).
pub fn http_parent(headers: &HeaderMap) -> Option<Context> {
    parent(&HttpHeaders(headers))
}

/// As [`http_parent`], from gRPC metadata.
pub fn grpc_parent(metadata: &MetadataMap) -> Option<Context> {
    parent(&GrpcMetadata(metadata))
}

fn parent(carrier: &dyn Extractor) -> Option<Context> {
    if !enabled() {
        return None;
    }
    let context = TraceContextPropagator::new().extract(carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of the caller's span (before anything entered it).
pub fn set_parent(span: &Span, parent: Context) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "the caller's trace context could not be taken");
    }
}

/// `span` itself when tracing is on and its trace is sampled, for the engine to record the
/// request's time in the queue and each step it rides in; `None` otherwise, so that a request
/// nobody will see costs the step loop nothing.
pub fn sampled(span: &Span) -> Option<Span> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !enabled() {
        return None;
    }
    span.context().span().span_context().is_sampled().then(|| span.clone())
}

struct HttpHeaders<'a>(&'a HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

struct GrpcMetadata<'a>(&'a MetadataMap);

impl Extractor for GrpcMetadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(|key| match key {
                KeyRef::Ascii(key) => key.as_str(),
                KeyRef::Binary(key) => key.as_str(),
            })
            .collect()
    }
}

/// What the export thread is told besides spans.
enum Control {
    /// Send everything queued, then answer.
    Flush(std::sync::mpsc::SyncSender<()>),
    /// Send everything queued (until the deadline), stop the exporter, answer and end.
    Shutdown(Instant, std::sync::mpsc::SyncSender<()>),
}

/// Hands finished spans to the export thread without waiting: a full queue drops the span.
#[derive(Debug)]
struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Flush(_) => "Flush",
            Self::Shutdown(..) => "Shutdown",
        })
    }
}

impl QueueProcessor {
    /// Builds the exporter on a thread of its own, with a current-thread runtime that carries its
    /// connection, so that the collector's I/O never runs on the request workers. The endpoint's
    /// errors (not a URI, `https` without TLS) come back from here, before the server starts.
    fn start(endpoint: String, queue_spans: usize, resource: Resource) -> Result<Self, TelemetryError> {
        let (spans, spans_rx) = mpsc::channel(queue_spans);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (built_tx, built_rx) = std::sync::mpsc::sync_channel(1);
        let for_thread = endpoint.clone();
        std::thread::Builder::new()
            .name("otlp-export".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = built_tx.send(Err(format!("cannot start the export runtime: {error}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let built = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(for_thread)
                        .with_timeout(EXPORT_TIMEOUT)
                        .build();
                    let mut exporter = match built {
                        Ok(exporter) => exporter,
                        Err(error) => {
                            let _ = built_tx.send(Err(error.to_string()));
                            return;
                        }
                    };
                    exporter.set_resource(&resource);
                    let _ = built_tx.send(Ok(()));
                    export_loop(exporter, spans_rx, control_rx).await;
                });
            })
            .map_err(TelemetryError::Thread)?;
        match built_rx.recv() {
            Ok(Ok(())) => Ok(Self { spans, control }),
            Ok(Err(reason)) => Err(TelemetryError::Exporter { endpoint, reason }),
            Err(_) => {
                Err(TelemetryError::Exporter { endpoint, reason: "the export thread ended".to_owned() })
            }
        }
    }

    /// Sends `message` to the export thread and waits for its answer, at most `timeout`.
    fn ask(
        &self,
        message: impl FnOnce(std::sync::mpsc::SyncSender<()>) -> Control,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (reply, answered) = std::sync::mpsc::sync_channel(1);
        self.control.send(message(reply)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answered.recv_timeout(timeout).map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut SdkSpan, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            DROPPED_QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, EXPORT_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let deadline = Instant::now() + timeout;
        self.ask(|reply| Control::Shutdown(deadline, reply), timeout)
    }
}

/// The export thread: batches of spans as they come (a trickle waits [`BATCH_DELAY`] for company),
/// flushes and the shutdown as asked.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut failing = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            biased;
            message = control.recv() => {
                let (deadline, reply, last) = match message {
                    Some(Control::Flush(reply)) => (Instant::now() + EXPORT_TIMEOUT, Some(reply), false),
                    Some(Control::Shutdown(deadline, reply)) => (deadline, Some(reply), true),
                    // The provider is gone without a shutdown: send what is there and end.
                    None => (Instant::now() + SHUTDOWN_FLUSH, None, true),
                };
                drain(&exporter, &mut spans, &mut batch, deadline, &mut failing).await;
                if last {
                    let _ = exporter.shutdown_with_timeout(deadline.saturating_duration_since(Instant::now()));
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
                if last {
                    return;
                }
            }
            received = spans.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    return;
                }
                if batch.len() < MAX_BATCH {
                    tokio::time::sleep(BATCH_DELAY).await;
                    while batch.len() < MAX_BATCH {
                        match spans.try_recv() {
                            Ok(span) => batch.push(span),
                            Err(_) => break,
                        }
                    }
                }
                export(&exporter, &mut batch, None, &mut failing).await;
            }
        }
    }
}

/// Sends every span queued now, in batches, until `deadline`; what is left then is dropped.
async fn drain(
    exporter: &opentelemetry_otlp::SpanExporter,
    spans: &mut mpsc::Receiver<SpanData>,
    batch: &mut Vec<SpanData>,
    deadline: Instant,
    failing: &mut bool,
) {
    loop {
        while batch.len() < MAX_BATCH {
            match spans.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return;
        }
        export(exporter, batch, Some(deadline), failing).await;
    }
}

/// Exports `batch` (emptying it) and counts the outcome. The first failure after a success is
/// logged, not every one: a collector that is down would otherwise write a line per batch.
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    deadline: Option<Instant>,
    failing: &mut bool,
) {
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    let count = spans.len() as u64;
    let sent = exporter.export(spans);
    let result = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), sent)
            .await
            .unwrap_or(Err(OTelSdkError::Timeout(EXPORT_TIMEOUT))),
        None => sent.await,
    };
    match result {
        Ok(()) => {
            EXPORTED.fetch_add(count, Ordering::Relaxed);
            if std::mem::take(failing) {
                tracing::info!("spans reach the collector again");
            }
        }
        Err(error) => {
            DROPPED_EXPORT_FAILED.fetch_add(count, Ordering::Relaxed);
            if !std::mem::replace(failing, true) {
                tracing::warn!(%error, spans = count, "exporting spans failed; they are dropped (and counted) until the collector answers");
            }
        }
    }
}
