//! One ONNX Runtime session that runs a single timestep of a step model, for a batch of samples.
//!
//! The session is not shared: the engine owns it on a dedicated thread, because `Session::run`
//! blocks and needs `&mut self`.

use std::collections::BTreeMap;
use std::path::Path;

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::{Device, DeviceError, OrtRuntime};
use crate::model::contract::{
    ElementType, ModelContract, ModelSignature, TensorSpec, LOGITS_NAME, SYNAPTIC_OPS_NAME,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    #[error("cannot open model {path}: {message}")]
    Open { path: String, message: String },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("cannot read the model's metadata: {0}")]
    Metadata(String),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("state buffer for \"{name}\" holds {rows} rows, a batch of {batch} needs more")]
    StateBuffer { name: String, rows: usize, batch: usize },
    #[error("model returned {found} values for \"{name}\", expected {expected}")]
    OutputSize { name: String, found: usize, expected: usize },
}

pub struct StepSession {
    session: Session,
    contract: ModelContract,
    /// The last step's synaptic operations per sample, when the model reports them.
    synaptic_ops: Vec<f32>,
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

    pub fn new(session: Session, contract: ModelContract) -> Self {
        Self { session, contract, synaptic_ops: Vec::new() }
    }

    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// The last step's synaptic operations, one per sample of its batch (empty when the model
    /// does not report them).
    pub fn synaptic_ops(&self) -> &[f32] {
        &self.synaptic_ops
    }

    /// Runs one timestep for `batch` samples.
    ///
    /// `frames` holds `batch` frames back to back. `states[i]` holds state `i`, one row per sample;
    /// its first `batch` rows are fed and overwritten with the new state (the buffer may hold more
    /// rows: the scheduler preallocates one per batch slot). `logits` receives `batch * classes` values.
    pub fn step(
        &mut self,
        batch: usize,
        frames: &[f32],
        states: &mut [Vec<f32>],
        logits: &mut Vec<f32>,
    ) -> Result<(), StepError> {
        let run = |e: ort::Error| StepError::Run(e.to_string());
        let contract = &self.contract;
        let mut inputs = Vec::with_capacity(1 + states.len());
        let frame_shape = batched(batch, &contract.frame_shape);
        inputs.push((
            crate::model::contract::INPUT_NAME.to_owned(),
            TensorRef::from_array_view((frame_shape, frames)).map_err(run)?.into_dyn(),
        ));
        for (spec, buffer) in contract.states.iter().zip(states.iter()) {
            let rows = buffer.get(..batch * spec.len()).ok_or(StepError::StateBuffer {
                name: spec.input.clone(),
                rows: buffer.len() / spec.len().max(1),
                batch,
            })?;
            let view = TensorRef::from_array_view((batched(batch, &spec.shape), rows)).map_err(run)?;
            inputs.push((spec.input.clone(), view.into_dyn()));
        }
        let outputs = self.session.run(inputs).map_err(run)?;

        let (_, values) = outputs[LOGITS_NAME].try_extract_tensor::<f32>().map_err(run)?;
        check_len(LOGITS_NAME, values.len(), batch * contract.num_classes)?;
        logits.clear();
        logits.extend_from_slice(values);
        if contract.reports_synaptic_ops {
            let (_, values) = outputs[SYNAPTIC_OPS_NAME].try_extract_tensor::<f32>().map_err(run)?;
            check_len(SYNAPTIC_OPS_NAME, values.len(), batch)?;
            self.synaptic_ops.clear();
            self.synaptic_ops.extend_from_slice(values);
        }
        for (spec, buffer) in contract.states.iter().zip(states.iter_mut()) {
            let (_, values) = outputs[spec.output.as_str()].try_extract_tensor::<f32>().map_err(run)?;
            let rows = batch * spec.len();
            check_len(&spec.output, values.len(), rows)?;
            buffer[..rows].copy_from_slice(values);
        }
        Ok(())
    }
}

fn batched(batch: usize, shape: &[usize]) -> Vec<usize> {
    std::iter::once(batch).chain(shape.iter().copied()).collect()
}

fn check_len(name: &str, found: usize, expected: usize) -> Result<(), StepError> {
    if found == expected {
        Ok(())
    } else {
        Err(StepError::OutputSize { name: name.to_owned(), found, expected })
    }
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
