//! The `spikeserve` binary: `serve` runs the server, `inspect` checks a model against the contract.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use spikeserve::api::http::{router, AppState};
use spikeserve::backend::OrtRuntime;
use spikeserve::config::{LogFormat, RuntimeArgs, ServeConfig};
use spikeserve::model::registry::{self, MODEL_FILE};
use spikeserve::model::ModelRegistry;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "spikeserve", version, about = "Anytime inference server for spiking neural networks")]
struct Cli {
    /// Log format.
    #[arg(long, env = "SPIKESERVE_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

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
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(config) => serve(config),
        Command::Inspect { path, runtime } => inspect(&path, &runtime),
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
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
    let runtime = OrtRuntime::load(config.runtime.ort_library.as_deref())?;
    config.device.check_available()?;
    let registry = ModelRegistry::load_dir(&runtime, &config.models, config.load_options())?;
    if registry.is_empty() {
        bail!(
            "no model could be loaded from {} ({} refused); see the errors above",
            config.models.display(),
            registry.refused().len()
        );
    }
    let state = AppState { registry: Arc::new(registry) };
    let app = router(state, config.max_body_bytes);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding the HTTP address {}", config.http_addr))?;
        let local = listener.local_addr().context("reading the bound address")?;
        tracing::info!(http_addr = %local, "listening");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("HTTP server failed")?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
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
    tracing::info!("shutting down: no new requests; finishing those in flight");
}
