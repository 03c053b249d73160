//! The server's gRPC calls the tools make: unary, server stream, session (bidirectional) and the
//! empty health check, each carrying the token when there is one; and one loop that follows a
//! stream of partials to its final answer.

use std::ops::ControlFlow;

use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Status, Streaming};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::access::{with_authorization, ClientAccess};

/// The anytime service and the health service on one channel (cheap to clone: HTTP/2 streams
/// multiplex on the channel).
#[derive(Clone)]
pub struct Grpc {
    anytime: AnytimeClient<Channel>,
    health: HealthClient<Channel>,
    authorization: Option<MetadataValue<Ascii>>,
}

impl Grpc {
    /// Connects to `address` (TLS for `https://`) with `access`'s trust and token.
    pub async fn connect(access: &ClientAccess, address: &str) -> anyhow::Result<Self> {
        let channel = access.grpc_channel(address).await?;
        Ok(Self::new(channel, access.grpc_authorization()?))
    }

    pub fn new(channel: Channel, authorization: Option<MetadataValue<Ascii>>) -> Self {
        Self {
            anytime: AnytimeClient::new(channel.clone()),
            health: HealthClient::new(channel),
            authorization,
        }
    }

    /// Accepts answers up to `limit` bytes from the anytime service (tonic's default is 4 MiB).
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.anytime = self.anytime.max_decoding_message_size(limit);
        self
    }

    /// `Infer`: the final answer only.
    pub async fn infer(&self, request: pb::InferRequest) -> Result<pb::InferResponse, Status> {
        let mut client = self.anytime.clone();
        Ok(client.infer(self.authorized(request)).await?.into_inner())
    }

    /// `InferStream`: a partial per timestep, then the final answer.
    pub async fn infer_stream(
        &self,
        request: pb::InferRequest,
    ) -> Result<Streaming<pb::InferStreamResponse>, Status> {
        let mut client = self.anytime.clone();
        Ok(client.infer_stream(self.authorized(request)).await?.into_inner())
    }

    /// `Session`: `request`'s input sent frame by frame (see [`session_messages`]), then a half-close;
    /// the answers come as from `InferStream`.
    pub async fn session(
        &self,
        request: &pb::InferRequest,
        frame_len: usize,
        timesteps: usize,
    ) -> Result<Streaming<pb::InferStreamResponse>, Status> {
        let messages = session_messages(request, frame_len, timesteps);
        let (tx, rx) = tokio::sync::mpsc::channel(messages.len().max(1));
        for message in messages {
            // The channel holds them all; the call half-closes when `tx` is dropped here.
            let _ = tx.try_send(message);
        }
        drop(tx);
        let mut client = self.anytime.clone();
        Ok(client.session(self.authorized(ReceiverStream::new(rx))).await?.into_inner())
    }

    /// `grpc.health.v1.Health/Check` for the whole server: no model, just the round trip.
    pub async fn health(&self) -> Result<(), Status> {
        let mut client = self.health.clone();
        client.check(self.authorized(HealthCheckRequest { service: String::new() })).await?;
        Ok(())
    }

    fn authorized<T>(&self, message: T) -> tonic::Request<T> {
        with_authorization(message, self.authorization.as_ref())
    }
}

/// A session's messages for `request`: the start (model and policy), then the input. A static
/// input (one frame) is sent at every timestep, a sequence frame by frame; events go in two chunks.
pub fn session_messages(
    request: &pb::InferRequest,
    frame_len: usize,
    timesteps: usize,
) -> Vec<pb::SessionRequest> {
    use pb::session_request::Message;
    let start = pb::SessionStart {
        model: request.model.clone(),
        policy: request.policy.clone(),
        ..Default::default()
    };
    let mut messages = vec![Message::Start(start)];
    match &request.input {
        Some(pb::infer_request::Input::Tensor(tensor)) => {
            let frames: Vec<&[f32]> = if tensor.values.len() == frame_len {
                vec![&tensor.values; timesteps]
            } else {
                tensor.values.chunks(frame_len.max(1)).collect()
            };
            for values in frames {
                messages.push(Message::Frame(pb::Tensor { shape: vec![], values: values.to_vec() }));
            }
        }
        Some(pb::infer_request::Input::Events(events)) => {
            let half = events.x.len() / 2;
            let part = |range: std::ops::Range<usize>| pb::Events {
                x: events.x[range.clone()].to_vec(),
                y: events.y[range.clone()].to_vec(),
                t_us: events.t_us[range.clone()].to_vec(),
                p: events.p[range].to_vec(),
            };
            messages.push(Message::Events(part(0..half)));
            messages.push(Message::Events(part(half..events.x.len())));
        }
        None => {}
    }
    messages.into_iter().map(|message| pb::SessionRequest { message: Some(message) }).collect()
}

