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
