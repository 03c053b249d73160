//! The server put together: security (tokens, TLS), the HTTP and gRPC listeners, the models loaded
//! while health checks answer "not serving", and the drain on shutdown. `main.rs` only parses
//! arguments and calls [`run`]; a test may call it in-process with its own shutdown future.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;

use crate::api::auth::{self, Auth, AuthConfigError};
use crate::api::cors::{self, CorsConfigError};
use crate::api::grpc::anytime::AnytimeService;
use crate::api::grpc::anytime_pb::anytime_server::AnytimeServer;
use crate::api::grpc::inference_pb::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::api::grpc::{limits, FILE_DESCRIPTOR_SET};
use crate::api::http::{metrics_router, router};
use crate::api::kserve::grpc::KServeService;
use crate::api::openapi;
use crate::api::ServerState;
use crate::backend::{DeviceError, OrtRuntime, RuntimeError};
use crate::config::ServeConfig;
use crate::model::repository::RegistryError;
use crate::model::Repository;
use crate::tls::{TlsError, TlsIdentity, TlsListener};

/// Why the server could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Cors(#[from] CorsConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    // Causes marked `from`/`source` are printed by the caller's error chain, not repeated here.
    #[error("installing the metrics recorder")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    #[error("binding the {what} address {addr}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("configuring TLS for gRPC: {0}")]
    GrpcTls(tonic::transport::Error),
    #[error("building gRPC reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Load(#[from] RegistryError),
    #[error("loading the models: the loading task failed: {0}")]
    LoadTask(tokio::task::JoinError),
    #[error("no model could be loaded from {} ({refused} refused); see the errors above", dir.display())]
    NoModels { dir: PathBuf, refused: usize },
    #[error("the {0} server stopped while serving (see the error above)")]
    Stopped(&'static str),
    #[error("a server task failed during shutdown (see the errors above)")]
    Shutdown,
}

/// Serves until `shutdown` resolves (in the binary: SIGTERM or SIGINT), then drains: new requests
/// are refused, those in flight get `--shutdown-grace-secs`. Tokens and certificates are checked
/// first (a mistake there is cheaper to report than a model load), then ONNX Runtime and the device.
/// A server task that ends before `shutdown` (a panic, a failed listener) ends the server with an
/// error instead of leaving it half up.
pub async fn run(config: ServeConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let security = Security::load(&config)?;
    let runtime = OrtRuntime::load(config.runtime.ort_library.as_deref())?;
    config.device.check_usable(runtime.environment())?;
    run_servers(config, security, runtime, shutdown).await
}

/// Who may call (bearer tokens) and how the doors are reached (TLS), both optional.
struct Security {
    auth: Option<Auth>,
    tls: Option<TlsIdentity>,
    cors: Option<tower_http::cors::CorsLayer>,
}

