//! One ONNX Runtime session that runs a single timestep of a step model, for a batch of samples,
//! over slot-indexed buffers it owns.
//!
//! The session is not shared: the engine owns it on a dedicated thread, because a run blocks.
//!
//! Where the buffers live: the membrane states in memory ONNX Runtime allocated for the session's
//! device (GPU memory under `--device cuda:N`, host memory on the CPU), the frames going in and the
//! logits and synaptic operations coming out in host memory. So per step only the frames go up and
//! the outputs come down; the states never cross. The CPU runs this same code with host memory.
//!
//! Why the raw `Run` call: a batch of `b` rows reads the first `b` rows of preallocated buffers and
//! writes its outputs straight into preallocated buffers too (ONNX Runtime fills an output value
//! it is given instead of allocating one). The tensor values that view those rows are made once
//! per batch size and reused, so a step allocates nothing: the new membrane states land in the
//! second of two state sets, which then becomes the current one.
//!
//! Rows are rearranged lazily. The scheduler zeroes a row for an admission, moves the last row into
//! an exit's place and swaps ready rows to the front; the session only records where each row's
//! state now is (`source`). Before the next step, if anything moved, one run of the row-gather
//! graph (`row_gather`) copies every live row into place in the other state set, on the device.
//! Each set keeps one row past the slots at zero: a zeroed row gathers from it.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::path::Path;

use ort::environment::Environment;
use ort::memory::{Allocator, MemoryInfo};
use ort::session::Session;
use ort::value::{Shape, Tensor, TensorElementType, TensorRefMut, ValueType};
use ort::AsPointer;

use super::device::{Device, DeviceError};
use super::row_gather;
use super::runtime::OrtRuntime;
use crate::contract::{
    ElementType, ModelContract, ModelSignature, TensorSpec, INPUT_NAME, LOGITS_NAME, SYNAPTIC_OPS_NAME,
};
use crate::engine::Stepper;

// The error type is the engine's: a failed step reaches every request of its batch as it is.
pub use crate::engine::StepError;

/// A device that cannot be used fails the session's opening with the device's own message.
impl From<DeviceError> for StepError {
    fn from(error: DeviceError) -> Self {
        Self::Device(error.to_string())
    }
}

/// A step graph opened on its device, with its signature for the caller to validate; what
/// [`StepSession::new`] needs to open the row-gather graph beside it.
pub struct OpenedStep {
    pub session: Session,
    pub signature: ModelSignature,
    environment: Environment,
    device: Device,
    intra_threads: usize,
}

/// Where a session keeps its slot states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateMemory {
    /// On the device the model runs on: what the server does.
    #[default]
    Device,
    /// In host memory whatever the device, so that ONNX Runtime copies every state up and down
    /// each step: only for measuring what device-resident state saves.
    Host,
}

pub struct StepSession {
    /// Dropped before the sessions: the tensor values it holds view memory of the session's
    /// device allocator, and ORT's own objects are released in a tidy order this way.
    io: Option<SlotIo>,
    gather: Graph,
    step: Graph,
    contract: ModelContract,
    device: Device,
    state_memory: StateMemory,
}

/// A session and the C strings of its input and output names, in binding order.
struct Graph {
    session: Session,
    _names: Vec<CString>,
    inputs: Vec<*const c_char>,
    outputs: Vec<*const c_char>,
}

// SAFETY: the raw pointers point into the `CString`s owned by the same value, which move with it.
unsafe impl Send for Graph {}

impl Graph {
    fn new(session: Session, inputs: Vec<String>, outputs: Vec<String>) -> Result<Self, StepError> {
        let cstring = |name: String| CString::new(name.clone()).map_err(|_| StepError::Name(name));
        let inputs = inputs.into_iter().map(cstring).collect::<Result<Vec<_>, _>>()?;
        let outputs = outputs.into_iter().map(cstring).collect::<Result<Vec<_>, _>>()?;
        let input_ptrs = inputs.iter().map(|n| n.as_ptr()).collect();
        let output_ptrs = outputs.iter().map(|n| n.as_ptr()).collect();
        Ok(Self {
            session,
            _names: inputs.into_iter().chain(outputs).collect(),
            inputs: input_ptrs,
            outputs: output_ptrs,
        })
    }

