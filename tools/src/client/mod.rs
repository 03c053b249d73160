//! The one client every tool uses: how a server is reached (token, TLS), its HTTP routes (JSON and
//! SSE), and its gRPC calls (unary, server stream, session).

pub mod access;
pub mod grpc;
pub mod http;
pub mod sse;

pub use access::ClientAccess;
pub use grpc::{exit_name, follow, Grpc, StreamEnd};
pub use http::Http;
pub use sse::SseStream;
