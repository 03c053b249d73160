//! The server's doors: HTTP (`/v1` JSON and SSE, KServe v2 under `/v2`) and gRPC (our anytime
//! service, KServe v2, health, reflection), behind one error type.

pub mod auth;
pub mod body;
pub mod cors;
pub mod error;
pub mod error_catalogue;
pub mod grpc;
pub mod http;
pub mod kserve;
pub mod openapi;
pub mod pipeline;
pub mod request;
pub mod request_id;
pub mod schema;
pub mod state;
pub mod streaming;

pub use error::ApiError;
pub use state::ServerState;
