//! KServe v2 inference bodies: JSON, or JSON and binary tensor data split by
//! `Inference-Header-Content-Length` (the first two bytes of the input choose the header), through
//! the server's decode, the protocol's input checks and the engine request for each contract.
#![no_main]

#[path = "contracts.rs"]
mod contracts;

use std::sync::OnceLock;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use spikeserve::api::kserve::http::{decode_body, DecodedBody, HEADER_LENGTH};
use spikeserve::api::kserve::request_spec;
use spikeserve::api::request::checked_request;
use spikeserve::model::ModelContract;

static CONTRACTS: OnceLock<[ModelContract; 2]> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let contracts = CONTRACTS.get_or_init(|| [contracts::digits(), contracts::event_digits()]);
    let [mode, length, body @ ..] = data else { return };
    let mut headers = HeaderMap::new();
    match mode % 4 {
        // Binary data: the JSON part is the first `length` bytes (past the body too: refused).
        0 | 1 => {
            headers.insert(HEADER_LENGTH, HeaderValue::from(u32::from(*length)));
        }
        // A header that is not a number.
        2 => {
            headers.insert(HEADER_LENGTH, HeaderValue::from_static("many"));
        }
        _ => {}
    }
    let Ok(DecodedBody { inputs, parameters, .. }) = decode_body(&headers, body) else { return };
    for contract in contracts {
        if let Ok(spec) = request_spec(contract, inputs.clone(), &parameters) {
            let _ = checked_request("fuzz", contract, None, spec, Instant::now());
        }
    }
});
