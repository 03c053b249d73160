//! Optional bearer-token authentication, one axum middleware per door: HTTP refusals are 401 with
//! `WWW-Authenticate: Bearer` and the usual JSON error body, gRPC refusals are UNAUTHENTICATED.
//! Health checks (and `/metrics`) stay open unless `--auth-health`, so that probes and scrapers
//! need no secret. gRPC reflection is guarded: it describes every method of the API.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::AuthArgs;
pub use crate::token::Token;

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read the auth tokens file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: a token may only hold visible ASCII characters (no spaces or control characters)")]
    BadToken { origin: String },
    #[error("{0} holds no token; refusing to start with authentication that would let nobody in")]
    NoTokens(String),
    #[error("--auth-health needs tokens (--auth-tokens-file, or SPIKESERVE_AUTH_TOKENS / --auth-tokens)")]
    HealthWithoutTokens,
}

/// The accepted tokens and what they guard; cheap to clone into each door.
#[derive(Clone)]
pub struct Auth(Arc<AuthInner>);

struct AuthInner {
    tokens: Vec<Token>,
    guard_health: bool,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.0.tokens.len())
            .field("guard_health", &self.0.guard_health)
            .finish()
    }
}

/// Why a request was refused; never carries the presented value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Invalid,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::Missing => "this server requires a bearer token (Authorization: Bearer <token>)",
            Self::Malformed => "the Authorization header is not of the form \"Bearer <token>\"",
            Self::Invalid => "the bearer token is not accepted",
        }
    }

    /// RFC 6750's challenge: `error="invalid_token"` only when a token was presented.
    fn challenge(self) -> HeaderValue {
        match self {
            Self::Missing => HeaderValue::from_static("Bearer realm=\"spikeserve\""),
            Self::Malformed => {
                HeaderValue::from_static("Bearer realm=\"spikeserve\", error=\"invalid_request\"")
            }
            Self::Invalid => HeaderValue::from_static("Bearer realm=\"spikeserve\", error=\"invalid_token\""),
        }
    }

    /// Counts and logs the refusal: door, path and reason, never the header.
    fn record(self, door: &'static str, path: &str) {
        crate::metrics::unauthenticated(door, self.reason());
        tracing::warn!(door, path, reason = self.reason(), "unauthenticated request refused");
    }
}

impl Auth {
    /// The tokens from the file and the list; `None` when neither gives any (authentication off).
    pub fn from_args(args: &AuthArgs) -> Result<Option<Self>, AuthConfigError> {
        let mut tokens = Vec::new();
        if let Some(path) = &args.auth_tokens_file {
            let from_file = read_tokens_file(path)?;
            if from_file.is_empty() {
                return Err(AuthConfigError::NoTokens(format!("the auth tokens file {}", path.display())));
            }
            tokens.extend(from_file);
        }
        // Empty entries (a trailing comma) are skipped, but a list of nothing but commas is a mistake.
        let listed: Vec<Token> = args.auth_tokens.iter().filter(|t| !t.is_empty()).cloned().collect();
        if !args.auth_tokens.is_empty() && listed.is_empty() {
            return Err(AuthConfigError::NoTokens("SPIKESERVE_AUTH_TOKENS / --auth-tokens".into()));
        }
        for (i, token) in listed.iter().enumerate() {
            if !token.is_well_formed() {
                let origin = format!("token {} of SPIKESERVE_AUTH_TOKENS / --auth-tokens", i + 1);
                return Err(AuthConfigError::BadToken { origin });
            }
        }
        tokens.extend(listed);
        if tokens.is_empty() {
            return if args.auth_health { Err(AuthConfigError::HealthWithoutTokens) } else { Ok(None) };
        }
        Ok(Some(Self(Arc::new(AuthInner { tokens, guard_health: args.auth_health }))))
    }

    pub fn token_count(&self) -> usize {
        self.0.tokens.len()
    }

    pub fn guards_health(&self) -> bool {
        self.0.guard_health
    }

    /// Checks an `Authorization` header against every token, in time that depends on neither
    /// which token matched nor how much of a wrong one did.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), Refusal> {
        let value = authorization.ok_or(Refusal::Missing)?.as_bytes();
        let presented = bearer_credentials(value).ok_or(Refusal::Malformed)?;
        let matched = self.0.tokens.iter().fold(subtle::Choice::from(0), |any, token| {
            // `ct_eq` on slices of different lengths is false without looking at the bytes; that
            // reveals a token's length at most, not its content.
            any | token.as_bytes().ct_eq(presented)
        });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Refusal::Invalid)
        }
    }

    fn open_http(&self, path: &str) -> bool {
        !self.0.guard_health
            && matches!(path, "/health" | "/v2/health/live" | "/v2/health/ready" | "/metrics")
    }

    fn open_grpc(&self, path: &str) -> bool {
        !self.0.guard_health && path.starts_with("/grpc.health.v1.Health/")
    }
}

/// The credentials of `Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let credentials = rest.trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

