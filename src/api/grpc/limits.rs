//! Messages over `--max-body-bytes`: tonic refuses them with OUT_OF_RANGE, while gRPC's own
//! implementations (grpc-go, grpc-java, grpc-core) and Triton say RESOURCE_EXHAUSTED, which is what
//! clients test for. The HTTP doors answer 413 for the same thing.

use tonic::Status;

/// The text tonic's decoder starts its refusal with (tonic 0.14, `codec/decode.rs`).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Whether `status` is tonic's refusal of an over-limit message.
pub fn is_too_large(status: &Status) -> bool {
    status.code() == tonic::Code::OutOfRange && status.message().starts_with(TONIC_TOO_LARGE)
}

/// The same refusal with gRPC's usual code and a message that names the flag.
pub fn too_large(status: &Status) -> Status {
    let detail = status.message().strip_prefix(TONIC_TOO_LARGE).unwrap_or(status.message());
    let detail = detail.trim_start_matches([':', ' ']);
    let mut refusal =
        Status::resource_exhausted(format!("message too large: {detail} (the server's --max-body-bytes)"));
    if let Ok(code) = "payload_too_large".parse() {
        refusal.metadata_mut().insert("spikeserve-error-code", code);
    }
    refusal
}

/// Rewrites a unary or server-streaming call's refusal, which tonic sends as a trailers-only
/// response (the status in the headers) before any handler runs. Client-streaming calls see the
/// refusal in their handler instead, and map it there with [`too_large`].
pub fn rewrite_too_large<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    if let Some(status) = Status::from_header_map(response.headers()) {
        if is_too_large(&status) {
            let headers = response.headers_mut();
            headers.remove("grpc-message");
            if let Err(error) = too_large(&status).add_header(headers) {
                tracing::debug!(%error, "cannot rewrite an over-limit refusal");
            }
        }
    }
    response
}
