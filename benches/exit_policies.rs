//! What an exit policy adds to a step: one batched ONNX Runtime step of a shipped model followed, for
//! every row, by its running prediction and its exit decision, with each of the model's policies
//! (the plain cutoff, the per-timestep schedule, the learned stop score), at batch 1 and 64.
//!
//!     ORT_DYLIB_PATH=... cargo bench --bench exit_policies      (make bench-policies)
//!
//! The policies take turns within every round, so that all see the same machine state, and each is
//! printed as a ratio against the cutoff measured in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spikeserve::backend::{Device, OrtRuntime, StepSession};
use spikeserve::engine::{CutoffPolicy, EnsemblePrediction};
use spikeserve::model::{ExitPolicies, ModelContract};

const ROUNDS: usize = 40;
const STEPS_PER_ROUND: usize = 50;

fn main() -> anyhow::Result<()> {
    let library = std::env::var("ORT_DYLIB_PATH")
        .map_err(|_| anyhow::anyhow!("set ORT_DYLIB_PATH (make bench-policies does)"))?;
    let runtime = OrtRuntime::load(Some(Path::new(&library)))?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for model in ["digits", "mnist-events"] {
        let dir = root.join("models").join(model);
        let members: Vec<PathBuf> = if dir.join("ensemble.json").is_file() {
            let spec: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("ensemble.json"))?)?;
            spec["members"]
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("ensemble.json lists no members"))?
                .iter()
                .filter_map(|m| m.as_str().map(|m| dir.join(m)))
                .collect()
        } else {
            vec![dir.join("model.onnx")]
        };
        let mut sessions = Vec::new();
        for path in &members {
            let opened = StepSession::open(&runtime, path, 1, Device::Cpu)?;
            let contract = ModelContract::from_signature(&opened.signature)?;
            sessions.push(StepSession::new(opened, contract)?);
        }
        let mut contract = sessions[0].contract().clone();
        contract.members = sessions.len();
        let policies =
            ExitPolicies::parse(&std::fs::read_to_string(dir.join("exit-policies.json"))?, &contract)?;
        // The 0.5 pt row of each policy, running every timestep (min = max = T would stop the
        // decision from mattering; the rows decide, and a stopped row starts over).
        let rules: Vec<(String, CutoffPolicy)> = policies
            .policies
            .iter()
            .filter_map(|p| {
                let row = p.point.iter().rev().find(|r| r.max_accuracy_drop <= 0.5)?;
                Some((
                    p.kind.as_str().to_owned(),
                    CutoffPolicy {
                        rule: row.rule.clone(),
                        policy: p.kind,
                        ..CutoffPolicy::cutoff(row.threshold, 1, contract.timesteps)
                    },
                ))
            })
            .collect();
        println!(
            "{model}: {} member(s), T = {}, {} classes",
            sessions.len(),
            contract.timesteps,
            contract.num_classes
        );
        println!("| batch | policy | us per step (median) | against the cutoff |");
        println!("|---|---|---|---|");
        for batch in [1usize, 64] {
            for session in &mut sessions {
                session.reserve_slots(batch)?;
                let frame_len = session.contract().frame_len();
                for row in 0..batch {
                    let frame = session.frame_mut(row)?;
                    for (i, value) in frame.iter_mut().enumerate().take(frame_len) {
                        *value = ((i * 7 + row * 13) % 5) as f32 / 4.0;
                    }
                }
            }
            let mut predictions: Vec<Vec<EnsemblePrediction>> = rules
                .iter()
                .map(|_| {
                    (0..batch)
                        .map(|_| EnsemblePrediction::new(sessions.len(), contract.num_classes))
                        .collect()
                })
                .collect();
            let mut times: Vec<Vec<Duration>> = vec![Vec::new(); rules.len()];
            let mut stops = vec![0usize; rules.len()];
            let mut stopped = vec![false; batch];
            for _ in 0..ROUNDS {
                for (k, (_, rule)) in rules.iter().enumerate() {
                    for _ in 0..STEPS_PER_ROUND {
                        let started = Instant::now();
                        for session in &mut sessions {
                            session.step(batch, batch)?;
                        }
                        for (row, prediction) in predictions[k].iter_mut().enumerate() {
                            for (m, session) in sessions.iter().enumerate() {
                                prediction.add(m, session.logits(row));
                            }
                            prediction.combine();
                            stopped[row] = rule.decide_row(prediction).is_some();
                        }
                        times[k].push(started.elapsed());
                        // A stopped row starts over (outside the timing: a new request's state).
                        for (row, prediction) in predictions[k].iter_mut().enumerate() {
                            if stopped[row] || prediction.timesteps() == contract.timesteps {
                                stops[k] += usize::from(stopped[row]);
                                *prediction = EnsemblePrediction::new(sessions.len(), contract.num_classes);
                            }
                        }
                    }
                }
            }
            let medians: Vec<f64> = times.iter_mut().map(|t| median_micros(t)).collect();
            let cutoff =
                rules.iter().position(|(name, _)| name == "cutoff").map_or(medians[0], |i| medians[i]);
            for ((name, _), median) in rules.iter().zip(&medians) {
                println!("| {batch} | {name} | {median:.1} | {:.3}x |", median / cutoff);
            }
            for session in &mut sessions {
                for row in 0..batch {
                    session.zero_row(row);
                }
            }
            assert!(stops.iter().all(|&s| s > 0), "every policy stopped some rows");
        }
        println!();
    }
    Ok(())
}

fn median_micros(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e6
}
