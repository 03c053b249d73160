//! `spikeserve-tools step-bench`: what one timestep costs by batch size on a device, in this
//! process, three ways over the same graph:
//!
//! * **resident**: the server's step session, states in the device's own memory (only the frames
//!   go up and the logits come down);
//! * **host-bound**: the same session with its states in host memory, so ONNX Runtime copies every
//!   state to the device and back each step (what binding host buffers costs);
//! * **raw loop**: a plain batched ONNX Runtime loop as a user would write it: input tensors made
//!   each step, outputs allocated by the runtime and fed back as the next step's states.
//!
//! The three alternate in rounds so that each sees the same machine. On the CPU the first two run
//! the same memory (nothing crosses), which makes the row a check that the device code costs
//! nothing there.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context};
use clap::Args;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use serde::Serialize;
use spikeserve::backend::{Device, OrtRuntime, StateMemory, StepSession};
use spikeserve::contract::INPUT_NAME;
use spikeserve::model::ModelContract;

use crate::stats::percentiles;

#[derive(Args, Debug)]
pub struct StepBenchArgs {
    /// The model directory (its model.onnx).
    #[arg(long, value_name = "DIR")]
    pub model_dir: PathBuf,
    /// Where to step: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// The ONNX Runtime library (the GPU wheel's for --device cuda).
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "PATH")]
    pub ort_library: Option<PathBuf>,
    /// Batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128,256")]
    pub batches: Vec<usize>,
    /// Timed steps per batch size and way, over all rounds.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Rounds the steps are split into, the three ways alternating.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Threads ONNX Runtime may use within a step.
    #[arg(long, default_value_t = 1)]
    pub intra_threads: usize,
    /// Write the rows as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Row {
    batch: usize,
    resident_us: f64,
    host_bound_us: f64,
    raw_loop_us: f64,
    /// Host <-> device bytes per step with states on the device, and with them on the host.
    resident_bytes: usize,
    host_bound_bytes: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    device: String,
    intra_threads: usize,
    steps_per_point: usize,
    rows: Vec<Row>,
}

pub fn run(args: StepBenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.rounds > 0 && args.steps >= args.rounds,
        "--steps must be at least --rounds (and both positive)"
    );
    let largest = args.batches.iter().copied().max().context("--batches is empty")?;
    ensure!(args.batches.iter().all(|&b| b > 0), "batch sizes start at 1");
    let runtime = OrtRuntime::load(args.ort_library.as_deref())?;
    let graph = args.model_dir.join("model.onnx");
    let open = |memory: StateMemory| -> anyhow::Result<StepSession> {
        let opened = StepSession::open(&runtime, &graph, args.intra_threads, args.device)?;
        let contract = ModelContract::from_signature(&opened.signature)?;
        let mut session = StepSession::new(opened, contract)?.with_state_memory(memory);
        session.reserve_slots(largest)?;
        Ok(session)
    };
    let mut resident = open(StateMemory::Device)?;
    let mut host_bound = open(StateMemory::Host)?;
    let contract = resident.contract().clone();
    let mut raw = RawLoop::new(
        StepSession::open(&runtime, &graph, args.intra_threads, args.device)?.session,
        &contract,
    );

    println!(
        "model {} on {}, {} intra-op threads",
        args.model_dir.display(),
        args.device,
        args.intra_threads
    );
    println!("| batch | resident us/step | host-bound us/step | raw loop us/step | resident vs host-bound | resident vs raw loop | bytes host<->device per step (resident / host-bound) |");
    println!("|---|---|---|---|---|---|---|");
    let per_round = args.steps / args.rounds;
    let mut rows = Vec::new();
    for &batch in &args.batches {
        for session in [&mut resident, &mut host_bound] {
            for row in 0..batch {
                session.frame_mut(row)?.fill(0.5);
            }
        }
        // The first runs at a batch size pay for ONNX Runtime's set-up; not timed.
        for _ in 0..3 {
            resident.step(batch, batch)?;
            host_bound.step(batch, batch)?;
            raw.step(batch)?;
        }
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            for _ in 0..per_round {
                let started = Instant::now();
                resident.step(batch, batch)?;
                a.push(started.elapsed().as_secs_f64() * 1e6);
            }
            for _ in 0..per_round {
                let started = Instant::now();
                host_bound.step(batch, batch)?;
                b.push(started.elapsed().as_secs_f64() * 1e6);
            }
            for _ in 0..per_round {
                let started = Instant::now();
                raw.step(batch)?;
                c.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
        let row = Row {
            batch,
            resident_us: percentiles(a).p50,
            host_bound_us: percentiles(b).p50,
            raw_loop_us: percentiles(c).p50,
            resident_bytes: resident.transfer_bytes(batch),
            host_bound_bytes: host_bound.transfer_bytes(batch),
        };
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x | {} / {} |",
            row.batch,
            row.resident_us,
            row.host_bound_us,
            row.raw_loop_us,
            row.host_bound_us / row.resident_us,
            row.raw_loop_us / row.resident_us,
            row.resident_bytes,
            row.host_bound_bytes
        );
        rows.push(row);
    }
    if let Some(path) = &args.json {
        let report = Report {
            model: args.model_dir.display().to_string(),
            device: args.device.to_string(),
            intra_threads: args.intra_threads,
            steps_per_point: per_round * args.rounds,
            rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A batched loop over the plain ONNX Runtime API: new input tensors each step, the runtime's own
/// outputs (in host memory) fed back as the next step's states.
struct RawLoop {
    session: Session,
    frame_dims: Vec<i64>,
    frame_len: usize,
    state_inputs: Vec<String>,
    state_outputs: Vec<String>,
    state_dims: Vec<Vec<i64>>,
    /// The states of the last step, for the batch size they were made at.
    states: Option<(usize, Vec<DynValue>)>,
}

impl RawLoop {
    fn new(session: Session, contract: &ModelContract) -> Self {
        let dims = |shape: &[usize]| shape.iter().map(|&d| d as i64).collect::<Vec<_>>();
        Self {
            session,
            frame_dims: dims(&contract.frame_shape),
            frame_len: contract.frame_len(),
            state_inputs: contract.states.iter().map(|s| s.input.clone()).collect(),
            state_outputs: contract.states.iter().map(|s| s.output.clone()).collect(),
            state_dims: contract.states.iter().map(|s| dims(&s.shape)).collect(),
            states: None,
        }
    }

    fn step(&mut self, batch: usize) -> anyhow::Result<()> {
        let with_batch =
            |dims: &[i64]| std::iter::once(batch as i64).chain(dims.iter().copied()).collect::<Vec<_>>();
        let states = match self.states.take() {
            Some((b, states)) if b == batch => states,
            _ => self
                .state_dims
                .iter()
                .map(|dims| {
                    let shape = with_batch(dims);
                    let len = shape.iter().product::<i64>() as usize;
                    Ok(Tensor::from_array((shape, vec![0.0f32; len]))?.into_dyn())
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        let frames =
            Tensor::from_array((with_batch(&self.frame_dims), vec![0.5f32; batch * self.frame_len]))?;
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            vec![(Cow::Borrowed(INPUT_NAME), frames.into())];
        for (name, state) in self.state_inputs.iter().zip(states) {
            inputs.push((Cow::Borrowed(name.as_str()), state.into()));
        }
        let mut outputs = self.session.run(inputs)?;
        let next = self
            .state_outputs
            .iter()
            .map(|name| outputs.remove(name).with_context(|| format!("the step gave no {name}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        drop(outputs);
        self.states = Some((batch, next));
        Ok(())
    }
}
