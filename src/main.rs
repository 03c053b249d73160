//! The `spikeserve` binary: `serve` runs the server, `inspect` checks a model against the contract.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use std::future::IntoFuture;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand};
use spikeserve::api::auth::{self, Auth};
use spikeserve::api::grpc::anytime::AnytimeService;
use spikeserve::api::grpc::anytime_pb::anytime_server::AnytimeServer;
use spikeserve::api::grpc::inference_pb::grpc_inference_service_server::GrpcInferenceServiceServer;
use spikeserve::api::grpc::{limits, FILE_DESCRIPTOR_SET};
use spikeserve::api::http::router;
use spikeserve::api::kserve::grpc::KServeService;
use spikeserve::api::ServerState;
use spikeserve::backend::OrtRuntime;
use spikeserve::config::{LogFormat, RuntimeArgs, ServeConfig};
use spikeserve::model::registry::{self, MODEL_FILE};
use spikeserve::model::Repository;
use spikeserve::tls::{TlsIdentity, TlsListener};

#[derive(Parser)]
#[command(name = "spikeserve", version, about = "Anytime inference server for spiking neural networks")]
struct Cli {
    /// Log format.
    #[arg(long, env = "SPIKESERVE_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// Log lines held for a reader of stderr that falls behind; beyond this, lines are dropped
    /// (and counted in `spikeserve_log_lines_dropped_total`) so that requests never wait on logging.
    #[arg(
        long,
        env = "SPIKESERVE_LOG_QUEUE_LINES",
        default_value_t = 65_536,
        global = true,
        value_name = "LINES"
    )]
    log_queue_lines: usize,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve every model in the models directory.
    Serve(ServeConfig),
    /// Check one model (a directory holding model.onnx, or the .onnx file) and print its contract as JSON.
    Inspect {
        path: PathBuf,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Held to the end of `main`, so that the lines still queued are written before the process exits.
    let _log_writer = spikeserve::logging::init(cli.log_format, cli.log_queue_lines);
    match cli.command {
        Command::Serve(config) => serve(config),
        Command::Inspect { path, runtime } => inspect(&path, &runtime),
    }
}

fn inspect(path: &std::path::Path, runtime: &RuntimeArgs) -> anyhow::Result<()> {
    let runtime = OrtRuntime::load(runtime.ort_library.as_deref())?;
    let file = if path.is_dir() { path.join(MODEL_FILE) } else { path.to_path_buf() };
    let contract = registry::inspect(&runtime, &file)?;
    println!("{}", serde_json::to_string_pretty(&contract)?);
    Ok(())
}

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    // Tokens and certificates first: a mistake there is cheaper to report than a model load.
    let security = Security::load(&config)?;
    let runtime = OrtRuntime::load(config.runtime.ort_library.as_deref())?;
    config.device.check_available()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_servers(config, security, runtime))
}

/// Who may call (bearer tokens) and how the doors are reached (TLS), both optional.
struct Security {
    auth: Option<Auth>,
    tls: Option<TlsIdentity>,
}

impl Security {
    fn load(config: &ServeConfig) -> anyhow::Result<Self> {
        let auth = Auth::from_args(&config.auth)?;
        // Clap makes the two flags require each other; both or neither reach here.
        let tls = match (&config.tls.tls_cert, &config.tls.tls_key) {
            (Some(cert), Some(key)) => {
                spikeserve::tls::install_crypto_provider();
                Some(TlsIdentity::load(cert, key)?)
            }
            _ => None,
        };
        match &auth {
            Some(auth) => tracing::info!(
                tokens = auth.token_count(),
                health_and_metrics_open = !auth.guards_health(),
                "bearer-token authentication on"
            ),
            None => tracing::info!("bearer-token authentication off: every client is served"),
        }
        if tls.is_none() && auth.is_some() {
            tracing::warn!(
                "tokens are sent in the clear without --tls-cert/--tls-key (or a TLS proxy in front)"
            );
        }
        Ok(Self { auth, tls })
    }
}

