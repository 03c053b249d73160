//! KServe v2 over gRPC (`inference.GRPCInferenceService`), with Triton's streaming, configuration
//! and statistics extensions. `ModelStreamInfer` answers each request with one response per
//! timestep; the last carries the parameter `triton_final_response = true`, as Triton's decoupled
//! models do. Outputs travel in `raw_output_contents`, as Triton sends them (its Python client reads
//! only those).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::{
    answer_outputs, answer_parameters, config_parameters, decode_binary, input_metadata, output_metadata,
    partial_outputs, request_spec, select_outputs, InputTensor, OutputTensor, Parameter, EXTENSIONS,
};
use crate::api::error::ApiError;
use crate::api::grpc::inference_pb as pb;
use crate::api::grpc::{budget_ms, grpc_request_id, limits};
use crate::api::pipeline::{Answered, Call, Streamed};
use crate::api::request::anytime_request;
use crate::api::state::AppState;
use crate::api::state::ServerState;
use crate::api::streaming::StreamEvent;
use crate::engine::AnytimeRequest;
use crate::model::LoadedModel;
use crate::telemetry;

pub struct KServeService {
    state: AppState,
}

impl KServeService {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// A model by name and version (empty: the one serving), for metadata.
    fn model_info(&self, name: &str, version: &str) -> Result<Arc<LoadedModel>, ApiError> {
        super::check_version(&self.state, name, version)?;
        self.state.model_info(name)
    }
}

/// Decodes a request into what the engine runs, and the outputs the client asked for.
fn decode(
    state: &ServerState,
    request: pb::ModelInferRequest,
    metadata: &MetadataMap,
    call: &Call,
    model: &LoadedModel,
) -> Result<(AnytimeRequest, Vec<String>), ApiError> {
    super::check_version(state, &model.name, &request.model_version)?;
    let mut parameters = parameters(&request.parameters);
    if !parameters.contains_key("timeout") {
        if let Some(ms) = budget_ms(None, metadata) {
            parameters.insert("timeout".to_owned(), Parameter::Float(ms * 1e3));
        }
    }
    let requested: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
    select_outputs(Vec::new(), &requested)?;
    let inputs = inputs(request.inputs, request.raw_input_contents)?;
    let spec = request_spec(&model.contract, inputs, &parameters)?;
    Ok((anytime_request(model, spec, call.arrived())?, requested))
}

