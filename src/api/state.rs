//! What every door shares: the models being served (none until they have loaded), and whether the
//! server is draining for shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;

use super::error::ApiError;
use crate::model::{LoadedModel, ModelRegistry, Repository};

/// What axum handlers and gRPC services hold.
pub type AppState = Arc<ServerState>;

#[derive(Default)]
pub struct ServerState {
    repository: OnceLock<Arc<Repository>>,
    /// The repository API may list models but not load or unload them.
    repository_read_only: AtomicBool,
    /// Shutdown was announced: not ready for new traffic, though requests are still answered.
    leaving: AtomicBool,
    draining: AtomicBool,
    /// When a call was last refused for the drain, in microseconds since `epoch`.
    last_refusal_us: AtomicU64,
    epoch: OnceLock<Instant>,
    metrics: OnceLock<PrometheusHandle>,
}

impl ServerState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts serving the models of `repository` (the server answers "not ready" until then).
    pub fn set_repository(&self, repository: Arc<Repository>) {
        let _ = self.repository.set(repository);
    }

    /// The models directory, once loaded: for the repository API.
    pub fn repository(&self) -> Result<&Arc<Repository>, ApiError> {
        self.repository.get().ok_or(ApiError::NotReady)
    }

    /// Refuses the repository API's loads and unloads (the directory is still watched).
    pub fn set_repository_read_only(&self, read_only: bool) {
        self.repository_read_only.store(read_only, Ordering::Relaxed);
    }

    /// The models directory, for a load or unload asked through the API.
    pub fn repository_for_changes(&self) -> Result<&Arc<Repository>, ApiError> {
        if self.repository_read_only.load(Ordering::Relaxed) {
            return Err(ApiError::RepositoryReadOnly);
        }
        self.repository()
    }

    /// The models serving now, once loaded.
    pub fn registry(&self) -> Result<Arc<ModelRegistry>, ApiError> {
        Ok(self.repository()?.current())
    }

    /// Loaded, with at least one model, and not leaving.
    pub fn is_ready(&self) -> bool {
        !self.is_leaving() && self.registry().is_ok_and(|r| !r.is_empty())
    }

    /// A model by name, for a request: refused while draining. The name is looked up first, so
    /// that a refusal is counted under a model that exists (metric labels stay the loaded names,
    /// whatever names clients send).
    pub fn model(&self, name: &str) -> Result<Arc<LoadedModel>, ApiError> {
        let found = self.model_info(name);
        if self.is_draining() {
            self.last_refusal_us.store(self.micros_since_epoch(), Ordering::Release);
            found?;
            return Err(ApiError::ShuttingDown);
        }
        found
    }

    /// A model by name, for metadata (answered while draining too).
    pub fn model_info(&self, name: &str) -> Result<Arc<LoadedModel>, ApiError> {
        let registry = self.registry()?;
        registry.get(name).cloned().ok_or_else(|| ApiError::ModelNotFound {
            name: name.to_owned(),
            loaded: registry.names().join(", "),
        })
    }

    /// Where `/metrics` reads from (set once, at start-up).
    pub fn set_metrics(&self, handle: PrometheusHandle) {
        let _ = self.metrics.set(handle);
    }

    /// The Prometheus text exposition of every metric, if a recorder is installed.
    pub fn render_metrics(&self) -> Option<String> {
        let handle = self.metrics.get()?;
        crate::metrics::log_lines_dropped(crate::logging::dropped_lines());
        let spans = crate::telemetry::span_counts();
        crate::metrics::trace_spans(spans.exported, spans.dropped_queue_full, spans.dropped_export_failed);
        Some(handle.render())
    }

    /// Drains histogram data and prunes; run periodically.
    pub fn metrics_upkeep(&self) {
        if let Some(handle) = self.metrics.get() {
            handle.run_upkeep();
        }
    }

    /// Readiness turns "not ready" (so that load balancers stop sending) while requests are still
    /// answered: the shutdown delay before draining.
    pub fn announce_shutdown(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    /// Not ready for new traffic: shutdown announced, or draining.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire) || self.is_draining()
    }

    /// Stop admitting requests; those in flight finish.
    pub fn start_draining(&self) {
        self.last_refusal_us.store(self.micros_since_epoch(), Ordering::Release);
        self.draining.store(true, Ordering::Release);
    }

    /// How long ago a call was last refused for the drain (or the drain started).
    pub fn since_last_refusal(&self) -> Duration {
        let last = self.last_refusal_us.load(Ordering::Acquire);
        Duration::from_micros(self.micros_since_epoch().saturating_sub(last))
    }

    fn micros_since_epoch(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_micros() as u64
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
