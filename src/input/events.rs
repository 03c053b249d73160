//! Events from requests: a chunked stream binned as it arrives, and the JSON decoder. The binning
//! rule itself is the contract's ([`EventBinning`]); its types are re-exported here for the API.

pub use super::json_events::decode_json_events;
pub use crate::contract::{Event, EventBinning, EventError};

/// Bins events that arrive in chunks (a live event camera) and hands out each frame as soon as it is
/// complete. A time bin is complete once an event past its time window arrives; a count bin once
/// its K-th event arrives (the model can step then, without waiting for the window to pass). The
/// bin being filled when the stream ends is its last frame. The frames equal [`EventBinning::bin`]
/// over all the events at once, up to the last non-empty one.
#[derive(Debug)]
pub struct StreamingBinner {
    binning: EventBinning,
    /// The bin being filled (`bins` once every bin was handed out, count mode).
    bin: usize,
    frame: Vec<f32>,
    /// Events in `frame`.
    in_frame: usize,
    /// Events taken so far (for error messages and the count rule) and the last timestamp (for the
    /// order check).
    seen: usize,
    last_t: i64,
    /// Events past the last bin (count mode), left out.
    dropped: usize,
}

impl StreamingBinner {
    pub fn new(binning: EventBinning) -> Self {
        Self {
            binning,
            bin: 0,
            frame: vec![0.0; binning.frame_len()],
            in_frame: 0,
            seen: 0,
            last_t: 0,
            dropped: 0,
        }
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
        let b = self.binning;
        let per_bin = b.count_per_bin();
        let mut done = Vec::new();
        for (offset, &[x, y, t, p]) in events.iter().enumerate() {
            self.last_t = t;
            let bin = b.bin_of(self.seen + offset, t);
            if bin >= b.bins {
                self.dropped += 1;
                continue;
            }
            while self.bin < bin {
                done.push(self.take_frame());
            }
            let pixel = (p as usize * b.height + y as usize) * b.width + x as usize;
            self.frame[pixel] += 1.0;
            self.in_frame += 1;
            // A count bin is complete with its K-th event: hand it out now, not when the next
            // event arrives (which may be much later).
            if per_bin.is_some_and(|k| self.in_frame as u64 == k) {
                done.push(self.take_frame());
            }
        }
        self.seen += events.len();
        Ok(done)
    }

    fn take_frame(&mut self) -> Vec<f32> {
        self.bin += 1;
        self.in_frame = 0;
        std::mem::replace(&mut self.frame, vec![0.0; self.binning.frame_len()])
    }

    /// Events left out so far because every bin was full (count mode).
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The stream ended: the bin being filled, if it holds an event, is its last frame. Later
    /// bins are not stepped (a client that stops sending ends the request early, with the best
    /// answer so far).
    pub fn finish(self) -> Option<Vec<f32>> {
        (self.in_frame > 0).then_some(self.frame)
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
                    let binned = binning.bin_counted(&events).expect(name);
                    assert_eq!(Some(binned.dropped as u64), case["dropped"].as_u64(), "case {name}: dropped");
                    let frames = binned.frames;
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
                    // Streamed event by event, a session sees the same frames (up to the last
                    // non-empty one) and drops the same events.
                    let mut streaming = StreamingBinner::new(binning);
                    let mut streamed: Vec<f32> = Vec::new();
                    for event in &events {
                        streamed.extend(streaming.push(&[*event]).expect(name).into_iter().flatten());
                    }
                    assert_eq!(streaming.dropped(), binned.dropped, "case {name}: dropped while streaming");
                    streamed.extend(streaming.finish().into_iter().flatten());
                    assert_eq!(streamed[..], expected[..streamed.len()], "case {name}: streamed");
                    assert!(expected[streamed.len()..].iter().all(|&v| v == 0.0), "case {name}: streamed");
                }
            }
        }
    }

    #[test]
    fn chunks_bin_like_the_whole_stream() {
        let binning = EventBinning::by_time(4, 3, 2, 1000, 5);
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
    fn a_count_bin_is_handed_out_with_its_last_event() {
        let binning = EventBinning::by_time(4, 3, 2, 1000, 3).by_count(2);
        let mut streaming = StreamingBinner::new(binning);
        // The second event completes bin 0 at once; the third waits for its partner.
        assert_eq!(streaming.push(&[[0, 0, 10, 0]]).expect("first").len(), 0);
        assert_eq!(streaming.push(&[[1, 0, 11, 1]]).expect("second").len(), 1);
        assert_eq!(streaming.push(&[[2, 0, 500, 0]]).expect("third").len(), 0);
        // Five more: bins 1 and 2 complete, two events have no bin left.
        let done =
            streaming.push(&[[3, 0, 600, 0], [0, 1, 700, 0], [1, 1, 800, 0], [2, 1, 900, 0], [3, 1, 999, 0]]);
        assert_eq!(done.expect("chunk").len(), 2);
        assert_eq!(streaming.dropped(), 2);
        // Dropped events are still checked.
        let err = streaming.push(&[[0, 0, 998, 0]]).unwrap_err();
        assert_eq!(err, EventError::OutOfOrder { index: 8, t: 998 });
        assert_eq!(streaming.finish(), None, "every bin was handed out");
        // A stream that ends on a full bin has no partial frame to add.
        let mut streaming = StreamingBinner::new(binning);
        assert_eq!(streaming.push(&[[0, 0, 1, 0], [0, 0, 2, 0]]).expect("full").len(), 1);
        assert_eq!(streaming.finish(), None);
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