impl Security {
    fn load(config: &ServeConfig) -> Result<Self, ServeError> {
        let auth = Auth::from_args(&config.auth)?;
        // Clap makes the two flags require each other; both or neither reach here.
        let tls = match (&config.tls.tls_cert, &config.tls.tls_key) {
            (Some(cert), Some(key)) => {
                crate::tls::install_crypto_provider();
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
        let cors = cors::layer(&config.cors_allow_origins)?;
        if cors.is_some() {
            tracing::info!(origins = ?config.cors_allow_origins, "CORS on: web pages on these origins may call the HTTP API");
        }
        Ok(Self { auth, tls, cors })
    }
}

/// Binds both ports, answers health checks ("not serving") while the models load, serves, and on
/// SIGTERM/SIGINT drains: new requests are refused, those in flight get `--shutdown-grace-secs`.
async fn run_servers(
    config: ServeConfig,
    security: Security,
    runtime: OrtRuntime,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let state = ServerState::new();
    state.set_metrics(crate::metrics::install()?);
    let upkeep = state.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.metrics_upkeep();
        }
    });
    let (http_listener, http_addr) = bind("HTTP", config.http_addr).await?;
    let (grpc_listener, grpc_addr) = bind("gRPC", config.grpc_addr).await?;
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
    let mut grpc_builder =
        tonic::transport::Server::builder().initial_connection_window_size(GRPC_CONNECTION_WINDOW);
    if let Some(tls) = &security.tls {
        grpc_builder = grpc_builder.tls_config(tls.grpc_config()).map_err(ServeError::GrpcTls)?;
    }
    let mut servers = vec![(
        "gRPC",
        spawn_server(
            grpc_builder
                .layer(tower::util::MapResponseLayer::new(limits::rewrite_too_large))
                .add_routes(grpc)
                .serve_with_incoming_shutdown(
                    until_stopped(grpc_incoming, stop_rx.clone()),
                    stopped(stop_rx.clone()),
                ),
        ),
    )];
    let app = router(state.clone(), config.max_body_bytes, config.metrics_addr.is_none(), openapi::routes());
    let app = auth::guard_http(app, security.auth.clone());
    // Outside the token check: a browser's preflight carries no credentials, and a refusal must
    // still reach the page with its CORS headers to be readable.
    let app = match &security.cors {
        Some(cors) => app.layer(cors.clone()),
        None => app,
    };
    if let Some(addr) = config.metrics_addr {
        let (listener, bound) = bind("metrics", addr).await?;
        // Plain HTTP even with TLS: scrapers usually reach it on a private network.
        tracing::info!(metrics_addr = %bound, "serving /metrics on its own address");
        let metrics_app = auth::guard_http(metrics_router(state.clone()), security.auth);
        let server = axum::serve(listener, metrics_app).with_graceful_shutdown(stopped(stop_rx.clone()));
        servers.push(("metrics", spawn_server(server.into_future())));
    }
    let http_server = match &security.tls {
        Some(tls) => {
            let listener = TlsListener::new(http_listener, tls.http_acceptor());
            spawn_server(axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx)).into_future())
        }
        None => {
            let listener = http_listener.tap_io(|tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
            });
            spawn_server(axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx)).into_future())
        }
    };
    servers.push(("HTTP", http_server));

    let models = config.models.clone();
    let options = config.load_options();
    let repository = tokio::task::spawn_blocking(move || Repository::open(runtime, &models, options))
        .await
        .map_err(ServeError::LoadTask)??;
    let registry = repository.current();
    if registry.is_empty() {
        return Err(ServeError::NoModels { dir: config.models.clone(), refused: registry.refused().len() });
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

    // Serve until told to stop; a server task that ends first (a panic, a listener that failed)
    // ends the server rather than leaving it half up.
    // Either way the drain below runs, so that the other doors' requests get their grace period
    // and the final counts are logged.
    let ended_early = first_to_end(shutdown, &mut servers).await.map(|(name, ended)| {
        server_ended(name, ended);
        // Its task is over: the shutdown below joins the others.
        servers.retain(|(other, _)| *other != name);
        name
    });
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
        let (names, tasks): (Vec<_>, Vec<_>) = servers.into_iter().unzip();
        names.into_iter().zip(futures_util::future::join_all(tasks).await).collect::<Vec<_>>()
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
        Some(Ok(ended)) => {
            for (name, ended) in ended {
                failed |= server_ended(name, ended);
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
    if let Some(name) = ended_early {
        return Err(ServeError::Stopped(name));
    }
    if failed {
        return Err(ServeError::Shutdown);
    }
    Ok(())
}

/// A listener's serving task: its error as text (the servers' error types differ).
type ServerTask = tokio::task::JoinHandle<Result<(), String>>;

fn spawn_server<E: std::fmt::Display>(
    serving: impl Future<Output = Result<(), E>> + Send + 'static,
) -> ServerTask {
    tokio::spawn(async move { serving.await.map_err(|e| e.to_string()) })
}

/// Waits for `shutdown`; `None` then. A server task that ends first (it failed, or panicked)
/// comes back with its name and how it ended.
async fn first_to_end(
    shutdown: impl Future<Output = ()>,
    servers: &mut [(&'static str, ServerTask)],
) -> Option<(&'static str, Result<Result<(), String>, tokio::task::JoinError>)> {
    let ended = futures_util::future::select_all(servers.iter_mut().map(|(_, task)| task));
    tokio::select! {
        () = shutdown => None,
        (ended, index, _) = ended => Some((servers[index].0, ended)),
    }
}

/// The gRPC connection's receive window (HTTP/2's default is 64 KiB, hyper's 1 MiB). The HTTP/2
/// library closes a connection (GOAWAY `ENHANCE_YOUR_CALM`, "too_many_data_frames") once the small
/// DATA frames it holds unread pass half of this window; under overload the server reads request
/// bodies late, flow control shrinks what the client may send, and the client's frames get small:
/// at 1 MiB, 3x overload dropped whole client connections, every request on them with it.
const GRPC_CONNECTION_WINDOW: u32 = 16 << 20;

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
fn server_ended(name: &str, ended: Result<Result<(), String>, tokio::task::JoinError>) -> bool {
    match ended {
        Ok(Ok(())) => false,
        Ok(Err(error)) => {
            tracing::error!(server = name, %error, "server failed");
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
) -> Result<tonic::service::Routes, ServeError> {
    // Both reflection versions: v1alpha is what older tools (evans, older Postman) still ask for.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1()?;
    let reflection_alpha = reflection_builder().build_v1alpha()?;
    let limit = config.max_body_bytes;
    let session_idle = Duration::from_secs_f64(config.session_idle_timeout_secs);
    let anytime = AnytimeServer::new(AnytimeService::new(state.clone(), session_idle))
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

/// Binds a listener and reads the address it got (port 0 picks a free one).
async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let fail = |source| ServeError::Bind { what, addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    Ok((listener, bound))
}

/// Resolves on SIGTERM or SIGINT: the binary's shutdown.
pub async fn shutdown_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_task_that_panics_before_shutdown_is_reported() {
        let mut servers = vec![
            ("HTTP", spawn_server(std::future::pending::<Result<(), String>>())),
            ("gRPC", spawn_server(async { panic!("a bug in a handler") as Result<(), String> })),
        ];
        let (name, ended) = first_to_end(std::future::pending(), &mut servers).await.expect("one ended");
        assert_eq!(name, "gRPC");
        assert!(matches!(&ended, Err(error) if error.is_panic()), "{ended:?}");
        assert!(server_ended(name, ended), "a panic counts as a failure");
    }

    #[tokio::test]
    async fn shutdown_first_leaves_the_servers_running() {
        let mut servers = vec![("HTTP", spawn_server(std::future::pending::<Result<(), String>>()))];
        assert!(first_to_end(std::future::ready(()), &mut servers).await.is_none());
        assert!(!servers[0].1.is_finished());
    }

    #[tokio::test]
    async fn a_server_that_fails_is_reported_with_its_error() {
        let mut servers = vec![("metrics", spawn_server(async { Err::<(), _>("address in use") }))];
        let (name, ended) = first_to_end(std::future::pending(), &mut servers).await.expect("it ended");
        assert_eq!(name, "metrics");
        assert_eq!(ended.expect("no panic"), Err("address in use".to_owned()));
        assert!(server_ended(name, Ok(Err("address in use".to_owned()))));
        assert!(!server_ended(name, Ok(Ok(()))));
    }
}
