//! `spikeserve.anytime.v1.Anytime`: unary, server-streaming and bidirectional anytime inference.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::anytime_pb as pb;
use super::{budget_ms, grpc_request_id, limits};
use crate::api::error::ApiError;
use crate::api::pipeline::{Answered, Call, Session, Streamed};
use crate::api::request::{
    anytime_request, event_binning, session_policy, PolicyParams, RequestInput, RequestSpec,
};
use crate::api::state::AppState;
use crate::api::streaming::StreamEvent;
use crate::engine::{AnytimeAnswer, AnytimeRequest, ExitReason, FrameSender, Partial};
use crate::input::events::{Event, StreamingBinner};
use crate::input::{DenseTensor, EventError};
use crate::model::LoadedModel;
use crate::telemetry;

pub struct AnytimeService {
    state: AppState,
    session_idle: Duration,
}

impl AnytimeService {
    /// `session_idle`: how long a session may go without a message (a client that stops sending
    /// must not hold a batch slot, and its membrane state, forever); `--session-idle-timeout-secs`.
    pub fn new(state: AppState, session_idle: Duration) -> Self {
        Self { state, session_idle }
    }
}

/// What a client stream gave next.
enum Inbound<T> {
    Message(T),
    /// The client half-closed: no more input, but it waits for the answer.
    HalfClosed,
    /// The client reset (cancelled) the call: nobody waits for the answer.
    Reset,
}

/// The next message of a client stream, within `idle`. Over-limit messages are refused with
/// RESOURCE_EXHAUSTED (see [`limits`]).
async fn next_message<T>(inbound: &mut Streaming<T>, idle: Duration) -> Result<Inbound<T>, ApiError> {
    match tokio::time::timeout(idle, inbound.message()).await {
        Ok(Ok(Some(message))) => Ok(Inbound::Message(message)),
        Ok(Ok(None)) => Ok(Inbound::HalfClosed),
        Ok(Err(status)) if limits::is_too_large(&status) => {
            Err(ApiError::PayloadTooLarge(limits::too_large(&status).message().to_owned()))
        }
        Ok(Err(_)) => Ok(Inbound::Reset),
        Err(_) => Err(ApiError::SessionIdle { seconds: idle.as_secs_f64() }),
    }
}

/// How long a reset session's input side waits for the answering side to let go of the request
/// (see [`feed`]); the answering side notices a reset at once, so this bound is only a backstop.
const RESET_GRACE: Duration = Duration::from_secs(1);

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::InferStreamResponse, Status>> + Send>>;

/// How many streamed messages may wait for a slow client.
const OUTBOUND_BUFFER: usize = 64;

#[tonic::async_trait]
impl pb::anytime_server::Anytime for AnytimeService {
    async fn infer(&self, request: Request<pb::InferRequest>) -> Result<Response<pb::InferResponse>, Status> {
        let metadata = request.metadata().clone();
        let message = request.into_inner();
        let mut call = Call::arrive(
            "grpc",
            Some(&message.model),
            Some(&grpc_request_id(&message.request_id, &metadata)),
            telemetry::grpc_parent(&metadata),
        );
        let decode = |call: &mut Call, model: &Arc<LoadedModel>| decode(message, &metadata, call, model);
        match call.answer(&self.state, decode).await {
            Ok(Answered { model, answer, max_timesteps, .. }) => {
                Ok(Response::new(final_response(&model, call.id().to_owned(), answer, max_timesteps)))
            }
            Err(error) => Err(call.in_span(|| error.into())),
        }
    }

    type InferStreamStream = ResponseStream;

    async fn infer_stream(
        &self,
        request: Request<pb::InferRequest>,
    ) -> Result<Response<Self::InferStreamStream>, Status> {
        let metadata = request.metadata().clone();
        let message = request.into_inner();
        let mut call = Call::arrive(
            "grpc",
            Some(&message.model),
            Some(&grpc_request_id(&message.request_id, &metadata)),
            telemetry::grpc_parent(&metadata),
        );
        let decode = |call: &mut Call, model: &Arc<LoadedModel>| decode(message, &metadata, call, model);
        let Streamed { model, max_timesteps, events, .. } =
            call.stream(&self.state, decode).map_err(|error| call.in_span(|| Status::from(error)))?;
        // Encoded inside the call's span: a failure after the stream began is logged there.
        let stream =
            events.map(move |event| call.in_span(|| stream_message(&model, call.id(), max_timesteps, event)));
        Ok(Response::new(Box::pin(stream)))
    }

