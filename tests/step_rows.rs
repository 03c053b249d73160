//! How a step session keeps each row's membrane states while the scheduler rearranges its rows:
//! admissions zero a row, an exit moves the last row into the hole, ready rows are swapped to the
//! front, and rows whose next frame has not arrived (a gRPC session waiting) sit behind the stepped
//! rows. Each row must end where a session stepping that sample alone would (to 1e-5: the same
//! graph on the same machine, batched against alone).

mod common;

use std::path::Path;

use common::{ort_library, shipped_models};
use spikeserve::backend::{Device, OrtRuntime, StepSession};
use spikeserve::model::ModelContract;

/// ONNX Runtime allows one environment per process, so the tests share it.
fn runtime() -> &'static OrtRuntime {
    static RUNTIME: std::sync::OnceLock<OrtRuntime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| OrtRuntime::load(Some(Path::new(&ort_library()))).expect("ONNX Runtime"))
}

fn open(slots: usize) -> StepSession {
    let model = shipped_models().join("digits/model.onnx");
    let opened = StepSession::open(runtime(), &model, 1, Device::Cpu).expect("model");
    let contract = ModelContract::from_signature(&opened.signature).expect("contract");
    let mut session = StepSession::new(opened, contract).expect("session");
    session.reserve_slots(slots).expect("slots");
    session
}

/// Sample `sample`'s frame at timestep `t`: a deterministic pattern, different per sample and step.
fn frame(sample: usize, t: usize, len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7 + sample * 13 + t * 5) % 17) as f32 / 16.0).collect()
}

/// The logits of `sample` stepped alone for `steps` timesteps.
fn alone(sample: usize, steps: usize) -> Vec<f32> {
    let mut session = open(1);
    let len = session.contract().frame_len();
    for t in 0..steps {
        session.frame_mut(0).expect("row").copy_from_slice(&frame(sample, t, len));
        session.step(1, 1).expect("step");
    }
    session.logits(0).to_vec()
}

/// A batched session whose rows hold samples, each with the number of timesteps it has had.
struct Rows {
    session: StepSession,
    samples: Vec<(usize, usize)>,
}

impl Rows {
    fn new(slots: usize) -> Self {
        Self { session: open(slots), samples: Vec::new() }
    }

    fn admit(&mut self, sample: usize) {
        let row = self.samples.len();
        self.session.zero_row(row);
        self.samples.push((sample, 0));
    }

    /// The scheduler's exit: the last row moves into the leaving one's place.
    fn remove(&mut self, row: usize) {
        let last = self.samples.len() - 1;
        if row != last {
            self.session.move_row(last, row);
        }
        self.samples.swap_remove(row);
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.session.swap_rows(a, b);
        self.samples.swap(a, b);
    }

    /// Steps the first `batch` rows; the others wait with their states kept.
    fn step(&mut self, batch: usize) {
        let len = self.session.contract().frame_len();
        for row in 0..batch {
            let (sample, t) = self.samples[row];
            self.session.frame_mut(row).expect("row").copy_from_slice(&frame(sample, t, len));
        }
        self.session.step(batch, self.samples.len()).expect("step");
        for entry in &mut self.samples[..batch] {
            entry.1 += 1;
        }
    }

    fn check(&self, rows: std::ops::Range<usize>) {
        for row in rows {
            let (sample, steps) = self.samples[row];
            let expected = alone(sample, steps);
            for (a, b) in expected.iter().zip(self.session.logits(row)) {
                assert!(
                    (a - b).abs() <= 1e-5,
                    "row {row} (sample {sample}, {steps} steps): {a} alone, {b} here"
                );
            }
        }
    }
}

#[test]
fn a_row_that_waits_while_others_step_keeps_its_state() {
    let mut rows = Rows::new(4);
    (0..3).for_each(|sample| rows.admit(sample));
    rows.step(3);
    // Row 2 waits for its next frame (a session) while rows 0 and 1 step twice.
    rows.step(2);
    rows.step(2);
    // Its frame arrives: it is ready again, with the rest.
    rows.step(3);
    rows.check(0..3);
    // Now row 0 waits: the ready rows go first.
    rows.swap(0, 2);
    rows.step(2);
    rows.check(0..2);
    rows.swap(0, 2);
    rows.step(3);
    rows.check(0..3);
}

#[test]
fn admissions_exits_and_swaps_between_steps_keep_every_row() {
    let mut rows = Rows::new(6);
    (0..4).for_each(|sample| rows.admit(sample));
    rows.step(4);
    rows.step(4);
    // Row 1 leaves (the last row takes its place), a new sample joins, another leaves.
    rows.remove(1);
    rows.admit(10);
    rows.remove(0);
    rows.step(3);
    rows.check(0..3);
    rows.admit(11);
    rows.admit(12);
    rows.swap(0, 4);
    rows.step(5);
    rows.check(0..5);
    // Everything leaves but one, which is then alone in row 0.
    for row in (1..5).rev() {
        rows.remove(row);
    }
    rows.remove(0);
    rows.admit(13);
    rows.step(1);
    rows.check(0..1);
}
