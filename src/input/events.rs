//! Events from requests: a chunked stream binned as it arrives, and the JSON decoder. The binning
//! rule itself is the contract's ([`EventBinning`]); its types are re-exported here for the API.

pub use super::json_events::decode_json_events;
pub use crate::contract::{Event, EventBinning, EventError};

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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

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
