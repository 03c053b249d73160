//! The one client every tool uses: how a server is reached (token, TLS), its HTTP routes (JSON and
//! SSE), its gRPC calls (unary, server stream, session), and the KServe v2 calls (HTTP and gRPC)
//! that spikeserve and Triton both take.

pub mod access;
pub mod grpc;
pub mod http;
pub mod kserve;
pub mod sse;

pub use access::ClientAccess;
pub use grpc::{exit_name, follow, Grpc, StreamEnd};
pub use http::Http;
pub use kserve::KServeGrpc;
pub use sse::SseStream;
