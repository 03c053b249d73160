//! The steps every inference request takes, whatever door it came in by: arrival time, request id,
//! log span, model lookup, the engine request, the exit recorded on the span, and failures counted
//! in the metrics. A door only decodes its wire format (inside [`Call::answer`], [`Call::stream`] or
//! [`Call::open_session`]) and encodes what comes back; a cross-cutting change is made here once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::Stream;
use tokio::sync::mpsc;
use tracing::{Instrument, Span};

use super::error::ApiError;
use super::request::SessionPolicy;
use super::request_id::request_id;
use super::state::ServerState;
use super::streaming::{forward, stream_request, StreamEvent};
use crate::engine::{AnytimeAnswer, AnytimeRequest, CutoffPolicy, FrameSender};
use crate::model::LoadedModel;
use crate::telemetry;

/// One inference call: who it is (id, door, model), when it arrived, and the span its logs go under
/// (and, with `--otlp-endpoint`, the span exported as part of the caller's trace).
#[derive(Debug, Clone)]
pub struct Call {
    door: &'static str,
    model: String,
    id: String,
    arrived: Instant,
    span: Span,
    /// The span again when its trace is exported and sampled: the engine records the queue and
    /// the steps on it (`AnytimeRequest::trace`).
    traced: Option<Span>,
}

/// A unary call's answer, with what the door decoded on the way.
pub struct Answered<T> {
    pub model: Arc<LoadedModel>,
    pub answer: AnytimeAnswer,
    /// The request's timestep bound (after its frames capped it).
    pub max_timesteps: usize,
    pub decoded: T,
}

/// A streamed call, started: its events come through `events`.
pub struct Streamed<T> {
    pub model: Arc<LoadedModel>,
    pub max_timesteps: usize,
    pub decoded: T,
    pub events: CallEvents,
}

/// A session, opened: frames go in through `sender`, events come out of `events`.
pub struct Session {
    pub model: Arc<LoadedModel>,
    pub policy: CutoffPolicy,
    pub sender: FrameSender,
    pub events: CallEvents,
}

impl Call {
    /// A call that arrived now at `door`, for `model` when the door knows it yet, with the id the
    /// client sent (kept when usable, else a new one), inside the caller's trace when it sent one
    /// (`parent`, from `telemetry::http_parent` or `grpc_parent`).
    pub fn arrive(
        door: &'static str,
        model: Option<&str>,
        given_id: Option<&str>,
        parent: Option<opentelemetry::Context>,
    ) -> Self {
        let arrived = Instant::now();
        let id = request_id(given_id);
        let span = tracing::info_span!(
            "request",
            door,
            id = id.as_str(),
            model = tracing::field::Empty,
            timesteps = tracing::field::Empty,
            exit_reason = tracing::field::Empty
        );
        // Before anything enters the span: the exported span takes its parent when first entered.
        if let Some(parent) = parent {
            telemetry::set_parent(&span, parent);
        }
        let traced = telemetry::sampled(&span);
        let mut call = Self { door, model: String::new(), id, arrived, span, traced };
        if let Some(model) = model {
            call.set_model(model);
        }
        call
    }

    /// Names the model once the door has read it (a session's `start` message).
    pub fn set_model(&mut self, model: &str) {
        self.model = model.to_owned();
        self.span.record("model", model);
    }

