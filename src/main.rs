//! The `spikeserve` binary: `serve` runs the server, `inspect` checks a model against the contract.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spikeserve::backend::OrtRuntime;
use spikeserve::config::{LogArgs, RuntimeArgs, ServeConfig};
use spikeserve::model::registry::{self, MODEL_FILE};
use spikeserve::server;
use spikeserve::telemetry::Tracing;

#[derive(Parser)]
#[command(name = "spikeserve", version, about = "Anytime inference server for spiking neural networks")]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
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
    match cli.command {
        Command::Serve(config) => serve(&cli.log, config),
        Command::Inspect { path, runtime } => {
            // Held to the end, so that the lines still queued are written before the process exits.
            let _log_writer = spikeserve::logging::init(cli.log.log_format, cli.log.log_queue_lines, None);
            inspect(&path, &runtime)
        }
    }
}

fn inspect(path: &std::path::Path, runtime: &RuntimeArgs) -> anyhow::Result<()> {
    let runtime = OrtRuntime::load(runtime.ort_library.as_deref())?;
    let file = if path.is_dir() { path.join(MODEL_FILE) } else { path.to_path_buf() };
    let contract = registry::inspect(&runtime, &file)?;
    println!("{}", serde_json::to_string_pretty(&contract)?);
    Ok(())
}

fn serve(log: &LogArgs, config: ServeConfig) -> anyhow::Result<()> {
    // The exporter starts before the subscriber, so that its layer is in it from the first line; a
    // bad endpoint is reported by `main`'s error, logging or not.
    let traces = Tracing::start(&config.telemetry)?;
    let _log_writer =
        spikeserve::logging::init(log.log_format, log.log_queue_lines, traces.as_ref().map(Tracing::layer));
    if let Some(endpoint) = &config.telemetry.otlp_endpoint {
        tracing::info!(
            endpoint,
            sample_ratio = config.telemetry.otlp_sample_ratio,
            "exporting traces over OTLP"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(server::run(config, server::shutdown_signal()));
    // After the last request: its spans are queued by now. Bounded, so that a dead collector does
    // not hold up the exit.
    if let Some(traces) = traces {
        traces.shutdown();
    }
    Ok(served?)
}
