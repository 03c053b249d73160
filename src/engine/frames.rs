//! Where a request's frames come from: one static frame, a sequence sent whole, or a stream of
//! frames that arrive while the request is already stepping.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use super::Message;

/// The input of one request, already checked against the model's shapes.
#[derive(Debug, Clone)]
pub enum RequestFrames {
    /// One frame fed at every timestep.
    Static(Vec<f32>),
    /// `count` frames back to back, one per timestep.
    Sequence { data: Vec<f32>, count: usize },
    /// Frames pushed through a [`FrameSender`] as they are captured; the request steps as they come.
    Stream(Arc<FrameBuffer>),
}

impl RequestFrames {
    /// Makes the frame for the next timestep available, if it is. Static and sequence frames
    /// always are (a sequence caps `max_timesteps` at its length); a stream's may not have arrived.
    pub(super) fn next_ready(&self, current: &mut Option<Vec<f32>>) -> Readiness {
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
    pub(super) fn frame<'a>(
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
pub(super) enum Readiness {
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

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamError {
    #[error("frame {index}: has {found} values, the model's frame has {expected}")]
    FrameLength { index: usize, found: usize, expected: usize },
    #[error("frame {index}: the model runs at most {max} timesteps")]
    TooManyFrames { index: usize, max: usize },
    #[error("frame {index}: value {value} at position {position} is not finite")]
    NotFinite { index: usize, position: usize, value: f32 },
    #[error("the stream was already finished")]
    Finished,
    #[error("the request is over; no more frames are taken")]
    Gone,
}

/// The sending side of a streamed request. Dropping it finishes the stream.
#[derive(Debug)]
pub struct FrameSender {
    buffer: Arc<FrameBuffer>,
    wake: Sender<Message>,
    sent: AtomicUsize,
    frame_len: usize,
    max_frames: usize,
}

impl FrameSender {
    pub(super) fn new(
        buffer: Arc<FrameBuffer>,
        wake: Sender<Message>,
        frame_len: usize,
        max_frames: usize,
    ) -> Self {
        Self { buffer, wake, sent: AtomicUsize::new(0), frame_len, max_frames }
    }

    /// Queues the next frame; the request steps on it at the next timestep.
    pub fn push(&self, frame: Vec<f32>) -> Result<(), StreamError> {
        let index = self.sent.load(Ordering::Relaxed);
        if self.buffer.is_closed() {
            return Err(StreamError::Finished);
        }
        if Arc::strong_count(&self.buffer) == 1 {
            // The scheduler let go of the request: it answered (deadline, confidence) or was cancelled.
            return Err(StreamError::Gone);
        }
        if frame.len() != self.frame_len {
            return Err(StreamError::FrameLength { index, found: frame.len(), expected: self.frame_len });
        }
        if index >= self.max_frames {
            return Err(StreamError::TooManyFrames { index, max: self.max_frames });
        }
        if let Some((position, value)) = frame.iter().copied().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(StreamError::NotFinite { index, position, value });
        }
        self.buffer.frames.lock().map_err(|_| StreamError::Gone)?.push_back(frame);
        self.sent.store(index + 1, Ordering::Relaxed);
        self.wake.send(Message::Wake).map_err(|_| StreamError::Gone)
    }

    /// No more frames: the request answers after stepping those already sent.
    pub fn finish(&self) {
        if !self.buffer.closed.swap(true, Ordering::AcqRel) {
            let _ = self.wake.send(Message::Wake);
        }
    }

    pub fn frames_sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame pushed and the stream closed while the scheduler looks is never taken for an
    /// exhausted stream.
    #[test]
    fn a_frame_pushed_just_before_the_close_is_never_lost() {
        for _ in 0..5000 {
            let buffer = Arc::new(FrameBuffer::default());
            let (wake, _woken) = std::sync::mpsc::channel();
            let sender = FrameSender::new(buffer.clone(), wake, 1, 8);
            let frames = RequestFrames::Stream(buffer);
            let pusher = std::thread::spawn(move || {
                sender.push(vec![1.0]).map_err(|e| e.to_string())?;
                sender.finish();
                Ok::<(), String>(())
            });
            let mut current = None;
            let readiness = loop {
                match frames.next_ready(&mut current) {
                    Readiness::Waiting => std::hint::spin_loop(),
                    other => break other,
                }
            };
            assert_eq!(readiness, Readiness::Ready);
            assert_eq!(current, Some(vec![1.0]));
            pusher.join().expect("pusher").expect("pushed");
        }
    }
}
