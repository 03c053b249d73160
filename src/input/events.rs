//! Raw events `(x, y, t, p)` binned into frames, exactly as the training job does
//! (`training/spiketrain/events.py` defines the rule; `tests/vectors/event_binning.json` proves
//! both sides agree).
//!
//! The window `[0, window_us)` is cut into `bins` equal parts; event `(x, y, t, p)` lands in bin
//! `(t * bins) / window_us` (integer division) and adds 1 to pixel `(p, y, x)` of that bin's frame.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::json_events::JsonEvents;

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

/// Bins events that arrive in chunks (a live event camera): a bin's frame is complete, and handed
/// out, once an event past its time window arrives, or when the stream ends. The frames equal
/// [`EventBinning::bin`] over all the events at once.
#[derive(Debug)]
pub struct StreamingBinner {
    binning: EventBinning,
    /// The bin being filled.
    bin: usize,
    frame: Vec<f32>,
    /// Events taken so far (for error messages) and the last timestamp (for the order check).
    seen: usize,
    last_t: i64,
}

impl StreamingBinner {
    pub fn new(binning: EventBinning) -> Self {
        Self { binning, bin: 0, frame: vec![0.0; binning.frame_len()], seen: 0, last_t: 0 }
    }

    /// Takes the next chunk; returns the frames it completed. Event indices in errors count from
    /// the start of the stream.
    pub fn push(&mut self, events: &[Event]) -> Result<Vec<Vec<f32>>, EventError> {
        let shift = |e: EventError| match e {
            EventError::OutOfRange { index, field, value, what } => {
                EventError::OutOfRange { index: index + self.seen, field, value, what }
            }
            EventError::OutOfOrder { index, t } => EventError::OutOfOrder { index: index + self.seen, t },
            other => other,
        };
        self.binning.validate(events).map_err(shift)?;
        if let Some(first) = events.first() {
            if first[2] < self.last_t {
                return Err(EventError::OutOfOrder { index: self.seen, t: first[2] });
            }
        }
        let b = &self.binning;
        let mut done = Vec::new();
        for &[x, y, t, p] in events {
            let bin = (t as u64 * b.bins as u64 / b.window_us) as usize;
            while self.bin < bin {
                done.push(std::mem::replace(&mut self.frame, vec![0.0; b.frame_len()]));
                self.bin += 1;
            }
            let pixel = (p as usize * b.height + y as usize) * b.width + x as usize;
            self.frame[pixel] += 1.0;
            self.last_t = t;
        }
        self.seen += events.len();
        Ok(done)
    }

    /// The stream ended: the bin being filled is its last frame. Later bins are not stepped (a
    /// client that stops sending ends the request early, with the best answer so far).
    pub fn finish(self) -> Option<Vec<f32>> {
        (self.seen > 0).then_some(self.frame)
    }
}

/// Reads `[[x, y, t, p], ...]` from a JSON value, by the rule of [`JsonEvents`] (which `/v1` bodies
/// apply while they are parsed, without a tree).
pub fn decode_json_events(value: &Value) -> Result<Vec<Event>, EventError> {
    match JsonEvents::deserialize(value) {
        Ok(events) => events.0,
        // Not reached: `JsonEvents` takes every kind of JSON value and keeps its verdict on it.
        Err(_) => Err(EventError::NotAnArray("a value that cannot be read")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The shared vectors written by `python -m spiketrain.events --write-vectors`.
    #[test]
    fn bins_exactly_like_the_training_job() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/event_binning.json");
        let vectors: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
        let cases = vectors["cases"].as_array().expect("cases");
        assert!(cases.len() >= 8);
        for case in cases {
            let name = case["name"].as_str().expect("name");
            let binning: EventBinning = serde_json::from_value(case["binning"].clone()).expect("binning");
            let events = decode_json_events(&case["events"]).expect("events decode");
            match case.get("error").and_then(Value::as_str) {
                Some(message) => {
                    let error = binning.bin(&events).expect_err(name);
                    assert_eq!(error.to_string(), message, "case {name}");
                }
                None => {
                    let frames = binning.bin(&events).expect(name);
                    let [p, h, w] = binning.frame_shape();
                    let mut expected = vec![0.0f32; frames.len()];
                    for entry in case["expected_nonzero"].as_array().expect("expected") {
                        let v: Vec<f64> =
                            entry.as_array().expect("row").iter().flat_map(Value::as_f64).collect();
                        let index =
                            (((v[0] as usize * p + v[1] as usize) * h + v[2] as usize) * w) + v[3] as usize;
                        expected[index] = v[4] as f32;
                    }
                    assert_eq!(frames, expected, "case {name}");
                }
            }
        }
    }

    #[test]
    fn chunks_bin_like_the_whole_stream() {
        let binning = EventBinning { width: 4, height: 3, polarities: 2, window_us: 1000, bins: 5 };
        let events: Vec<Event> =
            (0..40).map(|i| [i % 4, (i / 4) % 3, i * 24, i % 2]).filter(|e| e[2] < 1000).collect();
        let whole = binning.bin(&events).expect("bins");
        for chunk in [1, 3, 7, 40] {
            let mut streaming = StreamingBinner::new(binning);
            let mut frames: Vec<f32> = Vec::new();
            for part in events.chunks(chunk) {
                frames.extend(streaming.push(part).expect("chunk").into_iter().flatten());
            }
            frames.extend(streaming.finish().expect("last frame"));
            assert_eq!(frames, whole, "chunks of {chunk}");
        }
        let mut streaming = StreamingBinner::new(binning);
        streaming.push(&[[0, 0, 500, 0], [1, 1, 600, 1]]).expect("in order");
        assert_eq!(streaming.push(&[[0, 0, 100, 0]]), Err(EventError::OutOfOrder { index: 2, t: 100 }));
        let err = streaming.push(&[[9, 0, 700, 0]]).unwrap_err();
        assert_eq!(err.to_string(), "events[2]: x = 9 is outside the sensor's 4 columns");
    }

    #[test]
    fn request_events_must_be_integer_quadruples() {
        assert_eq!(decode_json_events(&json!([[1, 2, 3, 0]])), Ok(vec![[1, 2, 3, 0]]));
        assert_eq!(
            decode_json_events(&json!([[1, 2, 3, 0], [1, 2, 3]])),
            Err(EventError::NotAnEvent { index: 1 })
        );
        assert_eq!(decode_json_events(&json!([[1, 2, 3.5, 0]])), Err(EventError::NotAnEvent { index: 0 }));
        assert_eq!(decode_json_events(&json!([])), Err(EventError::Empty));
        assert_eq!(decode_json_events(&json!({"x": 1})), Err(EventError::NotAnArray("an object")));
    }
}
