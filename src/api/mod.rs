//! The server's doors. HTTP today; gRPC joins it behind the same error type.

pub mod error;
pub mod http;
pub mod request;
pub mod schema;

pub use error::ApiError;
