//! The worker thread: owns a model's session and steps its requests.
//!
//! Runs on a plain OS thread so that inference never blocks the async runtime. Each request is
//! stepped timestep by timestep until its cutoff policy says stop.

use std::time::Instant;

use tokio::sync::mpsc;

use super::{AnytimeAnswer, AnytimeRequest, EngineError, Job, RunningPrediction};
use crate::backend::StepSession;

pub(super) fn run(mut session: StepSession, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.blocking_recv() {
        if job.reply.is_closed() {
            // The caller went away while it waited: don't spend a step on it.
            continue;
        }
        let answer = step_until_exit(&mut session, &job.request);
        if job.reply.send(answer).is_err() {
            tracing::debug!("caller left before its answer was ready");
        }
    }
    tracing::debug!("worker stopping: no more handles");
}

fn step_until_exit(
    session: &mut StepSession,
    request: &AnytimeRequest,
) -> Result<AnytimeAnswer, EngineError> {
    let started = Instant::now();
    let contract = session.contract();
    let frame_len = contract.frame_len();
    let mut states: Vec<Vec<f32>> = contract.states.iter().map(|s| vec![0.0; s.len()]).collect();
    let mut prediction = RunningPrediction::new(contract.num_classes);
    let mut logits = Vec::with_capacity(contract.num_classes);
    let mut confidences = request
        .record_confidences
        .then(|| Vec::with_capacity(request.policy.max_timesteps));
    loop {
        let t = prediction.timesteps();
        session.step(
            1,
            request.frames.frame(t, frame_len),
            &mut states,
            &mut logits,
        )?;
        let confidence = prediction.add(&logits);
        if let Some(c) = confidences.as_mut() {
            c.push(confidence);
        }
        if let Some(exit_reason) = request.policy.decide(t + 1, confidence) {
            return Ok(AnytimeAnswer {
                class_index: prediction.best_class(),
                confidence,
                probabilities: prediction.probabilities().to_vec(),
                timesteps: t + 1,
                exit_reason,
                confidences,
                compute_time: started.elapsed(),
            });
        }
    }
}
