//! Raw events `(x, y, t, p)` binned into frames, exactly as the training job does
//! (`training/spiketrain/events.py` defines the rule; `tests/vectors/event_binning.json` proves
//! both sides agree). Part of the contract: an events model states its binning in its metadata.
//!
//! Two rules (the binning's `mode`). `time` (the default): the window `[0, window_us)` is cut into
//! `bins` equal parts; event `(x, y, t, p)` lands in bin `(t * bins) / window_us` (integer
//! division). `count` (`events_per_bin` = K): event number `i` of the sample (0-based, in time
//! order) lands in bin `i / K`; bins after the last event stay empty and events past `bins * K` are
//! dropped (counted, never an error: a live camera keeps sending after the model's last timestep).
//! Either way the event adds 1 to pixel `(p, y, x)` of its bin's frame, and every event (a dropped
//! one too) must pass the same checks.

use serde::{Deserialize, Serialize};

/// Which rule cuts a sample's events into bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum BinningMode {
    /// Equal-time bins over the window (every model's rule before `mode` existed).
    #[default]
    Time,
    /// Equal-event-count bins of `events_per_bin` events.
    Count,
}

impl BinningMode {
    pub fn is_time(&self) -> bool {
        *self == Self::Time
    }
}

impl TryFrom<String> for BinningMode {
    type Error = String;

    /// Parsed by hand so that a model with an unknown mode is refused with the field named.
    fn try_from(mode: String) -> Result<Self, String> {
        match mode.as_str() {
            "time" => Ok(Self::Time),
            "count" => Ok(Self::Count),
            other => Err(format!("mode: {other:?} is not a binning mode (\"time\" or \"count\")")),
        }
    }
}

/// How a model's events become frames; stored in the model's metadata as `spikeserve.events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBinning {
    pub width: usize,
    pub height: usize,
    pub polarities: usize,
    pub window_us: u64,
    pub bins: usize,
    /// `time` (the default, left out of the metadata) or `count`.
    #[serde(default, skip_serializing_if = "BinningMode::is_time")]
    pub mode: BinningMode,
    /// K, the events of one bin: `count` mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_bin: Option<u64>,
}

/// Frames binned from one sample's events, and how many events had no bin left (`count` mode).
#[derive(Debug, Clone, PartialEq)]
pub struct Binned {
    /// `bins` frames, back to back.
    pub frames: Vec<f32>,
    pub dropped: usize,
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

    /// A time binning (the rule of every model without a `mode`).
    pub const fn by_time(
        width: usize,
        height: usize,
        polarities: usize,
        window_us: u64,
        bins: usize,
    ) -> Self {
        Self { width, height, polarities, window_us, bins, mode: BinningMode::Time, events_per_bin: None }
    }

    /// The same sensor, window and bins, binned by count: `events_per_bin` events a bin.
    pub const fn by_count(self, events_per_bin: u64) -> Self {
        Self { mode: BinningMode::Count, events_per_bin: Some(events_per_bin), ..self }
    }

    /// K for a count binning (checked positive when the model loaded), `None` for a time binning.
    pub fn count_per_bin(&self) -> Option<u64> {
        match self.mode {
            BinningMode::Time => None,
            // `check` refuses a count binning without a positive K when the model loads; a binning
            // built in code without one bins an event a bin rather than divide by zero.
            BinningMode::Count => Some(self.events_per_bin.unwrap_or(1).max(1)),
        }
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
        match (self.mode, self.events_per_bin) {
            (BinningMode::Count, None | Some(0)) => {
                Err("events_per_bin: count binning needs a positive number of events per bin".into())
            }
            (BinningMode::Time, Some(_)) => {
                Err("events_per_bin: only count binning (\"mode\": \"count\") has one".into())
            }
            _ => Ok(()),
        }
    }

    /// The bin of the `index`-th event of a sample (0-based), at time `t` (validated): the rule.
    /// In `count` mode a bin `>= bins` means the event is dropped.
    pub fn bin_of(&self, index: usize, t: i64) -> usize {
        match self.count_per_bin() {
            // u64 index: no overflow for any slice length on a 64-bit or smaller target.
            Some(k) => (index as u64 / k) as usize,
            None => (t as u64 * self.bins as u64 / self.window_us) as usize,
        }
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
        self.bin_counted(events).map(|binned| binned.frames)
    }

    /// [`Self::bin`], with the number of events dropped (past `bins * K`, `count` mode).
    pub fn bin_counted(&self, events: &[Event]) -> Result<Binned, EventError> {
        if events.is_empty() {
            return Err(EventError::Empty);
        }
        self.validate(events)?;
        let frame_len = self.frame_len();
        let mut frames = vec![0.0f32; self.bins * frame_len];
        let mut dropped = 0;
        for (index, &[x, y, t, p]) in events.iter().enumerate() {
            // Validated above: all four are non-negative and in range.
            let bin = self.bin_of(index, t);
            if bin >= self.bins {
                dropped += 1;
                continue;
            }
            let pixel = (p as usize * self.height + y as usize) * self.width + x as usize;
            frames[bin * frame_len + pixel] += 1.0;
        }
        Ok(Binned { frames, dropped })
    }
}
