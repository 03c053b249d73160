//! Request ids. An id is taken from the client (`x-request-id`, or the
//! KServe `id` field) when it sends a usable one, made otherwise, and echoed in the answer.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

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

/// The client's `x-request-id`, if it sent one as text.
pub fn header_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(HEADER).and_then(|v| v.to_str().ok())
}

/// Echoes the call's id in the answer's `x-request-id`.
pub fn with_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
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
