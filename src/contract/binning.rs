//! Raw events `(x, y, t, p)` binned into frames, exactly as the training job does
//! (`training/spiketrain/events.py` defines the rule; `tests/vectors/event_binning.json` proves
//! both sides agree). Part of the contract: an events model states its binning in its metadata.
//!
//! The window `[0, window_us)` is cut into `bins` equal parts; event `(x, y, t, p)` lands in bin
//! `(t * bins) / window_us` (integer division) and adds 1 to pixel `(p, y, x)` of that bin's frame.

use serde::{Deserialize, Serialize};

/// How a model's events become frames; stored in the model's metadata as `spikeserve.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBinning {
    pub width: usize,
    pub height: usize,
    pub polarities: usize,
    pub window_us: u64,
    pub bins: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("events: expected an array of [x, y, t, p] rows, found {0}")]
    NotAnArray(&'static str),
    #[error("events[{index}]: expected [x, y, t, p] as four integers")]
    NotAnEvent { index: usize },
    #[error("events[{index}]: {field} = {value} is {what}")]
    OutOfRange { index: usize, field: &'static str, value: i64, what: String },
    #[error("events[{index}]: t = {t} is earlier than the event before it")]
    OutOfOrder { index: usize, t: i64 },
    #[error("events: none given")]
    Empty,
}

/// One event: x, y, t (microseconds from the start of the sample), p.
pub type Event = [i64; 4];

impl EventBinning {
    /// Shape of one frame: `[polarities, height, width]`.
    pub fn frame_shape(&self) -> [usize; 3] {
        [self.polarities, self.height, self.width]
    }

    pub fn frame_len(&self) -> usize {
        self.polarities * self.height * self.width
    }

    /// Checks the binning's own parameters (from a model's metadata).
    pub fn check(&self) -> Result<(), String> {
        if self.width == 0
            || self.height == 0
            || self.polarities == 0
            || self.window_us == 0
            || self.bins == 0
        {
            return Err(format!("every parameter must be positive, found {self:?}"));
        }
        Ok(())
    }

    /// Checks every event; the first broken rule, in the training job's order, is the error.
    pub fn validate(&self, events: &[Event]) -> Result<(), EventError> {
        let limits: [(&str, i64, String); 4] = [
            ("x", self.width as i64, format!("outside the sensor's {} columns", self.width)),
            ("y", self.height as i64, format!("outside the sensor's {} rows", self.height)),
            ("t", self.window_us as i64, format!("outside the {} us window", self.window_us)),
            ("p", self.polarities as i64, format!("not one of the {} polarities", self.polarities)),
        ];
        for (column, (field, high, what)) in limits.iter().enumerate() {
            if let Some(index) = events.iter().position(|e| e[column] < 0 || e[column] >= *high) {
                return Err(EventError::OutOfRange {
                    index,
                    field,
                    value: events[index][column],
                    what: what.clone(),
                });
            }
        }
        if let Some(index) = events.windows(2).position(|pair| pair[1][2] < pair[0][2]) {
            return Err(EventError::OutOfOrder { index: index + 1, t: events[index + 1][2] });
        }
        Ok(())
    }

    /// Bins `events` into `bins` frames, back to back (`bins * polarities * height * width`).
    pub fn bin(&self, events: &[Event]) -> Result<Vec<f32>, EventError> {
        if events.is_empty() {
            return Err(EventError::Empty);
        }
        self.validate(events)?;
        let frame_len = self.frame_len();
        let mut frames = vec![0.0f32; self.bins * frame_len];
        for &[x, y, t, p] in events {
            // Validated above: all four are non-negative and in range.
            let bin = (t as u64 * self.bins as u64 / self.window_us) as usize;
            let pixel = (p as usize * self.height + y as usize) * self.width + x as usize;
            frames[bin * frame_len + pixel] += 1.0;
        }
        Ok(frames)
    }
}