/// How a followed stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// Boxed: an answer is large beside the other ends.
    Final(Box<pb::InferResponse>),
    /// The caller stopped at a partial.
    Stopped,
    /// The stream closed without a final answer.
    Closed,
    Failed(Status),
}

/// Reads `stream` to its final answer, handing each partial to `on_partial`, which may stop there.
pub async fn follow(
    stream: &mut Streaming<pb::InferStreamResponse>,
    mut on_partial: impl FnMut(&pb::Partial) -> ControlFlow<()>,
) -> StreamEnd {
    loop {
        match stream.message().await {
            Ok(Some(message)) => match message.message {
                Some(pb::infer_stream_response::Message::Partial(partial))
                    if on_partial(&partial).is_break() =>
                {
                    return StreamEnd::Stopped
                }
                Some(pb::infer_stream_response::Message::Final(answer)) => {
                    return StreamEnd::Final(Box::new(answer))
                }
                Some(pb::infer_stream_response::Message::Partial(_)) | None => {}
            },
            Ok(None) => return StreamEnd::Closed,
            Err(status) => return StreamEnd::Failed(status),
        }
    }
}

/// An exit reason's wire value as its name (`confident`, `max_timesteps`, ...).
pub fn exit_name(reason: i32) -> String {
    pb::ExitReason::try_from(reason)
        .map(|r| r.as_str_name().trim_start_matches("EXIT_REASON_").to_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor_request(values: Vec<f32>) -> pb::InferRequest {
        pb::InferRequest {
            model: "m".into(),
            input: Some(pb::infer_request::Input::Tensor(pb::Tensor { shape: vec![], values })),
            ..Default::default()
        }
    }

    fn frames(messages: &[pb::SessionRequest]) -> Vec<Vec<f32>> {
        messages
            .iter()
            .filter_map(|m| match &m.message {
                Some(pb::session_request::Message::Frame(t)) => Some(t.values.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_static_input_is_sent_at_every_timestep_and_a_sequence_frame_by_frame() {
        let messages = session_messages(&tensor_request(vec![1.0, 2.0]), 2, 3);
        assert!(matches!(messages[0].message, Some(pb::session_request::Message::Start(_))));
        assert_eq!(frames(&messages), vec![vec![1.0, 2.0]; 3]);
        let messages = session_messages(&tensor_request(vec![1.0, 2.0, 3.0, 4.0]), 2, 2);
        assert_eq!(frames(&messages), vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
    }

    #[test]
    fn events_go_in_two_chunks() {
        let events = pb::Events { x: vec![1, 2, 3], y: vec![0; 3], t_us: vec![10, 20, 30], p: vec![1; 3] };
        let request =
            pb::InferRequest { input: Some(pb::infer_request::Input::Events(events)), ..Default::default() };
        let chunks: Vec<Vec<i64>> = session_messages(&request, 4, 4)
            .iter()
            .filter_map(|m| match &m.message {
                Some(pb::session_request::Message::Events(e)) => Some(e.x.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(chunks, vec![vec![1], vec![2, 3]]);
    }

    #[test]
    fn exit_reasons_are_named_as_the_http_answers_name_them() {
        assert_eq!(exit_name(pb::ExitReason::MaxTimesteps as i32), "max_timesteps");
        assert_eq!(exit_name(-1), "unknown");
    }
}