    /// Runs the graph on `binding`'s values.
    fn run(&mut self, binding: &mut Binding) -> Result<(), StepError> {
        let session = self.session.ptr_mut();
        // SAFETY: every pointer names a live value: the names are owned by `self`, the tensor
        // values by `binding`, and the memory they view by the session's `SlotIo` (or the caller's
        // buffers), never reallocated while the values exist; the lengths are those of the arrays.
        let status = unsafe {
            (ort::api().Run)(
                session,
                std::ptr::null(),
                self.inputs.as_ptr(),
                binding.inputs.as_ptr(),
                binding.inputs.len(),
                self.outputs.as_ptr(),
                self.outputs.len(),
                binding.outputs.as_mut_ptr(),
            )
        };
        check(status)
    }
}

impl StepSession {
    /// Opens the graph at `path` on `device` and reads its signature; the caller validates it.
    pub fn open(
        runtime: &OrtRuntime,
        path: &Path,
        intra_threads: usize,
        device: Device,
    ) -> Result<OpenedStep, StepError> {
        let open_error = |message: String| StepError::Open { path: path.display().to_string(), message };
        let session = session_on(runtime.environment(), device, intra_threads)
            .and_then(|mut builder| builder.commit_from_file(path).map_err(|e| e.to_string()))
            .map_err(open_error)?;
        let signature = signature_of(&session)?;
        Ok(OpenedStep {
            session,
            signature,
            environment: runtime.environment().clone(),
            device,
            intra_threads,
        })
    }

    /// A session over the opened graph, with its row-gather graph on the same device; one slot
    /// until [`StepSession::reserve_slots`] makes room for more.
    pub fn new(opened: OpenedStep, contract: ModelContract) -> Result<Self, StepError> {
        let OpenedStep { session, environment, device, intra_threads, .. } = opened;
        let row_shapes: Vec<Vec<usize>> = contract.states.iter().map(|s| s.shape.clone()).collect();
        let gather_error = |message: String| StepError::Open { path: "(row-gather graph)".into(), message };
        let gather = session_on(&environment, device, intra_threads)
            .and_then(|mut builder| {
                builder.commit_from_memory(&row_gather::gather_graph(&row_shapes)).map_err(|e| e.to_string())
            })
            .map_err(gather_error)?;
        let gather = Graph::new(
            gather,
            std::iter::once(row_gather::ROWS_INPUT.to_owned())
                .chain((0..row_shapes.len()).map(row_gather::source_name))
                .collect(),
            (0..row_shapes.len()).map(row_gather::gathered_name).collect(),
        )?;
        let mut inputs = vec![INPUT_NAME.to_owned()];
        let mut outputs = vec![LOGITS_NAME.to_owned()];
        if contract.reports_synaptic_ops {
            outputs.push(SYNAPTIC_OPS_NAME.to_owned());
        }
        for spec in &contract.states {
            inputs.push(spec.input.clone());
            outputs.push(spec.output.clone());
        }
        let step = Graph::new(session, inputs, outputs)?;
        Ok(Self { io: None, gather, step, contract, device, state_memory: StateMemory::Device })
    }

    /// Keeps the slot states in `memory` from the next [`StepSession::reserve_slots`] on.
    pub fn with_state_memory(mut self, memory: StateMemory) -> Self {
        self.state_memory = memory;
        self.io = None;
        self
    }