    type SessionStream = ResponseStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();
        // The model and the id come with `start`; a call that fails before it is still counted
        // and logged under its own span.
        let mut call = Call::arrive(
            "grpc-session",
            None,
            Some(&grpc_request_id("", &metadata)),
            telemetry::grpc_parent(&metadata),
        );
        let start = match read_start(&mut inbound, self.session_idle).instrument(call.span().clone()).await {
            Ok(Some(start)) => start,
            // The client went away (or half-closed) before saying anything: answered, not counted
            // as a malformed request.
            Ok(None) => {
                let error =
                    ApiError::InvalidField("session: the stream ended before its `start` message".into());
                return Err(call.in_span(|| Status::from(error)));
            }
            Err(error) => return Err(call.in_span(|| Status::from(call.failed(error)))),
        };
        call.set_model(&start.model);
        call.adopt_id(Some(&start.request_id).filter(|id| !id.is_empty()).map(String::as_str));
        let return_confidences = start.return_confidences;
        let params = policy_params(start.policy, &metadata);
        let Session { model, policy, sender, mut events } = call
            .open_session(&self.state, |call, model| {
                session_policy(model, &params, return_confidences, call.arrived())
            })
            .map_err(|error| call.in_span(|| Status::from(error)))?;
        let binner = model.contract.events.map(StreamingBinner::new);

        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_BUFFER);
        let (input_error_tx, mut input_error) = tokio::sync::oneshot::channel::<ApiError>();
        // Dropped when the answering task ends (see `feed`).
        let (answering, answering_done) = tokio::sync::oneshot::channel::<()>();
        // Answers: partials as the request steps, then the final one; or the input's error. The
        // call ends with either (this task holds the only sender of the response stream).
        let pump_model = model.clone();
        let max_timesteps = policy.max_timesteps;
        let idle = self.session_idle;
        let id = call.id().to_owned();
        tokio::spawn(
            async move {
                let _answering = answering;
                let mut input_open = true;
                loop {
                    let message = tokio::select! {
                        biased;
                        // The client reset the call: dropping the answer cancels the request.
                        () = outbound.closed() => return,
                        // An input error next: it is the cause of whatever the engine says next.
                        input = &mut input_error, if input_open => match input {
                            Ok(error) => Err(error.into()),
                            // The input ended cleanly: only answers are left to send.
                            Err(_) => {
                                input_open = false;
                                continue;
                            }
                        },
                        event = events.recv() => match event {
                            Some(event) => stream_message(&pump_model, &id, max_timesteps, event),
                            None => return,
                        },
                    };
                    let last = message.is_err()
                        || matches!(&message, Ok(m) if matches!(m.message, Some(pb::infer_stream_response::Message::Final(_))));
                    if outbound.send(message).await.is_err() || last {
                        return;
                    }
                }
            }
            .instrument(call.span().clone()),
        );
        // Frames: pushed as they come; a bad one ends the call with its error.
        let feeding = call.clone();
        tokio::spawn(
            async move {
                if let Err(error) = feed(&mut inbound, idle, &sender, binner, &model, answering_done).await {
                    let _ = input_error_tx.send(feeding.failed(error));
                }
            }
            .instrument(call.span().clone()),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound_rx))))
    }

    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let registry = self.state.registry()?;
        Ok(Response::new(pb::ListModelsResponse {
            models: registry.models().map(|m| model_info(m)).collect(),
        }))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let model = self.state.model_info(&request.get_ref().model)?;
        Ok(Response::new(model_info(&model)))
    }
}

/// A session's first message, which must be `start` (model and policy).
/// `None` when the stream ended (or was reset) before any message.
async fn read_start(
    inbound: &mut Streaming<pb::SessionRequest>,
    idle: Duration,
) -> Result<Option<pb::SessionStart>, ApiError> {
    let Inbound::Message(first) = next_message(inbound, idle).await? else { return Ok(None) };
    match first.message {
        Some(pb::session_request::Message::Start(start)) => Ok(Some(start)),
        Some(_) => Err(ApiError::InvalidField(
            "session: the first message must be `start` (model and policy), found a frame or events".into(),
        )),
        None => Err(ApiError::InvalidField("session: the first message is empty".into())),
    }
}

