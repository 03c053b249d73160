//! The engine as a library: a request whose frames arrive over time, with a partial prediction
//! after every timestep, on the real ONNX Runtime and the shipped digits model.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{heldout_digits, ort_library, shipped_models};
use spikeserve::backend::{Device, OrtRuntime, StepSession};
use spikeserve::engine::{CutoffPolicy, Engine, EngineConfig, EngineError, ExitReason, Priority};
use spikeserve::model::ModelContract;

fn digits_engine() -> Engine {
    let runtime = OrtRuntime::load(Some(Path::new(&ort_library()))).expect("ONNX Runtime");
    let model = shipped_models().join("digits/model.onnx");
    let opened = StepSession::open(&runtime, &model, 1, Device::Cpu).expect("model");
    let contract = ModelContract::from_signature(&opened.signature).expect("contract");
    let config = EngineConfig { max_batch: 8, queue_capacity: 8, ..EngineConfig::default() };
    Engine::start("digits", vec![StepSession::new(opened, contract).expect("session")], config)
        .expect("engine")
}

fn frame(value: &serde_json::Value) -> Vec<f32> {
    fn flatten(v: &serde_json::Value, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
            other => out.push(other.as_f64().expect("number") as f32),
        }
    }
    let mut out = Vec::new();
    flatten(value, &mut out);
    out
}

// One test function: ONNX Runtime allows one environment per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_frames_step_as_they_arrive_and_a_stalled_stream_meets_its_deadline() {
    let engine = digits_engine();
    let (inputs, _) = heldout_digits();
    let all_steps = CutoffPolicy::cutoff(1.0, 1, 8);

    // Frames trickle in; a partial comes back after each one.
    let (partials, mut partial_rx) = tokio::sync::mpsc::unbounded_channel();
    let (sender, answer) =
        engine.open_stream(all_steps.clone(), None, Priority::DEFAULT, true, Some(partials)).expect("stream");
    let pixels = frame(&inputs[0]);
    for t in 1..=5 {
        sender.push(pixels.clone()).expect("frame");
        let partial = tokio::time::timeout(Duration::from_secs(5), partial_rx.recv())
            .await
            .expect("a partial per frame")
            .expect("partial");
        assert_eq!(partial.timestep, t);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sender.finish();
    let answer = answer.wait().await.expect("answer");
    assert_eq!((answer.timesteps, answer.exit_reason), (5, ExitReason::MaxTimesteps));
    assert_eq!(answer.confidences.as_ref().map(Vec::len), Some(5));

    // One frame, then silence: the budget ends it with the answer after that frame.
    let started = Instant::now();
    let (sender, answer) = engine
        .open_stream(
            all_steps.clone(),
            Some(started + Duration::from_millis(50)),
            Priority::DEFAULT,
            false,
            None,
        )
        .expect("stream");
    sender.push(pixels.clone()).expect("frame");
    let answer = answer.wait().await.expect("answer");
    assert_eq!((answer.timesteps, answer.exit_reason), (1, ExitReason::Deadline));
    assert!(started.elapsed() >= Duration::from_millis(50));

    // Ended before any frame.
    let (sender, answer) =
        engine.open_stream(all_steps.clone(), None, Priority::DEFAULT, false, None).expect("stream");
    drop(sender);
    assert!(matches!(answer.wait().await, Err(EngineError::NoFrames)));

    // The caller leaves while its stream waits: the slot is freed.
    let (sender, answer) =
        engine.open_stream(all_steps.clone(), None, Priority::DEFAULT, false, None).expect("stream");
    sender.push(pixels).expect("frame");
    drop(answer);
    for _ in 0..200 {
        if engine.stats().active_slots == 0 && engine.stats().exits.cancelled == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = engine.stats();
    assert_eq!((stats.active_slots, stats.exits.cancelled), (0, 1), "{stats:?}");
}
