//! Request ids and the request's log span. An id is taken from the client (`x-request-id`, or the
//! KServe `id` field) when it sends a usable one, made otherwise, and echoed in the answer.

pub const HEADER: &str = "x-request-id";

/// The longest id taken from a client; longer ones are replaced (they would bloat every log line).
const MAX_LEN: usize = 128;

/// `given` when it is 1..=128 visible ASCII characters, else a new UUID.
pub fn request_id(given: Option<&str>) -> String {
    match given {
        Some(id) if !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic()) => {
            id.to_owned()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// The span every request's logs go under; `timesteps` and `exit_reason` are recorded at the end.
pub fn request_span(door: &'static str, id: &str, model: &str) -> tracing::Span {
    let span = request_span_without_id(door, model);
    span.record("id", id);
    span
}

/// The same span, for doors that learn the id only from the body (recorded with
/// `span.record("id", ..)` once known).
pub fn request_span_without_id(door: &'static str, model: &str) -> tracing::Span {
    tracing::info_span!(
        "request",
        door,
        id = tracing::field::Empty,
        model,
        timesteps = tracing::field::Empty,
        exit_reason = tracing::field::Empty
    )
}

/// Records the answer on the request's span and logs it: one line per request, under the target
/// `spikeserve::request` (silence it with `RUST_LOG=info,spikeserve::request=warn`).
pub fn record_exit(timesteps: usize, exit_reason: &str) {
    let span = tracing::Span::current();
    span.record("timesteps", timesteps);
    span.record("exit_reason", exit_reason);
    tracing::info!(target: "spikeserve::request", timesteps, exit_reason, "answered");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_ids_are_kept_and_others_replaced() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        for bad in [None, Some(""), Some("has space"), Some("new\nline")] {
            let made = request_id(bad);
            assert_eq!(made.len(), 36, "{bad:?} -> {made}");
        }
        assert_eq!(request_id(Some(&"x".repeat(129))).len(), 36);
        assert_ne!(request_id(None), request_id(None));
    }
}
