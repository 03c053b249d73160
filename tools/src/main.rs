//! The `spikeserve-tools` binary: the load tools that talk to a running spikeserve (`infer`,
//! `bench`, `soak`) and the in-process step benchmark (`step-bench`), kept out of the server so
//! that its image carries no HTTP client.

// A tool reports failures as errors; panics are left to tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod bench;
mod client;
mod infer;
mod payload;
mod progress;
mod soak;
mod stats;
mod step_bench;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spikeserve::config::LogArgs;

use crate::bench::BenchArgs;
use crate::infer::InferArgs;
use crate::soak::SoakArgs;
use crate::step_bench::StepBenchArgs;

#[derive(Parser)]
#[command(name = "spikeserve-tools", version, about = "Load tools for a running spikeserve")]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send one request to a running server over gRPC and print each timestep's partial prediction.
    Infer(InferArgs),
    /// Load-test a running server (or, with --floor, step the model in this process).
    Bench(BenchArgs),
    /// Soak a running server: many clients mixing every door, giving up and disconnecting.
    Soak(SoakArgs),
    /// Time one timestep by batch size on a device, in this process: states resident on the
    /// device, bound in host memory, and a plain ONNX Runtime loop.
    StepBench(StepBenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Held to the end of `main`, so that the lines still queued are written before the process exits.
    let _log_writer = spikeserve::logging::init(cli.log.log_format, cli.log.log_queue_lines, None);
    match cli.command {
        // One request: a single thread is enough.
        Command::Infer(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(infer::run(args)),
        Command::Bench(args) => multi_thread()?.block_on(bench::run(args)),
        Command::Soak(args) => multi_thread()?.block_on(soak::run(args)),
        Command::StepBench(args) => step_bench::run(args),
    }
}

fn multi_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}
