//! The gRPC doors: our anytime API (`spikeserve.anytime.v1.Anytime`), the KServe v2 protocol
//! (`inference.GRPCInferenceService`), `grpc.health.v1` and reflection, on one port.

pub mod anytime;
pub mod event_columns;
pub mod limits;

use std::time::Duration;

use tonic::metadata::MetadataMap;

use super::request_id::{request_id, HEADER as REQUEST_ID};

/// The generated code of `proto/anytime/v1/anytime.proto`.
pub mod anytime_pb {
    tonic::include_proto!("spikeserve.anytime.v1");
    pub use super::event_columns::Events;
}

/// The generated code of `proto/inference/*.proto` (KServe v2 with Triton's extensions).
pub mod inference_pb {
    tonic::include_proto!("inference");
}

impl From<&[crate::input::events::Event]> for anytime_pb::Events {
    fn from(events: &[crate::input::events::Event]) -> Self {
        Self {
            x: events.iter().map(|e| e[0]).collect(),
            y: events.iter().map(|e| e[1]).collect(),
            t_us: events.iter().map(|e| e[2]).collect(),
            p: events.iter().map(|e| e[3]).collect(),
        }
    }
}

/// Every proto's descriptors, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// The call's `grpc-timeout` (the client's deadline), which serves as the latency budget when the
/// request gives none. Format: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// The request id from the message (when set) or the `x-request-id` metadata, else a new one.
pub fn grpc_request_id(from_message: &str, metadata: &MetadataMap) -> String {
    let given = Some(from_message)
        .filter(|id| !id.is_empty())
        .or_else(|| metadata.get(REQUEST_ID).and_then(|v| v.to_str().ok()));
    request_id(given)
}

/// The budget in milliseconds: the request's own, else what is left of the gRPC deadline.
pub fn budget_ms(given: Option<f64>, metadata: &MetadataMap) -> Option<f64> {
    given.or_else(|| grpc_timeout(metadata).map(|d| d.as_secs_f64() * 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_every_unit() {
        let mut metadata = MetadataMap::new();
        for (text, expected) in [
            ("250m", Duration::from_millis(250)),
            ("2S", Duration::from_secs(2)),
            ("1M", Duration::from_secs(60)),
            ("1H", Duration::from_secs(3600)),
            ("750u", Duration::from_micros(750)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            metadata.insert("grpc-timeout", text.parse().expect("ascii"));
            assert_eq!(grpc_timeout(&metadata), Some(expected), "{text}");
        }
        for bad in ["m", "10x", "123456789S", "-1S"] {
            metadata.insert("grpc-timeout", bad.parse().expect("ascii"));
            assert_eq!(grpc_timeout(&metadata), None, "{bad}");
        }
    }
}
