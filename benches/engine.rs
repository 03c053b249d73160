//! Engine benchmark: the raw ONNX Runtime stepping loop (the floor) against the engine, one request
//! at a time and under 1..256 concurrent requests with continuous batching on and off.
//!
//!     make bench        (or: ORT_DYLIB_PATH=... cargo bench --bench engine)
//!
//! Everything runs in one process, on the shipped digits model and its held-out inputs, with the
//! model's default cutoff, and prints ratios against the floor measured in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use spikeserve::backend::{Device, OrtRuntime, StepSession};
use spikeserve::engine::{
    AnytimeRequest, CutoffPolicy, Engine, EngineConfig, RequestFrames, RunningPrediction,
};
use spikeserve::model::ModelContract;

const SEQUENTIAL_REQUESTS: usize = 2000;
const CONCURRENT_REQUESTS: usize = 6000;
const STEP_REPEATS: usize = 400;

fn main() -> anyhow::Result<()> {
    let library = std::env::var("ORT_DYLIB_PATH")
        .map_err(|_| anyhow::anyhow!("set ORT_DYLIB_PATH (make bench does)"))?;
    let runtime = OrtRuntime::load(Some(Path::new(&library)))?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/digits/model.onnx");
    let open = || -> anyhow::Result<StepSession> {
        let opened = StepSession::open(&runtime, &model, 1, Device::Cpu)?;
        let contract = ModelContract::from_signature(&opened.signature)?;
        Ok(StepSession::new(opened, contract)?)
    };
    let inputs = heldout_inputs(&root.join("models/digits/heldout.json"))?;
    let contract = open()?.contract().clone();
    let policy = CutoffPolicy::cutoff(contract.default_threshold, 1, contract.timesteps);
    println!(
        "machine: {} CPUs; model digits (T = {}), threshold {}",
        cpus(),
        contract.timesteps,
        policy.threshold
    );

    // 1 and 2: the floor (one request at a time straight through a session) and the engine with
    // one request at a time, interleaved in rounds so that both see the same machine state.
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let engine_with = |max_batch: usize| -> anyhow::Result<Engine> {
        let config = EngineConfig { max_batch, queue_capacity: 4096, ..EngineConfig::default() };
        Ok(Engine::start("digits", vec![open()?], config)?)
    };
    let request = |i: usize| AnytimeRequest {
        frames: RequestFrames::Static(inputs[i % inputs.len()].clone()),
        policy: policy.clone(),
        deadline: None,
        record_confidences: false,
        partials: None,
        priority: Default::default(),
        trace: None,
    };
    let mut session = open()?;
    let engine = engine_with(64)?;
    let mut floor = Vec::with_capacity(SEQUENTIAL_REQUESTS);
    let mut sequential = Vec::with_capacity(SEQUENTIAL_REQUESTS);

    session.reserve_slots(1)?;
    let mut floor_steps = 0;
    let rounds = 10;
    for round in 0..rounds {
        for i in round * SEQUENTIAL_REQUESTS / rounds..(round + 1) * SEQUENTIAL_REQUESTS / rounds {
            let started = Instant::now();
            session.zero_row(0);
            let mut prediction = RunningPrediction::new(contract.num_classes);
            loop {
                session.frame_mut(0)?.copy_from_slice(&inputs[i % inputs.len()]);
                session.step(1, 1)?;
                let confidence = prediction.add(session.logits(0));
                if policy.decide(prediction.timesteps(), confidence, 0.0).is_some() {
                    break;
                }
            }
            floor_steps += prediction.timesteps();
            floor.push(started.elapsed());
        }
        tokio.block_on(async {
            for i in round * SEQUENTIAL_REQUESTS / rounds..(round + 1) * SEQUENTIAL_REQUESTS / rounds {
                let r = request(i);
                let started = Instant::now();
                engine.infer(r).await?;
                sequential.push(started.elapsed());
            }
            anyhow::Ok(())
        })?;
    }
    drop(session);
    let floor_median = percentile(&mut floor, 0.5);
    println!(
        "floor (raw ort loop, batch 1): median {:.1} us per request, {:.3} timesteps on average",
        micros(floor_median),
        floor_steps as f64 / SEQUENTIAL_REQUESTS as f64
    );
    let engine_median = percentile(&mut sequential, 0.5);
    println!(
        "engine, one request at a time: median {:.1} us per request = {:.2}x the floor",
        micros(engine_median),
        engine_median.as_secs_f64() / floor_median.as_secs_f64()
    );

    // What one batched step costs by batch size: the ceiling on what batching can buy (the ratio of
    // B batch-1 steps to one batch-B step), whatever the scheduler does around it.
    println!();
    println!("| batch | us per step | us per sample | batch-1 steps per batched step |");
    println!("|---|---|---|---|");
    let mut session = open()?;
    session.reserve_slots(256)?;
    let mut batch_one = 0.0;
    for batch in [1usize, 8, 38, 64, 256] {
        for row in 0..batch {
            session.frame_mut(row)?.copy_from_slice(&inputs[row % inputs.len()]);
        }
        let mut times = Vec::with_capacity(STEP_REPEATS);
        for _ in 0..STEP_REPEATS {
            let started = Instant::now();
            session.step(batch, batch)?;
            times.push(started.elapsed());
        }
        let per_step = micros(percentile(&mut times, 0.5));
        if batch == 1 {
            batch_one = per_step;
        }
        println!(
            "| {batch} | {per_step:.1} | {:.2} | {:.1} |",
            per_step / batch as f64,
            batch_one * batch as f64 / per_step
        );
    }
    drop(session);

    // 3. Closed loop: N clients, each sending its next request when the last one is answered.
    println!();
    println!("| clients | batching | throughput req/s | p50 ms | p99 ms | mean batch | RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    for clients in [1usize, 8, 64, 256] {
        let mut off_throughput = 0.0;
        for (label, max_batch) in [("off (1 slot)", 1usize), ("on (256 slots)", 256)] {
            let engine = engine_with(max_batch)?;
            let (throughput, mut latencies) = tokio.block_on(closed_loop(&engine, clients, &request))?;
            let stats = engine.stats();
            let mean_batch = stats.stepped_samples as f64 / stats.steps.max(1) as f64;
            let ratio = if max_batch == 1 {
                off_throughput = throughput;
                String::new()
            } else {
                format!(" ({:.2}x off)", throughput / off_throughput)
            };
            println!(
                "| {clients} | {label} | {throughput:.0}{ratio} | {:.3} | {:.3} | {mean_batch:.1} | {:.0} |",
                millis(percentile(&mut latencies, 0.5)),
                millis(percentile(&mut latencies, 0.99)),
                rss_mib()
            );
        }
    }
    Ok(())
}

async fn closed_loop(
    engine: &Engine,
    clients: usize,
    request: &(dyn Fn(usize) -> AnytimeRequest + Sync),
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let per_client = CONCURRENT_REQUESTS.div_ceil(clients);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let engine = engine.clone();
        let requests: Vec<AnytimeRequest> =
            (0..per_client).map(|i| request(client * per_client + i)).collect();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(requests.len());
            for r in requests {
                let sent = Instant::now();
                engine.infer(r).await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(per_client * clients);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let throughput = latencies.len() as f64 / started.elapsed().as_secs_f64();
    Ok((throughput, latencies))
}

fn heldout_inputs(path: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let heldout: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let inputs =
        heldout["inputs"].as_array().ok_or_else(|| anyhow::anyhow!("no inputs in {}", path.display()))?;
    Ok(inputs.iter().map(flatten).collect())
}

fn flatten(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other.as_f64().unwrap_or(0.0) as f32],
    }
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples.get(index).copied().unwrap_or_default()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