/// Reads a session's frames or event chunks until the client half-closes, the request is over, or
/// an input is wrong (the error to end the call with).
///
/// A reset is not a half-close: the request must end as `cancelled`, not be answered after the
/// frames it has. Ending the input would let the scheduler finish it as an exhausted stream, so on
/// a reset the input side first waits (`answering_done`, at most [`RESET_GRACE`]) until the
/// answering side, which sees the reset too, has dropped the answer: the scheduler then finds the
/// caller gone before it finds the input ended.
async fn feed(
    inbound: &mut Streaming<pb::SessionRequest>,
    idle: Duration,
    sender: &FrameSender,
    mut binner: Option<StreamingBinner>,
    model: &LoadedModel,
    answering_done: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), ApiError> {
    use pb::session_request::Message;
    loop {
        let message = match next_message(inbound, idle).await? {
            Inbound::Message(message) => message,
            Inbound::HalfClosed => break,
            Inbound::Reset => {
                let _ = tokio::time::timeout(RESET_GRACE, answering_done).await;
                return Ok(());
            }
        };
        let frames = match message.message {
            Some(Message::Frame(tensor)) => vec![frame_from_pb(tensor, model, sender.frames_sent())?],
            Some(Message::Events(chunk)) => {
                let Some(binner) = binner.as_mut() else {
                    // A model without event binning: this says so, naming the model.
                    event_binning(model)?;
                    return Ok(());
                };
                let dropped = binner.dropped();
                let frames = binner.push(&events_from_pb(chunk)?)?;
                crate::metrics::events_dropped(&model.name, binner.dropped() - dropped);
                frames
            }
            Some(Message::Start(_)) => {
                return Err(ApiError::InvalidField("session: `start` may only be the first message".into()))
            }
            None => return Err(ApiError::InvalidField("session: a message is empty".into())),
        };
        for frame in frames {
            if !push(sender, frame)? {
                return Ok(());
            }
        }
    }
    if let Some(frame) = binner.and_then(StreamingBinner::finish) {
        push(sender, frame)?;
    }
    sender.finish();
    Ok(())
}

/// Pushes one frame; `false` once the request is over (it answered, or ran out of time).
fn push(sender: &FrameSender, frame: Vec<f32>) -> Result<bool, ApiError> {
    use crate::engine::StreamError;
    match sender.push(frame) {
        Ok(()) => Ok(true),
        Err(StreamError::Gone | StreamError::Finished) => Ok(false),
        Err(error) => Err(ApiError::InvalidField(format!("session: {error}"))),
    }
}

fn frame_from_pb(tensor: pb::Tensor, model: &LoadedModel, index: usize) -> Result<Vec<f32>, ApiError> {
    let frame_shape = &model.contract.frame_shape;
    let shape: Vec<usize> = tensor.shape.iter().map(|&d| d as usize).collect();
    if !shape.is_empty() && shape != *frame_shape {
        return Err(ApiError::InvalidField(format!(
            "session: frame {index}: has shape {shape:?}, the model's frame is {frame_shape:?}"
        )));
    }
    Ok(tensor.values)
}

/// A unary or server-streaming request, as the engine runs it.
fn decode(
    message: pb::InferRequest,
    metadata: &MetadataMap,
    call: &Call,
    model: &LoadedModel,
) -> Result<(AnytimeRequest, ()), ApiError> {
    Ok((anytime_request(model, spec(message, metadata)?, call.arrived())?, ()))
}

/// A unary or server-streaming request, decoded.
fn spec(message: pb::InferRequest, metadata: &MetadataMap) -> Result<RequestSpec, ApiError> {
    use pb::infer_request::Input;
    let input = match message.input {
        Some(Input::Tensor(tensor)) => {
            let shape = tensor.shape.iter().map(|&d| d as usize).collect();
            RequestInput::Tensor(DenseTensor::from_parts("tensor", shape, tensor.values)?)
        }
        Some(Input::Events(events)) => RequestInput::Events(events_from_pb(events)?),
        None => return Err(ApiError::InvalidField("input: missing; set `tensor` or `events`".into())),
    };
    Ok(RequestSpec {
        input,
        policy: policy_params(message.policy, metadata),
        return_confidences: message.return_confidences,
    })
}

fn policy_params(policy: Option<pb::Policy>, metadata: &MetadataMap) -> PolicyParams {
    let policy = policy.unwrap_or_default();
    PolicyParams {
        threshold: policy.threshold,
        min_timesteps: policy.min_timesteps.map(|n| n as usize),
        max_timesteps: policy.max_timesteps.map(|n| n as usize),
        latency_budget_ms: budget_ms(policy.latency_budget_ms, metadata),
        max_variance: policy.max_variance,
        priority: policy.priority.map(u64::from),
        max_accuracy_drop: policy.max_accuracy_drop,
        policy: policy.policy,
        guarantee: policy.guarantee,
    }
}

