//! One ONNX Runtime session that runs a single timestep of a step model, for a batch of samples,
//! over slot-indexed buffers it owns.
//!
//! The session is not shared: the engine owns it on a dedicated thread, because a run blocks.
//!
//! Why the raw `Run` call: a batch of `b` rows reads the first `b` rows of preallocated buffers and
//! writes its outputs straight into preallocated buffers too (ONNX Runtime fills an output value
//! it is given instead of allocating one). The tensor values that view those rows are made once
//! per batch size and reused, so a step allocates nothing and copies no state: the new membrane
//! states land in the second of two state buffers, which then becomes the current one.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::path::Path;

use ort::memory::MemoryInfo;
use ort::session::Session;
use ort::value::{Shape, TensorElementType, TensorRefMut, ValueType};
use ort::AsPointer;

use super::device::{Device, DeviceError};
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

pub struct StepSession {
    /// Dropped before the session: the tensor views it holds are plain values, but ORT's own
    /// objects are released in a tidy order this way.
    io: Option<SlotIo>,
    session: Session,
    contract: ModelContract,
}

impl StepSession {
    /// Opens the graph at `path` and reads its signature; the caller validates it.
    pub fn open(
        runtime: &OrtRuntime,
        path: &Path,
        intra_threads: usize,
        device: Device,
    ) -> Result<(Session, ModelSignature), StepError> {
        let open_error = |message: String| StepError::Open { path: path.display().to_string(), message };
        let builder = Session::builder(runtime.environment())
            .map_err(|e| open_error(e.to_string()))?
            .with_intra_threads(intra_threads)
            .map_err(|e| open_error(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| open_error(e.to_string()))?;
        let session =
            device.configure(builder)?.commit_from_file(path).map_err(|e| open_error(e.to_string()))?;
        let signature = signature_of(&session)?;
        Ok((session, signature))
    }

    /// A session with one slot; [`StepSession::reserve_slots`] makes room for more.
    pub fn new(session: Session, contract: ModelContract) -> Self {
        Self { io: None, session, contract }
    }

    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// Allocates the slot-indexed buffers for batches of up to `slots` rows (all zero). Call once,
    /// before the first step; calling it again starts over with empty buffers.
    pub fn reserve_slots(&mut self, slots: usize) -> Result<(), StepError> {
        self.io = None;
        self.io = Some(SlotIo::new(&self.contract, slots.max(1))?);
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
            io.for_each_state(|buffer, len| buffer[row * len..(row + 1) * len].fill(0.0));
        }
    }

    /// Copies row `from`'s states over row `to`'s.
    pub fn move_row(&mut self, from: usize, to: usize) {
        if let Some(io) = &mut self.io {
            io.for_each_state(|buffer, len| buffer.copy_within(from * len..(from + 1) * len, to * len));
        }
    }

    /// Swaps the states of rows `a < b`.
    pub fn swap_rows(&mut self, a: usize, b: usize) {
        if let Some(io) = &mut self.io {
            io.for_each_state(|buffer, len| {
                let (low, high) = buffer.split_at_mut(b * len);
                low[a * len..(a + 1) * len].swap_with_slice(&mut high[..len]);
            });
        }
    }

    /// Runs one timestep for rows `0..batch`: their frames and states in, their logits, synaptic
    /// operations and new states out, in place.
    pub fn step(&mut self, batch: usize) -> Result<(), StepError> {
        let session = self.session.ptr_mut();
        let io = self.io()?;
        if batch == 0 || batch > io.slots {
            return Err(StepError::Slots { batch, slots: io.slots });
        }
        let current = io.current;
        io.prepare_binding(batch, current)?;
        let binding =
            io.bindings[batch - 1][current].as_mut().ok_or(StepError::Slots { batch, slots: io.slots })?;
        let inputs: &[*const ort::sys::OrtValue] = &binding.inputs_raw;
        let outputs: &mut [*mut ort::sys::OrtValue] = &mut binding.outputs_raw;
        let input_names = &io.input_names_raw;
        let output_names = &io.output_names_raw;
        // SAFETY: every pointer names a live value: the names are owned by `io`, the tensor
        // values by `binding` (which lives in `io`), and the memory they view by `io`'s buffers,
        // which are never reallocated; the lengths are those of the arrays passed.
        let status = unsafe {
            (ort::api().Run)(
                session,
                std::ptr::null(),
                input_names.as_ptr(),
                inputs.as_ptr(),
                inputs.len(),
                output_names.as_ptr(),
                output_names.len(),
                outputs.as_mut_ptr(),
            )
        };
        check(status)?;
        io.current = 1 - current;
        Ok(())
    }
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

