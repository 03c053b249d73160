//! A request answered as a stream: one partial prediction per timestep, then the final answer.
//! Shared by SSE, gRPC `InferStream`/`Session` and KServe `ModelStreamInfer`; each door only
//! changes the wire format.

use tokio::sync::mpsc;

use super::error::ApiError;
use crate::engine::{AnytimeAnswer, AnytimeRequest, Engine, Partial, PendingAnswer};

#[derive(Debug)]
pub enum StreamEvent {
    Partial(Partial),
    Final(AnytimeAnswer),
    /// The request failed after it started; the stream ends with this.
    Failed(ApiError),
}

/// How many events may wait for a slow reader before the forwarding task waits too (partials are
/// few: at most one per timestep).
const STREAM_BUFFER: usize = 64;

/// Queues `request` with partials on. A refusal (overload, shutdown) is returned here, before any
/// response is committed; what happens later arrives on the returned channel.
pub fn stream_request(
    engine: &Engine,
    mut request: AnytimeRequest,
) -> Result<mpsc::Receiver<StreamEvent>, ApiError> {
    let (partials_tx, partials) = mpsc::unbounded_channel();
    request.partials = Some(partials_tx);
    let answer = engine.enqueue(request)?;
    Ok(forward(answer, partials))
}

/// Forwards partials, then the answer, until the reader goes away (which drops the pending
/// answer and so cancels the request at its next timestep).
pub fn forward(
    answer: PendingAnswer,
    mut partials: mpsc::UnboundedReceiver<Partial>,
) -> mpsc::Receiver<StreamEvent> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let answer = answer.wait();
        tokio::pin!(answer);
        loop {
            tokio::select! {
                biased;
                Some(partial) = partials.recv() => {
                    if tx.send(StreamEvent::Partial(partial)).await.is_err() {
                        return;
                    }
                }
                result = &mut answer => {
                    // The scheduler sends a step's partial before its answer; pass on any left.
                    while let Ok(partial) = partials.try_recv() {
                        if tx.send(StreamEvent::Partial(partial)).await.is_err() {
                            return;
                        }
                    }
                    let last = match result {
                        Ok(answer) => StreamEvent::Final(answer),
                        Err(error) => StreamEvent::Failed(error.into()),
                    };
                    let _ = tx.send(last).await;
                    return;
                }
                () = tx.closed() => return,
            }
        }
    });
    rx
}
