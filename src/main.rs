//! The `spikeserve` binary: `serve` runs the server, `inspect` checks a model against the contract.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spikeserve::backend::OrtRuntime;
use spikeserve::config::{LogArgs, RuntimeArgs, ServeConfig};
use spikeserve::model::registry::{self, MODEL_FILE};
use spikeserve::server;

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
    // Held to the end of `main`, so that the lines still queued are written before the process exits.
    let _log_writer = spikeserve::logging::init(cli.log.log_format, cli.log.log_queue_lines);
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
