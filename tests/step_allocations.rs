//! A step on the hot path allocates nothing on the Rust side and copies no state: frames, states
//! and outputs live in the session's preallocated slot buffers, viewed by tensor values made once
//! per batch size. Counted with a global allocator that tallies this thread's allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use common::{ort_library, shipped_models};
use spikeserve::backend::{Device, OrtRuntime, StepSession};
use spikeserve::model::ModelContract;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a thread-local cell.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// ONNX Runtime allows one environment per process, so the tests share it.
fn runtime() -> &'static OrtRuntime {
    static RUNTIME: std::sync::OnceLock<OrtRuntime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| OrtRuntime::load(Some(Path::new(&ort_library()))).expect("ONNX Runtime"))
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn a_warm_step_allocates_nothing_and_batched_rows_match_batch_one() {
    let runtime = runtime();
    let model = shipped_models().join("digits/model.onnx");
    let open = || {
        let opened = StepSession::open(runtime, &model, 1, Device::Cpu).expect("model");
        let contract = ModelContract::from_signature(&opened.signature).expect("contract");
        StepSession::new(opened, contract).expect("session")
    };
    let mut batched = open();
    batched.reserve_slots(4).expect("slots");
    let frame_len = batched.contract().frame_len();
    let frame = |row: usize| -> Vec<f32> {
        (0..frame_len).map(|i| ((i * 7 + row * 13) % 17) as f32 / 16.0).collect()
    };
    for row in 0..4 {
        batched.frame_mut(row).expect("row").copy_from_slice(&frame(row));
    }
    // Warm up both state parities at batch 4 (the views are made on first use).
    batched.step(4, 4).expect("step");
    batched.step(4, 4).expect("step");
    let before = allocations();
    for _ in 0..4 {
        batched.step(4, 4).expect("step");
    }
    assert_eq!(allocations() - before, 0, "a warm step allocated on the Rust side");

    // Rows rearranged between steps (the row-gather graph runs first) and a row left waiting (its
    // states carried over): no allocation either, once each shape of run has been seen.
    let rearranged = |session: &mut StepSession| {
        session.swap_rows(0, 3);
        session.step(4, 4).expect("step");
        session.swap_rows(0, 3);
        session.step(3, 4).expect("step");
    };
    rearranged(&mut batched);
    rearranged(&mut batched);
    let before = allocations();
    for _ in 0..4 {
        rearranged(&mut batched);
    }
    assert_eq!(allocations() - before, 0, "a warm rearranging step allocated on the Rust side");
    // Back to six plain steps of every row for the comparison below.
    let mut batched = open();
    batched.reserve_slots(4).expect("slots");
    for row in 0..4 {
        batched.frame_mut(row).expect("row").copy_from_slice(&frame(row));
    }
    for _ in 0..6 {
        batched.step(4, 4).expect("step");
    }

    // Six steps in a batch of four equal six steps of each row alone.
    for row in 0..4 {
        let mut alone = open();
        alone.reserve_slots(1).expect("slots");
        alone.frame_mut(0).expect("row").copy_from_slice(&frame(row));
        for _ in 0..6 {
            alone.step(1, 1).expect("step");
        }
        for (a, b) in alone.logits(0).iter().zip(batched.logits(row)) {
            assert!((a - b).abs() <= 1e-5, "row {row}: {a} alone, {b} batched");
        }
        assert_eq!(alone.logits(0).len(), batched.contract().num_classes);
    }
}

#[test]
fn a_batch_beyond_the_reserved_slots_is_an_error_not_a_crash() {
    let runtime = runtime();
    let model = shipped_models().join("digits/model.onnx");
    let opened = StepSession::open(runtime, &model, 1, Device::Cpu).expect("model");
    let contract = ModelContract::from_signature(&opened.signature).expect("contract");
    let mut session = StepSession::new(opened, contract).expect("session");
    session.reserve_slots(2).expect("slots");
    let error = session.step(3, 3).expect_err("3 rows do not fit 2 slots");
    assert!(error.to_string().contains("does not fit the 2 slots"), "{error}");
    assert!(session.frame_mut(2).is_err());
    assert!(session.step(0, 0).is_err());
}

/// Every exit policy's decision after a timestep (the cutoff, a threshold per timestep, the learned
/// stop score) reads the row's running prediction and allocates nothing, for a single model and an
/// ensemble, whatever the row's history.
#[test]
fn every_exit_policy_decides_without_allocating() {
    use spikeserve::engine::{CutoffPolicy, EnsemblePrediction};
    use spikeserve::model::ExitPolicies;

    for (model, members, classes, timesteps) in [("digits", 1, 10, 8), ("mnist-events", 3, 10, 10)] {
        let text =
            std::fs::read_to_string(shipped_models().join(model).join("exit-policies.json")).expect("file");
        let contract = ModelContract {
            contract_version: "1".into(),
            timesteps,
            num_classes: classes,
            labels: (0..classes).map(|c| c.to_string()).collect(),
            input_kind: spikeserve::model::InputKind::Static,
            frame_shape: vec![1],
            default_threshold: 0.9,
            accuracy_per_timestep: vec![0.5; timesteps],
            input_description: None,
            training: serde_json::Value::Null,
            states: Vec::new(),
            events: None,
            reports_synaptic_ops: false,
            members,
            default_max_variance: None,
            calibration: Vec::new(),
        };
        let policies = ExitPolicies::parse(&text, &contract).expect("the shipped file");
        let mut decided = 0;
        for policy in &policies.policies {
            for row in policy.point.iter().chain(&policy.guarantee) {
                let rule = CutoffPolicy {
                    rule: row.rule.clone(),
                    policy: policy.kind,
                    ..CutoffPolicy::cutoff(row.threshold, 1, timesteps)
                };
                let mut prediction = EnsemblePrediction::new(members, classes);
                let logits: Vec<Vec<f32>> = (0..timesteps)
                    .map(|t| (0..classes).map(|c| ((c * 7 + t * 3) % 11) as f32 * 0.4 - 1.0).collect())
                    .collect();
                let before = allocations();
                for step in &logits {
                    for member in 0..members {
                        prediction.add(member, step);
                    }
                    prediction.combine();
                    if rule.decide_row(&prediction).is_some() {
                        decided += 1;
                        break;
                    }
                }
                assert_eq!(allocations() - before, 0, "{model}: the {:?} policy allocated", policy.kind);
            }
        }
        assert!(decided > 0, "{model}: the rows decided");
    }
}
