//! A bearer token as configured: a secret that never prints. Its own module so that the
//! configuration (which parses it) and the HTTP/gRPC guard (which checks it) both build on it
//! without importing each other.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

/// One accepted token. Its `Debug` never shows the value, so that neither `ServeConfig`'s `Debug`
/// nor a log line can print it.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl Token {
    /// Clap's value parser: takes anything, because a refusal message would echo the value.
    /// [`crate::api::auth::Auth::from_args`] checks the tokens without naming them.
    pub fn parse(value: &str) -> Result<Self, Infallible> {
        Ok(Self(Arc::from(value.trim().as_bytes())))
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        Self(Arc::from(bytes))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Visible ASCII only: anything else cannot arrive in an `Authorization` header intact.
    pub(crate) fn is_well_formed(&self) -> bool {
        self.0.iter().all(|b| b.is_ascii_graphic())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}