    /// Bytes that cross between host and device in one step of `batch` rows: the frames up, the
    /// logits (and synaptic operations) down, and with host-bound states every state both ways.
    /// Zero on the CPU, where nothing crosses.
    pub fn transfer_bytes(&self, batch: usize) -> usize {
        if self.device == Device::Cpu {
            return 0;
        }
        let floats = |n: usize| n * batch * std::mem::size_of::<f32>();
        let outputs = self.contract.num_classes + usize::from(self.contract.reports_synaptic_ops);
        let io = floats(self.contract.frame_len() + outputs);
        match self.state_memory {
            StateMemory::Device => io,
            StateMemory::Host => io + 2 * floats(self.contract.states.iter().map(|s| s.len()).sum()),
        }
    }

    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// Allocates the slot-indexed buffers for batches of up to `slots` rows (all zero). Call once,
    /// before the first step; calling it again starts over with empty buffers.
    pub fn reserve_slots(&mut self, slots: usize) -> Result<(), StepError> {
        self.io = None;
        let memory = match self.state_memory {
            StateMemory::Device => self.device.memory_info()?,
            StateMemory::Host => Device::Cpu.memory_info()?,
        };
        let io = SlotIo::new(&self.step.session, &self.contract, memory, slots.max(1))?;
        self.io = Some(io);
        let io = self.io.as_mut().ok_or(StepError::Slots { batch: 1, slots: 0 })?;
        for set in 0..2 {
            io.zero_spare_row(&mut self.gather, set)?;
        }
        Ok(())
    }

    pub fn slots(&self) -> usize {
        self.io.as_ref().map_or(0, |io| io.slots)
    }

    fn io(&mut self) -> Result<&mut SlotIo, StepError> {
        if self.io.is_none() {
            self.reserve_slots(1)?;
        }
        self.io.as_mut().ok_or(StepError::Slots { batch: 1, slots: 0 })
    }

    /// Row `row` of the next step's input frames, to be filled by the caller.
    pub fn frame_mut(&mut self, row: usize) -> Result<&mut [f32], StepError> {
        let io = self.io()?;
        let len = io.frame_len;
        io.frames
            .get_mut(row * len..(row + 1) * len)
            .ok_or(StepError::Slots { batch: row + 1, slots: io.slots })
    }

    /// Row `row`'s logits from the last step.
    pub fn logits(&self, row: usize) -> &[f32] {
        let Some(io) = &self.io else { return &[] };
        let classes = self.contract.num_classes;
        io.logits.get(row * classes..(row + 1) * classes).unwrap_or(&[])
    }

    /// Row `row`'s synaptic operations in the last step, when the model reports them.
    pub fn synaptic_ops(&self, row: usize) -> Option<f32> {
        let io = self.io.as_ref()?;
        if self.contract.reports_synaptic_ops {
            io.synaptic_ops.get(row).copied()
        } else {
            None
        }
    }

    /// Resets row `row`'s membrane states (a request admitted into that slot starts from zero).
    pub fn zero_row(&mut self, row: usize) {
        if let Some(io) = &mut self.io {
            let zero = io.zero_source();
            if let Some(source) = io.source.get_mut(row) {
                *source = zero;
            }
        }
    }

    /// Copies row `from`'s states over row `to`'s.
    pub fn move_row(&mut self, from: usize, to: usize) {
        if let Some(io) = &mut self.io {
            if let (Some(&source), true) = (io.source.get(from), to < io.source.len()) {
                io.source[to] = source;
            }
        }
    }

    /// Swaps the states of rows `a < b`.
    pub fn swap_rows(&mut self, a: usize, b: usize) {
        if let Some(io) = &mut self.io {
            if a < io.source.len() && b < io.source.len() {
                io.source.swap(a, b);
            }
        }
    }

