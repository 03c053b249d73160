//! `/v1` JSON bodies, through the path the server runs: parse, decode the input, check it against
//! each shipped contract and build the engine's request. Any input must end in Ok or an error.
#![no_main]

#[path = "contracts.rs"]
mod contracts;

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use spikeserve::api::body::parse_json;
use spikeserve::api::request::checked_request;
use spikeserve::api::schema::InferRequest;
use spikeserve::model::ModelContract;

static CONTRACTS: OnceLock<[ModelContract; 2]> = OnceLock::new();

fuzz_target!(|body: &[u8]| {
    let contracts = CONTRACTS.get_or_init(|| [contracts::digits(), contracts::event_digits()]);
    let Ok(request) = parse_json::<InferRequest>(body) else { return };
    let Ok(spec) = request.into_spec() else { return };
    for contract in contracts {
        let _ = checked_request("fuzz", contract, None, spec.clone(), Instant::now());
    }
});