fn events_from_pb(events: pb::Events) -> Result<Vec<Event>, ApiError> {
    let lengths = [events.x.len(), events.y.len(), events.t_us.len(), events.p.len()];
    if lengths.iter().any(|&n| n != lengths[0]) {
        return Err(ApiError::InvalidField(format!(
            "events: columns x, y, t_us, p have {lengths:?} values; they must be equal"
        )));
    }
    if lengths[0] == 0 {
        return Err(EventError::Empty.into());
    }
    Ok((0..lengths[0]).map(|i| [events.x[i], events.y[i], events.t_us[i], events.p[i]]).collect())
}

fn stream_message(
    model: &LoadedModel,
    id: &str,
    max_timesteps: usize,
    event: StreamEvent,
) -> Result<pb::InferStreamResponse, Status> {
    use pb::infer_stream_response::Message;
    match event {
        StreamEvent::Partial(partial) => {
            Ok(pb::InferStreamResponse { message: Some(Message::Partial(partial_message(model, partial))) })
        }
        StreamEvent::Final(answer) => {
            let response = final_response(model, id.to_owned(), answer, max_timesteps);
            Ok(pb::InferStreamResponse { message: Some(Message::Final(response)) })
        }
        StreamEvent::Failed(error) => Err(error.into()),
    }
}

fn partial_message(model: &LoadedModel, partial: Partial) -> pb::Partial {
    pb::Partial {
        timestep: partial.timestep as u32,
        class_index: partial.class_index as u32,
        label: model.contract.label(partial.class_index),
        confidence: partial.confidence,
        uncertainty: partial.uncertainty,
        probabilities: partial.probabilities,
    }
}

pub fn exit_reason(reason: ExitReason) -> pb::ExitReason {
    match reason {
        ExitReason::Confident => pb::ExitReason::Confident,
        ExitReason::MaxTimesteps => pb::ExitReason::MaxTimesteps,
        ExitReason::Deadline => pb::ExitReason::Deadline,
        ExitReason::Cancelled => pb::ExitReason::Cancelled,
        ExitReason::Policy => pb::ExitReason::Policy,
    }
}

fn final_response(
    model: &LoadedModel,
    request_id: String,
    answer: AnytimeAnswer,
    max_timesteps: usize,
) -> pb::InferResponse {
    pb::InferResponse {
        model: model.name.clone(),
        request_id,
        class_index: answer.class_index as u32,
        label: model.contract.label(answer.class_index),
        confidence: answer.confidence,
        uncertainty: answer.uncertainty,
        probabilities: answer.probabilities,
        timesteps: answer.timesteps as u32,
        max_timesteps: max_timesteps as u32,
        exit_reason: exit_reason(answer.exit_reason).into(),
        synaptic_ops: answer.synaptic_ops,
        confidences: answer.confidences.unwrap_or_default(),
        compute_ms: answer.compute_time.as_secs_f64() * 1e3,
        queue_ms: answer.queue_time.as_secs_f64() * 1e3,
        threshold: answer.threshold,
        max_accuracy_drop: answer.max_accuracy_drop,
        policy: answer.policy.as_str().to_owned(),
        guarantee: answer.guarantee,
    }
}

fn model_info(model: &LoadedModel) -> pb::ModelInfo {
    let contract = &model.contract;
    let kind = serde_json::to_value(contract.input_kind).ok().and_then(|v| v.as_str().map(str::to_owned));
    pb::ModelInfo {
        name: model.name.clone(),
        timesteps: contract.timesteps as u32,
        num_classes: contract.num_classes as u32,
        labels: contract.labels.clone(),
        input_kind: kind.unwrap_or_default(),
        frame_shape: contract.frame_shape.iter().map(|&d| d as u64).collect(),
        default_threshold: contract.default_threshold,
        accuracy_per_timestep: contract.accuracy_per_timestep.clone(),
        members: contract.members as u32,
        input_description: contract.input_description.clone().unwrap_or_default(),
        contract_json: serde_json::to_string(contract.as_ref()).unwrap_or_default(),
        version: model.version,
        calibration: contract
            .calibration
            .iter()
            .map(|row| pb::CalibratedThreshold {
                max_accuracy_drop: row.max_accuracy_drop,
                threshold: row.threshold,
            })
            .collect(),
        exit_policies_json: model
            .exit_policies
            .as_ref()
            .and_then(|p| serde_json::to_string(&p.summary).ok())
            .unwrap_or_default(),
    }
}
