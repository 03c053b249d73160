//! Where a request's frames come from: one static frame, a sequence sent whole, or a stream of
//! frames that arrive while the request is already stepping. What input decoding produces and the
//! engine steps; the sending side of a stream (which wakes the scheduler) is the engine's
//! `FrameSender`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The input of one request, already checked against the model's shapes.
#[derive(Debug, Clone)]
pub enum RequestFrames {
    /// One frame fed at every timestep.
    Static(Vec<f32>),
    /// `count` frames back to back, one per timestep.
    Sequence { data: Vec<f32>, count: usize },
    /// Frames pushed through the engine's `FrameSender` as they are captured; the request steps as they come.
    Stream(Arc<FrameBuffer>),
}

impl RequestFrames {
    /// Makes the frame for the next timestep available, if it is. Static and sequence frames
    /// always are (a sequence caps `max_timesteps` at its length); a stream's may not have arrived.
    pub(crate) fn next_ready(&self, current: &mut Option<Vec<f32>>) -> Readiness {
        match self {
            Self::Static(_) | Self::Sequence { .. } => Readiness::Ready,
            Self::Stream(buffer) => {
                if current.is_some() {
                    return Readiness::Ready;
                }
                // `closed` is read before the queue: a sender pushes its frames before it closes,
                // so a stream seen closed here has every frame in the queue already. (Read after
                // an empty pop, a push and close landing in between would drop the frame: the
                // soak found it, one session in ~100k.)
                let closed = buffer.is_closed();
                match buffer.pop() {
                    Some(frame) => {
                        *current = Some(frame);
                        Readiness::Ready
                    }
                    None if closed => Readiness::Exhausted,
                    None => Readiness::Waiting,
                }
            }
        }
    }

    /// The frame for `timestep` (0-based), once [`Self::next_ready`] said `Ready`.
    pub(crate) fn frame<'a>(
        &'a self,
        timestep: usize,
        frame_len: usize,
        current: &'a Option<Vec<f32>>,
    ) -> &'a [f32] {
        match self {
            Self::Static(data) => data,
            Self::Sequence { data, .. } => {
                data.get(timestep * frame_len..(timestep + 1) * frame_len).unwrap_or(&[])
            }
            Self::Stream(_) => current.as_deref().unwrap_or(&[]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    /// A stream whose next frame has not arrived yet.
    Waiting,
    /// A stream that ended: no more frames will come.
    Exhausted,
}

/// Frames of a streamed request, shared between its sender and the scheduler.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    frames: Mutex<VecDeque<Vec<f32>>>,
    closed: AtomicBool,
}

impl FrameBuffer {
    fn pop(&self) -> Option<Vec<f32>> {
        self.frames.lock().ok()?.pop_front()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queues `frame`; false when the lock is poisoned (the other side panicked).
    pub(crate) fn push(&self, frame: Vec<f32>) -> bool {
        self.frames.lock().map(|mut frames| frames.push_back(frame)).is_ok()
    }

    /// Closes the stream; true when this call closed it (it was open).
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::AcqRel)
    }
}