    /// Runs one timestep for rows `0..batch`: their frames and states in, their logits, synaptic
    /// operations and new states out. Rows `batch..live` wait (their next frame has not come):
    /// their states are kept.
    pub fn step(&mut self, batch: usize, live: usize) -> Result<(), StepError> {
        if self.io.is_none() {
            self.reserve_slots(1)?;
        }
        let Self { io, gather, step, .. } = self;
        let Some(io) = io.as_mut() else { return Err(StepError::Slots { batch, slots: 0 }) };
        if batch == 0 || batch > io.slots || live > io.slots {
            return Err(StepError::Slots { batch: batch.max(live), slots: io.slots });
        }
        let live = live.max(batch);
        if io.rearranged(live) {
            io.gather_rows(gather, live, Rows::AsRecorded)?;
        }
        if live > batch {
            // The step writes the other set: the waiting rows go there first, unchanged.
            io.gather_rows(gather, live, Rows::InPlace)?;
        }
        let current = io.current;
        io.prepare_step_binding(batch, current)?;
        let binding = io.step_bindings[batch - 1][current]
            .as_mut()
            .ok_or(StepError::Slots { batch, slots: io.slots })?;
        step.run(binding)?;
        io.current = 1 - current;
        Ok(())
    }
}

/// Opens a session builder on `device`, with the engine's threading.
fn session_on(
    environment: &Environment,
    device: Device,
    intra_threads: usize,
) -> Result<ort::session::builder::SessionBuilder, String> {
    let builder = Session::builder(environment)
        .map_err(|e| e.to_string())?
        .with_intra_threads(intra_threads)
        .map_err(|e| e.to_string())?
        .with_inter_threads(1)
        .map_err(|e| e.to_string())?;
    device.configure(builder).map_err(|e| e.to_string())
}

/// The scheduler's view of the session: the inherent methods above, called directly (no dynamic
/// dispatch on the step path).
impl Stepper for StepSession {
    fn frame_len(&self) -> usize {
        self.contract.frame_len()
    }

    fn classes(&self) -> usize {
        self.contract.num_classes
    }

    fn reserve_slots(&mut self, slots: usize) -> Result<(), StepError> {
        StepSession::reserve_slots(self, slots)
    }

    fn frame_mut(&mut self, row: usize) -> Result<&mut [f32], StepError> {
        StepSession::frame_mut(self, row)
    }

    fn step(&mut self, batch: usize, live: usize) -> Result<(), StepError> {
        StepSession::step(self, batch, live)
    }

    fn logits(&self, row: usize) -> &[f32] {
        StepSession::logits(self, row)
    }

    fn synaptic_ops(&self, row: usize) -> Option<f32> {
        StepSession::synaptic_ops(self, row)
    }

    fn zero_row(&mut self, row: usize) {
        StepSession::zero_row(self, row);
    }

    fn move_row(&mut self, from: usize, to: usize) {
        StepSession::move_row(self, from, to);
    }

    fn swap_rows(&mut self, a: usize, b: usize) {
        StepSession::swap_rows(self, a, b);
    }
}

/// Which rows a gather takes: the rearrangement recorded since the last step, or each row from
/// itself (carrying the rows to the other set).
#[derive(Clone, Copy)]
enum Rows {
    AsRecorded,
    InPlace,
}

/// The preallocated buffers of one session and the tensor values that view their first rows.
struct SlotIo {
    /// Declared first so that the views are dropped before the memory they point into.
    step_bindings: Vec<[Option<Binding>; 2]>,
    /// The gather's values for `n` rows out of state set `parity` into the other set.
    gather_bindings: Vec<[Option<Binding>; 2]>,
    slots: usize,
    frame_len: usize,
    frames: Vec<f32>,
    logits: Vec<f32>,
    synaptic_ops: Vec<f32>,
    /// The gather's index input (host memory; ONNX Runtime takes it to the device).
    row_index: Vec<i64>,
    /// Where row `r`'s state is in the current set: a row index, or `slots` (the zero row).
    source: Vec<u32>,
    /// Two sets of state buffers on the device, `slots + 1` rows each (the last stays zero): a
    /// step reads set `current` and writes the other.
    states: [Vec<Tensor<f32>>; 2],
    current: usize,
    frame_shape: Vec<usize>,
    state_shapes: Vec<Vec<usize>>,
    classes: usize,
    reports_synaptic_ops: bool,
    memory: MemoryInfo<'static>,
    /// Dropped last: the state buffers are its allocations.
    _allocator: Allocator,
}