    fn step(&mut self, batch: usize) -> Result<(), StepError> {
        StepSession::step(self, batch)
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

/// The preallocated buffers of one session and the tensor values that view their first rows.
struct SlotIo {
    /// Declared first so that the views are dropped before the memory they point into.
    bindings: Vec<[Option<Binding>; 2]>,
    slots: usize,
    frame_len: usize,
    frames: Vec<f32>,
    /// Two sets of state buffers: a step reads set `current` and writes the other.
    states: [Vec<Vec<f32>>; 2],
    state_lens: Vec<usize>,
    current: usize,
    logits: Vec<f32>,
    synaptic_ops: Vec<f32>,
    frame_shape: Vec<usize>,
    state_shapes: Vec<Vec<usize>>,
    classes: usize,
    reports_synaptic_ops: bool,
    _names: Vec<CString>,
    input_names_raw: Vec<*const c_char>,
    output_names_raw: Vec<*const c_char>,
}

// SAFETY: the raw pointers point into memory owned by this value (names and buffers), which moves
// with it; nothing else holds them.
unsafe impl Send for SlotIo {}

/// The tensor values for one batch size and one state parity.
struct Binding {
    _values: Vec<TensorRefMut<'static, f32>>,
    inputs_raw: Vec<*const ort::sys::OrtValue>,
    outputs_raw: Vec<*mut ort::sys::OrtValue>,
}

impl SlotIo {
    fn new(contract: &ModelContract, slots: usize) -> Result<Self, StepError> {
        let state_lens: Vec<usize> = contract.states.iter().map(|s| s.len()).collect();
        let state_set = || state_lens.iter().map(|len| vec![0.0f32; len * slots]).collect::<Vec<_>>();
        let cstring = |name: &str| CString::new(name).map_err(|_| StepError::Name(name.to_owned()));
        let mut input_names = vec![cstring(INPUT_NAME)?];
        let mut output_names = vec![cstring(LOGITS_NAME)?];
        if contract.reports_synaptic_ops {
            output_names.push(cstring(SYNAPTIC_OPS_NAME)?);
        }
        for spec in &contract.states {
            input_names.push(cstring(&spec.input)?);
            output_names.push(cstring(&spec.output)?);
        }
        let input_names_raw = input_names.iter().map(|n| n.as_ptr()).collect();
        let output_names_raw = output_names.iter().map(|n| n.as_ptr()).collect();
        Ok(Self {
            bindings: (0..slots).map(|_| [None, None]).collect(),
            slots,
            frame_len: contract.frame_len(),
            frames: vec![0.0; contract.frame_len() * slots],
            states: [state_set(), state_set()],
            state_lens,
            current: 0,
            logits: vec![0.0; contract.num_classes * slots],
            synaptic_ops: vec![0.0; slots],
            frame_shape: contract.frame_shape.clone(),
            state_shapes: contract.states.iter().map(|s| s.shape.clone()).collect(),
            classes: contract.num_classes,
            reports_synaptic_ops: contract.reports_synaptic_ops,
            _names: input_names.into_iter().chain(output_names).collect(),
            input_names_raw,
            output_names_raw,
        })
    }

    fn for_each_state(&mut self, mut apply: impl FnMut(&mut Vec<f32>, usize)) {
        let current = self.current;
        for (buffer, len) in self.states[current].iter_mut().zip(&self.state_lens) {
            apply(buffer, *len);
        }
    }

    /// The values for a batch of `batch` rows reading state set `parity`, made on first use.
    fn prepare_binding(&mut self, batch: usize, parity: usize) -> Result<(), StepError> {
        if self.bindings[batch - 1][parity].is_none() {
            let binding = self.make_binding(batch, parity)?;
            self.bindings[batch - 1][parity] = Some(binding);
        }
        Ok(())
    }

    fn make_binding(&mut self, batch: usize, parity: usize) -> Result<Binding, StepError> {
        let mut values = Vec::new();
        let frame = view(&mut self.frames, batch, &self.frame_shape)?;
        values.push(frame);
        let [set_0, set_1] = &mut self.states;
        let (read, write) = if parity == 0 { (set_0, set_1) } else { (set_1, set_0) };
        for (buffer, shape) in read.iter_mut().zip(&self.state_shapes) {
            values.push(view(buffer, batch, shape)?);
        }
        let inputs = values.len();
        values.push(view(&mut self.logits, batch, &[self.classes])?);
        if self.reports_synaptic_ops {
            values.push(view(&mut self.synaptic_ops, batch, &[])?);
        }
        for (buffer, shape) in write.iter_mut().zip(&self.state_shapes) {
            values.push(view(buffer, batch, shape)?);
        }
        let inputs_raw = values[..inputs].iter().map(|v| v.ptr()).collect();
        let outputs_raw = values[inputs..].iter().map(|v| v.ptr().cast_mut()).collect();
        Ok(Binding { _values: values, inputs_raw, outputs_raw })
    }
}

/// A tensor value over the first `batch` rows of `buffer`, each of shape `row_shape`.
fn view(
    buffer: &mut [f32],
    batch: usize,
    row_shape: &[usize],
) -> Result<TensorRefMut<'static, f32>, StepError> {
    let row_len: usize = row_shape.iter().product();
    let rows = buffer.get_mut(..batch * row_len).ok_or(StepError::Slots { batch, slots: 0 })?;
    let dims: Vec<i64> = std::iter::once(batch).chain(row_shape.iter().copied()).map(|d| d as i64).collect();
    // SAFETY: the memory is a heap buffer owned by the same `SlotIo` as the value made here,
    // never reallocated, and the value is dropped before it (field order).
    unsafe {
        TensorRefMut::from_raw(MemoryInfo::default(), rows.as_mut_ptr().cast(), Shape::new(dims))
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
