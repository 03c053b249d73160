//! The sending side of a streamed request: frames pushed while the request is already stepping,
//! each one waking the scheduler. The frames themselves
//! ([`RequestFrames`](crate::input::RequestFrames)) are the input layer's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use super::request::Message;
use crate::input::FrameBuffer;

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
        if !self.buffer.push(frame) {
            return Err(StreamError::Gone);
        }
        self.sent.store(index + 1, Ordering::Relaxed);
        self.wake.send(Message::Wake).map_err(|_| StreamError::Gone)
    }

    /// No more frames: the request answers after stepping those already sent.
    pub fn finish(&self) {
        if self.buffer.close() {
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
    use crate::input::{Readiness, RequestFrames};

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
