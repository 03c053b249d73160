//! `bench --floor`: the model stepped at batch 1 in this process (a raw ONNX Runtime loop through
//! the engine's step session and cutoff rule), the floor a server's latency is set against.

use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::Value;
use spikeserve::backend::{Device, OrtRuntime, StepSession};
use spikeserve::engine::{CutoffPolicy, RequestFrames, RunningPrediction};
use spikeserve::input::events::Event;
use spikeserve::input::{decode_json_events, decode_json_tensor, into_frames, EventBinning};
use spikeserve::model::ModelContract;

use super::{summarize, BenchArgs, Report, Sample};
use crate::progress;

/// The floor: the model stepped at batch 1 in this process, with the same cutoff rule.
pub(super) fn floor(args: &BenchArgs) -> anyhow::Result<Report> {
    let dir = args.model_dir.as_ref().context("--floor needs --model-dir")?;
    let runtime = OrtRuntime::load(args.ort_library.as_deref())?;
    let opened = StepSession::open(&runtime, &dir.join("model.onnx"), 1, Device::Cpu)?;
    let contract = ModelContract::from_signature(&opened.signature)?;
    let mut session = StepSession::new(opened, contract.clone())?;
    session.reserve_slots(1)?;
    let text = std::fs::read_to_string(&args.inputs)?;
    let file: Value = serde_json::from_str(&text)?;
    // Tensors become frames here; raw events are binned inside the timed loop, as the server bins
    // each request's events, so that both sides do the same work per request.
    let mut frames = Vec::new();
    if let Some(inputs) = file.get("inputs").and_then(Value::as_array) {
        for input in inputs {
            frames.push(FloorInput::Frames(into_frames(decode_json_tensor(input, None)?, &contract)?));
        }
    } else if let (Some(samples), Some(binning)) =
        (file.get("events").and_then(Value::as_array), contract.events)
    {
        for sample in samples {
            frames.push(FloorInput::Events(decode_json_events(sample)?, binning));
        }
    }
    if frames.is_empty() {
        bail!("no inputs the model takes in {}", args.inputs.display());
    }
    let policy =
        CutoffPolicy::cutoff(args.threshold.unwrap_or(contract.default_threshold), 1, contract.timesteps);
    let frame_len = contract.frame_len();
    let mut run_one = |input: &FloorInput| -> anyhow::Result<(u64, &'static str)> {
        let binned;
        let request = match input {
            FloorInput::Frames(frames) => frames,
            FloorInput::Events(events, binning) => {
                binned = RequestFrames::Sequence { data: binning.bin(events)?, count: binning.bins };
                &binned
            }
        };
        session.zero_row(0);
        let mut prediction = RunningPrediction::new(contract.num_classes);
        loop {
            let t = prediction.timesteps();
            let frame: &[f32] = match request {
                RequestFrames::Static(data) => data,
                RequestFrames::Sequence { data, .. } => &data[t * frame_len..(t + 1) * frame_len],
                RequestFrames::Stream(_) => bail!("streams are not benchmarked"),
            };
            session.frame_mut(0)?.copy_from_slice(frame);
            session.step(1, 1)?;
            let confidence = prediction.add(session.logits(0));
            if let Some(reason) = policy.decide(prediction.timesteps(), confidence, 0.0) {
                return Ok((prediction.timesteps() as u64, reason.as_str()));
            }
        }
    };
    for i in 0..args.warmup {
        run_one(&frames[i % frames.len()])?;
    }
    let bar = progress::bar(args.requests, args.no_progress);
    let mut samples = Vec::with_capacity(args.requests);
    let started = Instant::now();
    for i in 0..args.requests {
        let begun = Instant::now();
        let (t, reason) = run_one(&frames[i % frames.len()])?;
        samples.push(Sample {
            latency: begun.elapsed(),
            first_partial: None,
            outcome: Ok((t, reason.to_owned())),
            class: 0,
        });
        bar.inc(1);
    }
    let duration = started.elapsed();
    bar.finish_and_clear();
    Ok(summarize(args, "floor", &samples, duration))
}

/// One held-out sample for the floor: frames ready to step, or raw events to bin first.
enum FloorInput {
    Frames(RequestFrames),
    Events(Vec<Event>, EventBinning),
}
