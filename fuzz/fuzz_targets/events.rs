//! Raw events: as JSON (`[[x, y, t_us, p], ...]`, the `/v1` form) and as integer quadruples (the
//! gRPC and KServe forms), binned whole and streamed in chunks as sessions do. Events off the
//! sensor, outside the window or out of order must be refused, never binned out of bounds. JSON
//! events read straight from the text (as `/v1` bodies are) must equal those read from the JSON tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spikeserve::input::events::StreamingBinner;
use spikeserve::input::{decode_json_events, EventBinning, JsonEvents};

const BINNING: EventBinning = EventBinning::by_time(34, 34, 2, 300_000, 10);

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        // The /v1 body reads events straight from the text: it must agree with the JSON tree.
        let direct = serde_json::from_slice::<JsonEvents>(data).expect("valid JSON reads as JsonEvents");
        let decoded = decode_json_events(&value);
        assert_eq!(direct.0, decoded, "read directly and from the JSON tree, the events differ");
        if let Ok(events) = decoded {
            let _ = BINNING.bin(&events);
        }
    }
    // Quadruples of little-endian i32 (sign and range matter more than width), in chunks whose
    // sizes come from the data too.
    let numbers: Vec<i64> =
        data.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
    let events: Vec<[i64; 4]> = numbers.chunks_exact(4).map(|e| [e[0], e[1], e[2], e[3]]).collect();
    // Both rules: equal-time bins, and equal-count bins of 3 (small, so that bins fill and events drop).
    for binning in [BINNING, BINNING.by_count(3)] {
        let whole = binning.bin(&events);
        let mut streaming = StreamingBinner::new(binning);
        let chunk = usize::from(data.first().copied().unwrap_or(1) % 7) + 1;
        let mut frames = Vec::new();
        let mut refused = false;
        for part in events.chunks(chunk) {
            match streaming.push(part) {
                Ok(done) => frames.extend(done),
                Err(_) => {
                    refused = true;
                    break;
                }
            }
        }
        if !refused {
            frames.extend(streaming.finish());
            // Streaming bins exactly as the whole request does (the server promises it).
            if let Ok(whole) = whole {
                let streamed: Vec<f32> = frames.concat();
                assert!(streamed.len() <= whole.len(), "more frames streamed than binned");
                assert_eq!(&whole[..streamed.len()], &streamed[..], "streaming binned differently");
            }
        }
    }
});