/// Binds both ports, answers health checks ("not serving") while the models load, serves, and on
/// SIGTERM/SIGINT drains: new requests are refused, those in flight get `--shutdown-grace-secs`.
async fn run_servers(config: ServeConfig, security: Security, runtime: OrtRuntime) -> anyhow::Result<()> {
    let state = ServerState::new();
    state.set_metrics(spikeserve::metrics::install().context("installing the metrics recorder")?);
    let upkeep = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.metrics_upkeep();
        }
    });
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the HTTP address {}", config.http_addr))?;
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC address {}", config.grpc_addr))?;
    let http_addr = http_listener.local_addr().context("reading the bound HTTP address")?;
    let grpc_addr = grpc_listener.local_addr().context("reading the bound gRPC address")?;
    tracing::info!(%http_addr, %grpc_addr, "bound; loading models");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    let grpc = auth::guard_grpc(grpc_router(state.clone(), &config, health_service)?, security.auth.clone());
    // No Nagle: a streamed partial is a few hundred bytes and must leave at once, not wait for
    // the client's delayed ACK (40 ms).
    let grpc_incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let mut grpc_builder = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        grpc_builder = grpc_builder.tls_config(tls.grpc_config()).context("configuring TLS for gRPC")?;
    }
    let grpc_server = tokio::spawn(
        grpc_builder
            .layer(tower::util::MapResponseLayer::new(limits::rewrite_too_large))
            .add_routes(grpc)
            .serve_with_incoming_shutdown(
                until_stopped(grpc_incoming, stop_rx.clone()),
                stopped(stop_rx.clone()),
            ),
    );
    let app = router(state.clone(), config.max_body_bytes, config.metrics_addr.is_none());
    let app = auth::guard_http(app, security.auth.clone());
    let mut metrics_server = None;
    if let Some(addr) = config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        let bound = listener.local_addr().context("reading the bound metrics address")?;
        // Plain HTTP even with TLS: scrapers usually reach it on a private network.
        tracing::info!(metrics_addr = %bound, "serving /metrics on its own address");
        let metrics_app =
            auth::guard_http(spikeserve::api::http::metrics_router(state.clone()), security.auth);
        metrics_server = Some(tokio::spawn(
            axum::serve(listener, metrics_app).with_graceful_shutdown(stopped(stop_rx.clone())).into_future(),
        ));
    }
    let http_server = match &security.tls {
        Some(tls) => {
            let listener = TlsListener::new(http_listener, tls.http_acceptor());
            tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx)).into_future())
        }
        None => {
            let listener = http_listener.tap_io(|tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
            });
            tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx)).into_future())
        }
    };

    let models = config.models.clone();
    let options = config.load_options();
    let repository = tokio::task::spawn_blocking(move || Repository::open(runtime, &models, options))
        .await
        .context("loading the models")??;
    let registry = repository.current();
    if registry.is_empty() {
        bail!(
            "no model could be loaded from {} ({} refused); see the errors above",
            config.models.display(),
            registry.refused().len()
        );
    }
    let repository = Arc::new(repository);
    if config.reload_interval_secs > 0.0 {
        repository.clone().watch(Duration::from_secs_f64(config.reload_interval_secs));
    }
    state.set_repository_read_only(config.repository_read_only);
    state.set_repository(repository);
    for service in GRPC_SERVICES {
        health.set_service_status(*service, tonic_health::ServingStatus::Serving).await;
    }
    tracing::info!(%http_addr, %grpc_addr, tls = security.tls.is_some(), "listening");

    shutdown_signal().await;
    state.announce_shutdown();
    for service in GRPC_SERVICES {
        health.set_service_status(*service, tonic_health::ServingStatus::NotServing).await;
    }
    if config.shutdown_delay_secs > 0.0 {
        // Load balancers see "not ready" and stop sending; whatever still arrives is answered, so
        // clients on kept-alive connections are not refused or reset in the meantime.
        tracing::info!(delay_secs = config.shutdown_delay_secs, "shutdown delay: not ready, still answering");
        tokio::time::sleep(Duration::from_secs_f64(config.shutdown_delay_secs)).await;
    }
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let bound = tokio::time::Instant::now() + grace;
    // 1. New calls are refused with a status while every connection stays open, and the calls in
    //    flight finish: a call that races the drain is answered `shutting_down` (UNAVAILABLE / 503),
    //    never cut off by a closing connection.
    tracing::info!("shutting down: refusing new calls (`shutting_down`); finishing those in flight");
    state.start_draining();
    let settled = in_flight_settled(&state, bound).await;
    // 2. Then the transports close as their protocols intend: GOAWAY on every HTTP/2 connection
    //    (the streams it admitted finish and flush their trailers first), HTTP/1.1 connections close
    //    after their answer (`Connection: close`), idle ones at once.
    let _ = stop_tx.send(true);
    let mut servers = tokio::spawn(async move {
        let metrics = async {
            match metrics_server {
                Some(server) => Some(server.await),
                None => None,
            }
        };
        tokio::join!(http_server, grpc_server, metrics)
    });
    let closed = match tokio::time::timeout_at(bound, &mut servers).await {
        Ok(closed) => Some(closed),
        Err(_) => {
            // 3. The grace period is over: what is still in flight is ended with a status (counted
            //    and logged by each engine), and the transports get a moment to deliver it.
            let cut = abort_in_flight(&state);
            tracing::warn!(
                grace_secs = config.shutdown_grace_secs,
                requests = cut,
                "the grace period ran out: requests still in flight were ended with `shutting_down`"
            );
            tokio::time::timeout(AFTER_ABORT, &mut servers).await.ok()
        }
    };
    let mut failed = false;
    match closed {
        Some(Ok((http, grpc, metrics))) => {
            failed |= server_ended("HTTP", http.map(|r| r.map_err(anyhow::Error::from)));
            failed |= server_ended("gRPC", grpc.map(|r| r.map_err(anyhow::Error::from)));
            if let Some(metrics) = metrics {
                failed |= server_ended("metrics", metrics.map(|r| r.map_err(anyhow::Error::from)));
            }
            if settled {
                tracing::info!("stopped: every request in flight was answered");
            } else {
                tracing::warn!("stopped: the grace period ran out before every request was answered");
            }
        }
        Some(Err(error)) => {
            tracing::error!(%error, "the servers' shutdown task failed");
            failed = true;
        }
        None => tracing::warn!("stopped: connections still open after the grace period were closed"),
    }
    log_final_counts(&state);
    if failed {
        bail!("a server task failed during shutdown (see the errors above)");
    }
    Ok(())
}