    /// Takes the id the client sent in the body (KServe's `id` field), when it sent one.
    pub fn adopt_id(&mut self, given: Option<&str>) {
        if given.is_some() {
            self.id = request_id(given);
            self.span.record("id", self.id.as_str());
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn door(&self) -> &'static str {
        self.door
    }

    pub fn arrived(&self) -> Instant {
        self.arrived
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Runs `f` inside the call's span (a door encoding an error logs it there).
    pub fn in_span<R>(&self, f: impl FnOnce() -> R) -> R {
        self.span.in_scope(f)
    }

    /// Counts a failure of this call in the metrics and hands it back for the door to encode.
    /// Every path of the pipeline ends here or in an answer, so no failure goes uncounted.
    pub fn failed(&self, error: ApiError) -> ApiError {
        error.count_for(&self.model);
        error
    }

    /// A unary call: looks the model up, lets the door decode its request (`decode` gets the call,
    /// to adopt a body's id, and the model), runs it, and records the exit.
    pub async fn answer<T>(
        &mut self,
        state: &ServerState,
        decode: impl FnOnce(&mut Call, &Arc<LoadedModel>) -> Result<(AnytimeRequest, T), ApiError>,
    ) -> Result<Answered<T>, ApiError> {
        let span = self.span.clone();
        let result = async {
            let model = state.model(&self.model)?;
            let (mut request, decoded) = decode(self, &model)?;
            request.trace = self.traced.clone();
            let max_timesteps = request.policy.max_timesteps;
            let answer = model.engine.infer(request).await?;
            record_exit(&answer);
            Ok(Answered { model, answer, max_timesteps, decoded })
        }
        .instrument(span)
        .await;
        result.map_err(|error| self.failed(error))
    }

    /// A streamed call: as [`Call::answer`], but the answer comes as partials then the final one.
    /// A refusal (overload, shutdown) is returned here, before the door commits to a stream.
    pub fn stream<T>(
        &mut self,
        state: &ServerState,
        decode: impl FnOnce(&mut Call, &Arc<LoadedModel>) -> Result<(AnytimeRequest, T), ApiError>,
    ) -> Result<Streamed<T>, ApiError> {
        let span = self.span.clone();
        let started = span.in_scope(|| {
            let model = state.model(&self.model)?;
            let (mut request, decoded) = decode(self, &model)?;
            request.trace = self.traced.clone();
            let max_timesteps = request.policy.max_timesteps;
            let events = stream_request(&model.engine, request)?;
            Ok((model, max_timesteps, decoded, events))
        });
        let (model, max_timesteps, decoded, events) = started.map_err(|error| self.failed(error))?;
        Ok(Streamed { model, max_timesteps, decoded, events: CallEvents::new(self, events) })
    }

    /// A session: the door's `policy` decodes the start message against the model; frames are
    /// pushed through the returned sender as they arrive.
    pub fn open_session(
        &mut self,
        state: &ServerState,
        policy: impl FnOnce(&Call, &Arc<LoadedModel>) -> Result<SessionPolicy, ApiError>,
    ) -> Result<Session, ApiError> {
        let span = self.span.clone();
        let opened = span.in_scope(|| {
            let model = state.model(&self.model)?;
            let start = policy(self, &model)?;
            let (partials_tx, partials) = mpsc::unbounded_channel();
            let (sender, answer) = model.engine.open_traced_stream(
                start.policy.clone(),
                start.deadline,
                start.priority,
                start.return_confidences,
                Some(partials_tx),
                self.traced.clone(),
            )?;
            Ok((model, start.policy, sender, forward(answer, partials)))
        });
        let (model, policy, sender, events) = opened.map_err(|error| self.failed(error))?;
        Ok(Session { model, policy, sender, events: CallEvents::new(self, events) })
    }
}

/// A streamed call's events. Each is observed inside the call's span as it passes: the final
/// answer is recorded as the call's exit, a failure is counted.
pub struct CallEvents {
    events: mpsc::Receiver<StreamEvent>,
    call: Call,
}

impl CallEvents {
    fn new(call: &Call, events: mpsc::Receiver<StreamEvent>) -> Self {
        Self { events, call: call.clone() }
    }

    /// The next event; `None` once the stream is over.
    pub async fn recv(&mut self) -> Option<StreamEvent> {
        let event = self.events.recv().await?;
        self.observe(&event);
        Some(event)
    }

    fn observe(&self, event: &StreamEvent) {
        match event {
            StreamEvent::Partial(_) => {}
            StreamEvent::Final(answer) => self.call.in_span(|| record_exit(answer)),
            StreamEvent::Failed(error) => error.count_for(&self.call.model),
        }
    }
}

impl Stream for CallEvents {
    type Item = StreamEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamEvent>> {
        let polled = self.events.poll_recv(cx);
        if let Poll::Ready(Some(event)) = &polled {
            self.observe(event);
        }
        polled
    }
}

/// Records the answer on the current span (the call's) and logs it: one line per request, under the
/// target `spikeserve::request` (silence it with `RUST_LOG=info,spikeserve::request=warn`).
fn record_exit(answer: &AnytimeAnswer) {
    let span = Span::current();
    let exit_reason = answer.exit_reason.as_str();
    // As i64: the OpenTelemetry layer turns unsigned fields into text, signed ones into numbers.
    span.record("timesteps", answer.timesteps as i64);
    span.record("exit_reason", exit_reason);
    tracing::info!(target: "spikeserve::request", timesteps = answer.timesteps, exit_reason, "answered");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_from_the_body_replaces_the_header_one_only_when_given() {
        let mut call = Call::arrive("kserve-http", Some("digits"), Some("from-header"), None);
        call.adopt_id(None);
        assert_eq!(call.id(), "from-header");
        call.adopt_id(Some("from-body"));
        assert_eq!(call.id(), "from-body");
        call.adopt_id(Some("not usable"));
        assert_eq!(call.id().len(), 36, "an unusable id is replaced by a new one");
    }
}