// SAFETY: the tensor values hold raw pointers into memory owned by this value (host buffers and
// device allocations), which moves with it; nothing else holds them.
unsafe impl Send for SlotIo {}

/// The tensor values of one run, and their raw pointers in binding order.
struct Binding {
    _values: Vec<TensorRefMut<'static, f32>>,
    _indices: Option<TensorRefMut<'static, i64>>,
    inputs: Vec<*const ort::sys::OrtValue>,
    outputs: Vec<*mut ort::sys::OrtValue>,
}

impl Binding {
    /// The run's inputs are `indices` (when given) and then the first `inputs` of `values`; its
    /// outputs the rest of `values`.
    fn new(
        indices: Option<TensorRefMut<'static, i64>>,
        values: Vec<TensorRefMut<'static, f32>>,
        inputs: usize,
    ) -> Self {
        Self {
            inputs: indices.iter().map(|i| i.ptr()).chain(values[..inputs].iter().map(|v| v.ptr())).collect(),
            outputs: values[inputs..].iter().map(|v| v.ptr().cast_mut()).collect(),
            _values: values,
            _indices: indices,
        }
    }
}

impl SlotIo {
    fn new(
        session: &Session,
        contract: &ModelContract,
        memory: MemoryInfo<'static>,
        slots: usize,
    ) -> Result<Self, StepError> {
        let allocator = Allocator::new(session, memory.clone()).map_err(|e| StepError::Run(e.to_string()))?;
        let state_set = || {
            contract
                .states
                .iter()
                .map(|spec| {
                    let dims: Vec<i64> = std::iter::once(slots + 1)
                        .chain(spec.shape.iter().copied())
                        .map(|d| d as i64)
                        .collect();
                    Tensor::<f32>::new(&allocator, dims).map_err(|e| StepError::Run(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let states = [state_set()?, state_set()?];
        Ok(Self {
            step_bindings: (0..slots).map(|_| [None, None]).collect(),
            gather_bindings: (0..slots).map(|_| [None, None]).collect(),
            slots,
            frame_len: contract.frame_len(),
            frames: vec![0.0; contract.frame_len() * slots],
            logits: vec![0.0; contract.num_classes * slots],
            synaptic_ops: vec![0.0; slots],
            row_index: vec![0; slots],
            // Every row starts at zero (the allocations are not initialised on a GPU).
            source: vec![slots as u32; slots],
            states,
            current: 0,
            frame_shape: contract.frame_shape.clone(),
            state_shapes: contract.states.iter().map(|s| s.shape.clone()).collect(),
            classes: contract.num_classes,
            reports_synaptic_ops: contract.reports_synaptic_ops,
            memory,
            _allocator: allocator,
        })
    }

    fn zero_source(&self) -> u32 {
        self.slots as u32
    }

    /// Whether any of rows `0..live` was zeroed, moved or swapped since the last gather.
    fn rearranged(&self, live: usize) -> bool {
        self.source[..live].iter().enumerate().any(|(row, &source)| source as usize != row)
    }

    /// Writes rows `0..rows` of the other set from the current one, as `which` says; after a
    /// recorded rearrangement the other set becomes current.
    fn gather_rows(&mut self, gather: &mut Graph, rows: usize, which: Rows) -> Result<(), StepError> {
        for (row, index) in self.row_index[..rows].iter_mut().enumerate() {
            *index = match which {
                Rows::AsRecorded => i64::from(self.source[row]),
                Rows::InPlace => row as i64,
            };
        }
        let current = self.current;
        if self.gather_bindings[rows - 1][current].is_none() {
            let binding = self.make_gather_binding(rows, current)?;
            self.gather_bindings[rows - 1][current] = Some(binding);
        }
        let binding = self.gather_bindings[rows - 1][current]
            .as_mut()
            .ok_or(StepError::Slots { batch: rows, slots: self.slots })?;
        gather.run(binding)?;
        // A carry leaves the current set as it was: the step that follows reads it and writes
        // its rows over the copy in the other set, which then becomes current.
        if let Rows::AsRecorded = which {
            // Everything is in place in the other set now.
            for (row, source) in self.source.iter_mut().enumerate() {
                *source = row as u32;
            }
            self.current = 1 - current;
        }
        Ok(())
    }

    /// Sets the spare row past the slots of state set `set` to zero, through the gather graph
    /// (which copies a zero row from host memory onto the device).
    fn zero_spare_row(&mut self, gather: &mut Graph, set: usize) -> Result<(), StepError> {
        let mut index = vec![0i64; 1];
        let mut zeros: Vec<Vec<f32>> =
            self.state_shapes.iter().map(|s| vec![0.0; s.iter().product()]).collect();
        let host = MemoryInfo::default();
        let mut values = Vec::new();
        for (buffer, shape) in zeros.iter_mut().zip(&self.state_shapes) {
            values.push(view(&host, buffer.as_mut_ptr(), 0, 1, shape)?);
        }
        for (tensor, shape) in self.states[set].iter_mut().zip(&self.state_shapes) {
            values.push(view(&self.memory, tensor.data_ptr_mut().cast(), self.slots, 1, shape)?);
        }
        let states = self.state_shapes.len();
        gather.run(&mut Binding::new(Some(index_view(&mut index, 1)?), values, states))
    }

    /// The values for a batch of `batch` rows reading state set `parity`, made on first use.
    fn prepare_step_binding(&mut self, batch: usize, parity: usize) -> Result<(), StepError> {
        if self.step_bindings[batch - 1][parity].is_none() {
            let binding = self.make_step_binding(batch, parity)?;
            self.step_bindings[batch - 1][parity] = Some(binding);
        }
        Ok(())
    }

    fn make_step_binding(&mut self, batch: usize, parity: usize) -> Result<Binding, StepError> {
        let host = MemoryInfo::default();
        let mut values = vec![view(&host, self.frames.as_mut_ptr(), 0, batch, &self.frame_shape)?];
        for index in 0..self.state_shapes.len() {
            values.push(self.state_view(parity, index, batch)?);
        }
        let inputs = values.len();
        values.push(view(&host, self.logits.as_mut_ptr(), 0, batch, &[self.classes])?);
        if self.reports_synaptic_ops {
            values.push(view(&host, self.synaptic_ops.as_mut_ptr(), 0, batch, &[])?);
        }
        for index in 0..self.state_shapes.len() {
            values.push(self.state_view(1 - parity, index, batch)?);
        }
        Ok(Binding::new(None, values, inputs))
    }

    /// The gather's values: `rows` indices, every row of set `parity` in, rows `0..rows` of the
    /// other set out.
    fn make_gather_binding(&mut self, rows: usize, parity: usize) -> Result<Binding, StepError> {
        let indices = index_view(&mut self.row_index, rows)?;
        let mut values = Vec::new();
        for index in 0..self.state_shapes.len() {
            values.push(self.state_view(parity, index, self.slots + 1)?);
        }
        for index in 0..self.state_shapes.len() {
            values.push(self.state_view(1 - parity, index, rows)?);
        }
        let states = self.state_shapes.len();
        Ok(Binding::new(Some(indices), values, states))
    }

    /// A value over the first `rows` rows of state `index` in set `set`.
    fn state_view(
        &mut self,
        set: usize,
        index: usize,
        rows: usize,
    ) -> Result<TensorRefMut<'static, f32>, StepError> {
        let data = self.states[set][index].data_ptr_mut().cast::<f32>();
        view(&self.memory, data, 0, rows, &self.state_shapes[index])
    }
}

/// A tensor value over rows `first..first + rows` of the buffer at `data`, each of shape
/// `row_shape`, in memory `memory`.
fn view(
    memory: &MemoryInfo<'static>,
    data: *mut f32,
    first: usize,
    rows: usize,
    row_shape: &[usize],
) -> Result<TensorRefMut<'static, f32>, StepError> {
    let row_len: usize = row_shape.iter().product();
    let dims: Vec<i64> = std::iter::once(rows).chain(row_shape.iter().copied()).map(|d| d as i64).collect();
    // SAFETY: `data` is the start of a buffer of at least `first + rows` rows (host vectors and
    // state allocations are sized for every slot and never reallocated), owned by the same
    // `SlotIo` as the value made here, which is dropped before it (field order); `first * row_len`
    // stays inside that buffer, so the offset pointer is valid on its device.
    unsafe {
        TensorRefMut::from_raw(memory.clone(), data.add(first * row_len).cast(), Shape::new(dims))
            .map_err(|e| StepError::Run(e.to_string()))
    }
}

/// A host tensor value over the first `rows` indices of `buffer`.
fn index_view(buffer: &mut [i64], rows: usize) -> Result<TensorRefMut<'static, i64>, StepError> {
    let rows_buffer = buffer.get_mut(..rows).ok_or(StepError::Slots { batch: rows, slots: 0 })?;
    // SAFETY: as for `view`: the indices are a host buffer owned with the value, never reallocated.
    unsafe {
        TensorRefMut::from_raw(
            MemoryInfo::default(),
            rows_buffer.as_mut_ptr().cast(),
            Shape::new([rows as i64]),
        )
        .map_err(|e| StepError::Run(e.to_string()))
    }
}

/// Turns an ORT status into a result, releasing the status.
fn check(status: ort::sys::OrtStatusPtr) -> Result<(), StepError> {
    let Some(status) = std::ptr::NonNull::new(status.0) else { return Ok(()) };
    let api = ort::api();
    // SAFETY: a non-null status from ORT; its message is a C string owned by the status, copied
    // before the status is released.
    let message = unsafe {
        let raw = (api.GetErrorMessage)(status.as_ptr());
        let message = if raw.is_null() {
            String::from("unknown error")
        } else {
            CStr::from_ptr(raw).to_string_lossy().into_owned()
        };
        (api.ReleaseStatus)(status.as_ptr());
        message
    };
    Err(StepError::Run(message))
}

fn signature_of(session: &Session) -> Result<ModelSignature, StepError> {
    let spec = |name: &str, dtype: &ValueType| match dtype {
        ValueType::Tensor { ty, shape, .. } => TensorSpec {
            name: name.to_owned(),
            element: if *ty == TensorElementType::Float32 {
                ElementType::Float32
            } else {
                ElementType::Other(format!("{ty:?}").to_lowercase())
            },
            dims: shape.iter().copied().collect(),
        },
        other => TensorSpec {
            name: name.to_owned(),
            element: ElementType::Other(format!("{other:?}")),
            dims: vec![],
        },
    };
    let metadata = session.metadata().map_err(|e| StepError::Metadata(e.to_string()))?;
    let keys = metadata.custom_keys().map_err(|e| StepError::Metadata(e.to_string()))?;
    let metadata: BTreeMap<String, String> =
        keys.into_iter().filter_map(|k| metadata.custom(&k).map(|v| (k, v))).collect();
    Ok(ModelSignature {
        inputs: session.inputs().iter().map(|o| spec(o.name(), o.dtype())).collect(),
        outputs: session.outputs().iter().map(|o| spec(o.name(), o.dtype())).collect(),
        metadata,
    })
}