fn read_tokens_file(path: &Path) -> Result<Vec<Token>, AuthConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| AuthConfigError::Read { path: path.into(), source })?;
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let token = Token::from_bytes(line.as_bytes());
        if !token.is_well_formed() {
            return Err(AuthConfigError::BadToken {
                origin: format!("line {} of {}", i + 1, path.display()),
            });
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// Puts the HTTP door behind `auth` (no-op without it). Outermost, so that a refused request is
/// answered before its body is read.
pub fn guard_http(router: Router, auth: Option<Auth>) -> Router {
    match auth {
        Some(auth) => router.layer(middleware::from_fn_with_state(auth, http_middleware)),
        None => router,
    }
}

/// Puts the gRPC services behind `auth` (no-op without it).
pub fn guard_grpc(routes: tonic::service::Routes, auth: Option<Auth>) -> tonic::service::Routes {
    match auth {
        Some(auth) => {
            routes.into_axum_router().layer(middleware::from_fn_with_state(auth, grpc_middleware)).into()
        }
        None => routes,
    }
}

async fn http_middleware(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if auth.open_http(path) {
        return next.run(request).await;
    }
    match auth.check(request.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            refusal.record("http", path);
            let mut response = ApiError::Unauthenticated(refusal.message()).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, refusal.challenge());
            response
        }
    }
}

async fn grpc_middleware(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if auth.open_grpc(path) {
        return next.run(request).await;
    }
    match auth.check(request.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            refusal.record("grpc", path);
            tonic::Status::from(ApiError::Unauthenticated(refusal.message())).into_http()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tokens: &[&str]) -> Auth {
        let args = AuthArgs {
            auth_tokens_file: None,
            auth_tokens: tokens.iter().map(|t| Token::parse(t).unwrap()).collect(),
            auth_health: false,
        };
        Auth::from_args(&args).unwrap().unwrap()
    }

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn only_a_listed_bearer_token_passes() {
        let auth = auth(&["alpha-1", "beta-22"]);
        assert_eq!(auth.check(Some(&header("Bearer alpha-1"))), Ok(()));
        assert_eq!(auth.check(Some(&header("bearer beta-22"))), Ok(()));
        assert_eq!(auth.check(Some(&header("BEARER  beta-22 "))), Ok(()));
        assert_eq!(auth.check(None), Err(Refusal::Missing));
        assert_eq!(auth.check(Some(&header("Bearer alpha-2"))), Err(Refusal::Invalid));
        assert_eq!(auth.check(Some(&header("Bearer alpha-1x"))), Err(Refusal::Invalid));
        assert_eq!(auth.check(Some(&header("Bearer alpha"))), Err(Refusal::Invalid));
        assert_eq!(auth.check(Some(&header("Basic alpha-1"))), Err(Refusal::Malformed));
        assert_eq!(auth.check(Some(&header("Bearer "))), Err(Refusal::Malformed));
        assert_eq!(auth.check(Some(&header("alpha-1"))), Err(Refusal::Malformed));
    }

    #[test]
    fn debug_output_never_holds_a_token() {
        let auth = auth(&["s3cret-value"]);
        let printed = format!("{auth:?} {:?}", Token::parse("s3cret-value").unwrap());
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("tokens: 1"), "{printed}");
    }

    #[test]
    fn the_tokens_file_skips_blanks_and_comments_and_refuses_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# ops team\n\n  first  \nsecond\n   # indented comment\n").unwrap();
        let args = AuthArgs { auth_tokens_file: Some(path.clone()), auth_tokens: vec![], auth_health: true };
        let auth = Auth::from_args(&args).unwrap().unwrap();
        assert_eq!(auth.token_count(), 2);
        assert!(auth.guards_health());
        assert_eq!(auth.check(Some(&header("Bearer first"))), Ok(()));
        assert_eq!(auth.check(Some(&header("Bearer # ops team"))), Err(Refusal::Invalid));

        std::fs::write(&path, "good\nhas space\n").unwrap();
        let error = Auth::from_args(&args).unwrap_err().to_string();
        assert!(error.contains("line 2 of") && !error.contains("has space"), "{error}");

        std::fs::write(&path, "# nothing but comments\n").unwrap();
        let error = Auth::from_args(&args).unwrap_err().to_string();
        assert!(error.contains("holds no token"), "{error}");
    }

    #[test]
    fn no_tokens_means_no_authentication_unless_health_asks_for_it() {
        let mut args = AuthArgs { auth_tokens_file: None, auth_tokens: vec![], auth_health: false };
        assert!(Auth::from_args(&args).unwrap().is_none());
        args.auth_health = true;
        assert!(matches!(Auth::from_args(&args), Err(AuthConfigError::HealthWithoutTokens)));
        args.auth_health = false;
        args.auth_tokens = vec![Token::parse("").unwrap()];
        assert!(matches!(Auth::from_args(&args), Err(AuthConfigError::NoTokens(_))));
    }
}