type StreamResponses = Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::grpc_inference_service_server::GrpcInferenceService for KServeService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.state.is_ready() }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let ready = self.model_info(&request.name, &request.version).is_ok() && !self.state.is_leaving();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "spikeserve".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let model = self.model_info(&request.name, &request.version)?;
        let tensors = |list: Vec<(String, &str, Vec<i64>)>| {
            list.into_iter()
                .map(|(name, datatype, shape)| pb::model_metadata_response::TensorMetadata {
                    name,
                    datatype: datatype.to_owned(),
                    shape,
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: model.name.clone(),
            versions: vec![model.version.to_string()],
            platform: "spikeserve_step_onnx".to_owned(),
            inputs: tensors(input_metadata(&model)),
            outputs: tensors(output_metadata(&model)),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        let mut call = Call::arrive(
            "kserve-grpc",
            Some(&request.model_name),
            Some(&grpc_request_id(&request.id, &metadata)),
            telemetry::grpc_parent(&metadata),
        );
        let state = &self.state;
        let decode =
            |call: &mut Call, model: &Arc<LoadedModel>| decode(state, request, &metadata, call, model);
        let answered = call.answer(state, decode).await;
        let Answered { model, answer, decoded: requested, .. } =
            answered.map_err(|error| call.in_span(|| Status::from(error)))?;
        let outputs = select_outputs(answer_outputs(&model, &answer), &requested)
            .map_err(|error| call.in_span(|| Status::from(call.failed(error))))?;
        Ok(Response::new(response(&model, call.id(), outputs, &answer_parameters(&answer), None)))
    }

    type ModelStreamInferStream = StreamResponses;

    /// Each request on the stream runs on its own (they may overlap); every response carries its
    /// request's id. A request that fails gets a response with `error_message`; the stream goes on.
    async fn model_stream_infer(
        &self,
        request: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();
        let (outbound, outbound_rx) = mpsc::channel::<Result<pb::ModelStreamInferResponse, Status>>(64);
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                let request = match inbound.message().await {
                    Ok(Some(request)) => request,
                    Ok(None) => return,
                    Err(status) if limits::is_too_large(&status) => {
                        // The stream cannot be read past a refused message: end the call with it.
                        let _ = outbound.send(Err(limits::too_large(&status))).await;
                        return;
                    }
                    // The client reset the call.
                    Err(_) => return,
                };
                let given = grpc_request_id(&request.id, &metadata);
                let mut call = Call::arrive(
                    "kserve-grpc-stream",
                    Some(&request.model_name),
                    Some(&given),
                    telemetry::grpc_parent(&metadata),
                );
                let decode = |call: &mut Call, model: &Arc<LoadedModel>| {
                    decode(&state, request, &metadata, call, model)
                };
                match call.stream(&state, decode) {
                    Ok(streamed) => {
                        let streaming = stream_one(streamed, call.id().to_owned(), outbound.clone());
                        tokio::spawn(streaming.instrument(call.span().clone()));
                    }
                    Err(error) => {
                        let failed = call.in_span(|| stream_error(call.id(), &error));
                        if outbound.send(Ok(failed)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound_rx))))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let ready_only = request.get_ref().ready;
        let entries = self.state.repository()?.index().await;
        let models = entries
            .into_iter()
            .filter(|entry| !ready_only || entry.state == "READY")
            .map(|entry| pb::repository_index_response::ModelIndex {
                name: entry.name,
                version: entry.version.map(|v| v.to_string()).unwrap_or_default(),
                state: entry.state.to_owned(),
                reason: entry.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    /// Loads or reloads a model from its directory; answers once the new version serves.
    async fn repository_model_load(
        &self,
        request: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let request = request.into_inner();
        super::no_parameters(request.parameters.keys())?;
        self.state.repository_for_changes()?.load(&request.model_name).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    /// Stops serving a model; requests in flight on it finish.
    async fn repository_model_unload(
        &self,
        request: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let request = request.into_inner();
        super::no_parameters(request.parameters.keys())?;
        self.state.repository_for_changes()?.unload(&request.model_name).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn model_config(
        &self,
        request: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let request = request.into_inner();
        let model = self.model_info(&request.name, &request.version)?;
        let data_type = |datatype: &str| match datatype {
            "FP32" => pb::DataType::TypeFp32,
            "INT64" => pb::DataType::TypeInt64,
            "BYTES" => pb::DataType::TypeString,
            _ => pb::DataType::TypeInvalid,
        };
        let config = pb::ModelConfig {
            name: model.name.clone(),
            platform: "spikeserve_step_onnx".to_owned(),
            backend: "spikeserve".to_owned(),
            max_batch_size: 0,
            input: input_metadata(&model)
                .into_iter()
                .map(|(name, datatype, dims)| pb::ModelInput {
                    name,
                    data_type: data_type(datatype).into(),
                    dims,
                    ..Default::default()
                })
                .collect(),
            output: output_metadata(&model)
                .into_iter()
                .map(|(name, datatype, dims)| pb::ModelOutput {
                    name,
                    data_type: data_type(datatype).into(),
                    dims,
                    ..Default::default()
                })
                .collect(),
            parameters: config_parameters(&model)
                .into_iter()
                .map(|(k, v)| (k, pb::ModelParameter { string_value: v }))
                .collect(),
            model_transaction_policy: Some(pb::ModelTransactionPolicy { decoupled: true }),
            ..Default::default()
        };
        Ok(Response::new(pb::ModelConfigResponse { config: Some(config) }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let registry = self.state.registry()?;
        let models: Vec<_> = if request.name.is_empty() {
            registry.models().cloned().collect()
        } else {
            vec![self.model_info(&request.name, &request.version)?]
        };
        let duration = |count: u64, ns: u64| Some(pb::StatisticDuration { count, ns });
        let model_stats = models
            .iter()
            .map(|model| {
                let s = model.engine.stats();
                let success = s.answered();
                pb::ModelStatistics {
                    name: model.name.clone(),
                    version: model.version.to_string(),
                    last_inference: s.last_answer_unix_ms,
                    inference_count: success,
                    execution_count: s.steps,
                    inference_stats: Some(pb::InferStatistics {
                        success: duration(success, s.queue_ns + s.compute_ns),
                        fail: duration(s.failed + s.refused, 0),
                        queue: duration(success, s.queue_ns),
                        compute_input: duration(success, 0),
                        compute_infer: duration(success, s.compute_ns),
                        compute_output: duration(success, 0),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }
}

/// Streams one request's partials and answer into the shared outbound stream.
async fn stream_one(
    streamed: Streamed<Vec<String>>,
    id: String,
    outbound: mpsc::Sender<Result<pb::ModelStreamInferResponse, Status>>,
) {
    let Streamed { model, decoded: requested, mut events, .. } = streamed;
    while let Some(event) = events.recv().await {
        let message = match event {
            // The answer that follows carries this timestep, with the exit reason and the final flag:
            // one response per timestep.
            StreamEvent::Partial(partial) if partial.last => continue,
            StreamEvent::Partial(partial) => {
                let outputs =
                    select_outputs(partial_outputs(&model, &partial), &requested).unwrap_or_default();
                pb::ModelStreamInferResponse {
                    error_message: String::new(),
                    infer_response: Some(response(&model, &id, outputs, &[], Some(false))),
                }
            }
            StreamEvent::Final(answer) => {
                let outputs = select_outputs(answer_outputs(&model, &answer), &requested).unwrap_or_default();
                pb::ModelStreamInferResponse {
                    error_message: String::new(),
                    infer_response: Some(response(
                        &model,
                        &id,
                        outputs,
                        &answer_parameters(&answer),
                        Some(true),
                    )),
                }
            }
            StreamEvent::Failed(error) => stream_error(&id, &error),
        };
        if outbound.send(Ok(message)).await.is_err() {
            return;
        }
    }
}

fn stream_error(id: &str, error: &ApiError) -> pb::ModelStreamInferResponse {
    tracing::debug!(%error, code = error.code(), "stream request refused");
    pb::ModelStreamInferResponse {
        error_message: error.to_string(),
        infer_response: Some(pb::ModelInferResponse { id: id.to_owned(), ..Default::default() }),
    }
}

fn parameters(raw: &HashMap<String, pb::InferParameter>) -> BTreeMap<String, Parameter> {
    use pb::infer_parameter::ParameterChoice;
    raw.iter()
        .filter_map(|(key, value)| {
            let parameter = match value.parameter_choice.as_ref()? {
                ParameterChoice::BoolParam(b) => Parameter::Bool(*b),
                ParameterChoice::Int64Param(v) => Parameter::Int(*v),
                ParameterChoice::Uint64Param(v) => Parameter::Int(i64::try_from(*v).unwrap_or(i64::MAX)),
                ParameterChoice::DoubleParam(v) => Parameter::Float(*v),
                ParameterChoice::StringParam(s) => Parameter::Text(s.clone()),
            };
            Some((key.clone(), parameter))
        })
        .collect()
}

/// Each input's values from its typed contents or, when the request uses them, its raw bytes
/// (then every input has one, in order).
fn inputs(
    inputs: Vec<pb::model_infer_request::InferInputTensor>,
    raw: Vec<Vec<u8>>,
) -> Result<Vec<InputTensor>, ApiError> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(ApiError::InvalidField(format!(
            "raw_input_contents: {} entries for {} inputs; give one per input or none",
            raw.len(),
            inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    inputs
        .into_iter()
        .map(|input| {
            let place = format!("inputs[{}]", input.name);
            let values = match raw.next() {
                Some(bytes) => {
                    if input.contents.is_some() {
                        return Err(ApiError::InvalidField(format!(
                            "{place}: has both contents and raw_input_contents"
                        )));
                    }
                    let expected = input
                        .shape
                        .iter()
                        .try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)))
                        .zip(super::element_size(&input.datatype))
                        .map(|(n, s)| n.saturating_mul(s));
                    if expected.is_some_and(|e| e != bytes.len()) {
                        return Err(ApiError::InvalidField(format!(
                            "{place}: raw_input_contents holds {} bytes, shape {:?} of {} needs {}",
                            bytes.len(),
                            input.shape,
                            input.datatype,
                            expected.unwrap_or(0)
                        )));
                    }
                    decode_binary(&place, &input.datatype, &bytes)?
                }
                None => typed_contents(&place, &input.datatype, input.contents.unwrap_or_default())?,
            };
            Ok(InputTensor { name: input.name, datatype: input.datatype, shape: input.shape, values })
        })
        .collect()
}

fn typed_contents(
    place: &str,
    datatype: &str,
    contents: pb::InferTensorContents,
) -> Result<Vec<f64>, ApiError> {
    Ok(match datatype {
        "FP32" => contents.fp32_contents.into_iter().map(f64::from).collect(),
        "FP64" => contents.fp64_contents,
        "INT64" => contents.int64_contents.into_iter().map(|v| v as f64).collect(),
        "INT32" | "INT16" | "INT8" => contents.int_contents.into_iter().map(f64::from).collect(),
        "UINT64" => contents.uint64_contents.into_iter().map(|v| v as f64).collect(),
        "UINT32" | "UINT16" | "UINT8" => contents.uint_contents.into_iter().map(f64::from).collect(),
        "BOOL" => contents.bool_contents.into_iter().map(|b| f64::from(u8::from(b))).collect(),
        other => {
            return Err(ApiError::InvalidField(format!(
                "{place}: datatype {other} is not supported; send FP32"
            )))
        }
    })
}

/// A response with `outputs` in raw form; `final_response` marks streamed responses.
fn response(
    model: &LoadedModel,
    id: &str,
    outputs: Vec<OutputTensor>,
    answer_parameters: &[(&str, Parameter)],
    final_response: Option<bool>,
) -> pb::ModelInferResponse {
    let raw_output_contents = outputs.iter().map(OutputTensor::to_bytes).collect();
    let mut parameters: HashMap<String, pb::InferParameter> = answer_parameters
        .iter()
        .map(|(name, value)| {
            use pb::infer_parameter::ParameterChoice;
            let choice = match value {
                Parameter::Bool(v) => ParameterChoice::BoolParam(*v),
                Parameter::Int(v) => ParameterChoice::Int64Param(*v),
                Parameter::Float(v) => ParameterChoice::DoubleParam(*v),
                Parameter::Text(v) => ParameterChoice::StringParam(v.clone()),
            };
            ((*name).to_owned(), pb::InferParameter { parameter_choice: Some(choice) })
        })
        .collect();
    if let Some(last) = final_response {
        parameters.insert(
            "triton_final_response".to_owned(),
            pb::InferParameter {
                parameter_choice: Some(pb::infer_parameter::ParameterChoice::BoolParam(last)),
            },
        );
    }
    pb::ModelInferResponse {
        model_name: model.name.clone(),
        model_version: model.version.to_string(),
        id: id.to_owned(),
        parameters,
        outputs: outputs
            .into_iter()
            .map(|o| pb::model_infer_response::InferOutputTensor {
                name: o.name.to_owned(),
                datatype: o.datatype().to_owned(),
                shape: o.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_output_contents,
    }
}