/// After the grace period ends the requests still in flight, how long the transports get to
/// deliver those statuses before the process exits anyway.
const AFTER_ABORT: Duration = Duration::from_secs(1);

/// How often the drain looks at the engines' queues and slots.
const SETTLE_POLL: Duration = Duration::from_millis(5);

/// How long the drain goes on refusing with a status after the last request in flight was
/// answered, until no call has arrived for this long: a client that just got its answer and
/// sends its next call then hears `shutting_down` instead of meeting a closing connection.
const QUIET_BEFORE_CLOSING: Duration = Duration::from_millis(100);

/// Waits until no model has a request queued or stepping (open sessions included) and no call
/// has been refused for [`QUIET_BEFORE_CLOSING`], or `bound`. Returns whether the requests in
/// flight all finished in time.
async fn in_flight_settled(state: &ServerState, bound: tokio::time::Instant) -> bool {
    loop {
        let in_flight: usize =
            state.registry().map(|r| r.models().map(|m| m.engine.in_flight()).sum()).unwrap_or(0);
        if in_flight == 0 && state.since_last_refusal() >= QUIET_BEFORE_CLOSING {
            return true;
        }
        if in_flight == 0 && tokio::time::Instant::now() >= bound {
            return true;
        }
        if tokio::time::Instant::now() >= bound {
            return false;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// The listener's connections until the transports close; then the listener is dropped at once,
/// so that new connections are refused (a clean, retryable connect error) instead of waiting in
/// the kernel's backlog for an accept that never comes and a reset when the process exits.
fn until_stopped<S>(
    incoming: S,
    stop: tokio::sync::watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = S::Item>
where
    S: futures_util::Stream + Send + 'static,
{
    futures_util::stream::unfold((Some(Box::pin(incoming)), stop), |(incoming, mut stop)| async move {
        let mut incoming = incoming?;
        let item = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => None,
            item = futures_util::StreamExt::next(&mut incoming) => item,
        };
        item.map(|item| (item, (Some(incoming), stop)))
    })
}

/// Ends every request still in flight with `shutting_down`; returns how many there were.
fn abort_in_flight(state: &ServerState) -> usize {
    let Ok(registry) = state.registry() else { return 0 };
    registry
        .models()
        .map(|model| {
            let in_flight = model.engine.in_flight();
            model.engine.abort_in_flight();
            in_flight
        })
        .sum()
}

/// Logs how a server task ended; true when it failed (an error, or a panic).
fn server_ended(name: &str, ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> bool {
    match ended {
        Ok(Ok(())) => false,
        Ok(Err(error)) => {
            tracing::error!(server = name, error = %format!("{error:#}"), "server failed");
            true
        }
        Err(error) => {
            tracing::error!(server = name, %error, "server task panicked or was cancelled");
            true
        }
    }
}

/// What each model's engine did since it was loaded: the last word on which requests were answered,
/// for comparing with what clients received (a lost answer shows as a difference).
fn log_final_counts(state: &ServerState) {
    let Ok(registry) = state.registry() else { return };
    for model in registry.models() {
        let stats = model.engine.stats();
        let exits = &stats.exits;
        tracing::info!(
            model = %model.name,
            version = model.version,
            answered = exits.confident + exits.max_timesteps + exits.deadline,
            cancelled = exits.cancelled,
            failed = stats.failed,
            refused = stats.refused,
            "final counts"
        );
    }
}

/// Services whose health is reported (the empty name is the whole server).
const GRPC_SERVICES: &[&str] = &["", "spikeserve.anytime.v1.Anytime", "inference.GRPCInferenceService"];

fn grpc_router(
    state: Arc<ServerState>,
    config: &ServeConfig,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) -> anyhow::Result<tonic::service::Routes> {
    // Both reflection versions: v1alpha is what older tools (evans, older Postman) still ask for.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1().context("building gRPC reflection")?;
    let reflection_alpha = reflection_builder().build_v1alpha().context("building gRPC reflection")?;
    let limit = config.max_body_bytes;
    let session_idle = Duration::from_secs_f64(config.session_idle_timeout_secs);
    let anytime =
        AnytimeServer::new(AnytimeService::new(state.clone()).with_session_idle_timeout(session_idle))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX);
    let kserve = GrpcInferenceServiceServer::new(KServeService::new(state))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    Ok(tonic::service::Routes::new(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(anytime)
        .add_service(kserve))
}
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
