//! The `spikeserve` binary: `serve` runs the server, `inspect` checks a model against the contract.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spikeserve::backend::OrtRuntime;
use spikeserve::config::{LogFormat, RuntimeArgs, ServeConfig};
use spikeserve::model::registry::{self, MODEL_FILE};
use spikeserve::server;

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(rt.block_on(server::run(config, server::shutdown_signal()))?)
}
