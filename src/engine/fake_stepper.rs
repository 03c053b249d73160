//! A stepper with scripted logits, for the engine's tests: no ONNX Runtime, no model file.
//!
//! Each row keeps a state, the number of steps it has taken since it was zeroed, and moves and
//! swaps it as a real session moves its membrane states. A row's logits at a step are the
//! script's for that row's frame and state, so a request whose state was lost or mixed up in a
//! row move gets different logits than it would alone, and its answer shows it.

use std::sync::Arc;
use std::time::Duration;

use super::stepper::{StepError, Stepper};

/// What a row past the live ones holds after a step: a timestep no request reaches.
const LOST_STATE: usize = 1_000;

/// A row's logits from its frame and the timestep it is at (0-based: its steps so far).
pub(crate) type Script = Arc<dyn Fn(&[f32], usize) -> Vec<f32> + Send + Sync>;

pub(crate) struct FakeStepper {
    frame_len: usize,
    classes: usize,
    script: Script,
    frames: Vec<f32>,
    /// Per row: steps taken since the row was zeroed.
    states: Vec<usize>,
    logits: Vec<f32>,
    /// Each step's batch size, in order.
    pub(crate) batches: Vec<usize>,
    /// The step (0-based, counting every call) that fails.
    pub(crate) fail_at: Option<usize>,
    /// How long each step takes.
    pub(crate) delay: Duration,
}

impl FakeStepper {
    pub(crate) fn new(frame_len: usize, classes: usize, script: Script) -> Self {
        Self {
            frame_len,
            classes,
            script,
            frames: Vec::new(),
            states: Vec::new(),
            logits: Vec::new(),
            batches: Vec::new(),
            fail_at: None,
            delay: Duration::ZERO,
        }
    }
}

impl Stepper for FakeStepper {
    fn frame_len(&self) -> usize {
        self.frame_len
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn reserve_slots(&mut self, slots: usize) -> Result<(), StepError> {
        let slots = slots.max(1);
        self.frames = vec![0.0; slots * self.frame_len];
        self.states = vec![0; slots];
        self.logits = vec![0.0; slots * self.classes];
        Ok(())
    }

    fn frame_mut(&mut self, row: usize) -> Result<&mut [f32], StepError> {
        let slots = self.states.len();
        self.frames
            .get_mut(row * self.frame_len..(row + 1) * self.frame_len)
            .ok_or(StepError::Slots { batch: row + 1, slots })
    }

    fn step(&mut self, batch: usize, live: usize) -> Result<(), StepError> {
        if batch == 0 || batch > live || live > self.states.len() {
            return Err(StepError::Slots { batch, slots: self.states.len() });
        }
        let call = self.batches.len();
        self.batches.push(batch);
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        if self.fail_at == Some(call) {
            return Err(StepError::Run("scripted failure".into()));
        }
        for row in 0..batch {
            let frame = &self.frames[row * self.frame_len..(row + 1) * self.frame_len];
            let mut logits = (self.script)(frame, self.states[row]);
            logits.resize(self.classes, 0.0);
            self.logits[row * self.classes..(row + 1) * self.classes].copy_from_slice(&logits);
            self.states[row] += 1;
        }
        // Rows past `live` are free: a real session does not keep them, so neither does this one
        // (a scheduler that said too few rows were live loses a waiting row's state here too).
        for state in &mut self.states[live..] {
            *state = LOST_STATE;
        }
        Ok(())
    }

    fn logits(&self, row: usize) -> &[f32] {
        self.logits.get(row * self.classes..(row + 1) * self.classes).unwrap_or(&[])
    }

    fn synaptic_ops(&self, _row: usize) -> Option<f32> {
        None
    }

    fn zero_row(&mut self, row: usize) {
        self.states[row] = 0;
    }

    fn move_row(&mut self, from: usize, to: usize) {
        self.states[to] = self.states[from];
    }

    fn swap_rows(&mut self, a: usize, b: usize) {
        self.states.swap(a, b);
    }
}
