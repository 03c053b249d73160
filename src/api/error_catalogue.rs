//! Every error a client can get, as `docs/errors.md` lists it: one example of each kind of
//! [`ApiError`], put through the same mapping the doors use (code, HTTP status, gRPC code), so the
//! page cannot drift from the code (a test compares the two; `make errors-doc` rewrites the page).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::error::ApiError;
use crate::backend::StepError;
use crate::engine::EngineError;
use crate::input::{EventError, InputError};
use crate::model::loader::LoadError;
use crate::model::RepositoryError;

/// One kind of error: an example and when it happens.
pub struct Entry {
    pub example: ApiError,
    pub when: &'static str,
}

/// Adding a variant to [`ApiError`] stops this from compiling until [`entries`] has an example.
fn _every_variant_has_an_entry(error: &ApiError) {
    match error {
        ApiError::ModelNotFound { .. }
        | ApiError::RouteNotFound(_)
        | ApiError::MalformedJson(_)
        | ApiError::InvalidField(_)
        | ApiError::InvalidInput(_)
        | ApiError::InvalidEvents(_)
        | ApiError::UnsupportedMediaType(_)
        | ApiError::PayloadTooLarge(_)
        | ApiError::BadBody(_)
        | ApiError::SessionIdle { .. }
        | ApiError::Unauthenticated(_)
        | ApiError::RepositoryReadOnly
        | ApiError::NotReady
        | ApiError::ShuttingDown
        | ApiError::Engine(_)
        | ApiError::Repository(_) => {}
    }
}

/// One example of every kind of error, engine and repository errors included.
pub fn entries() -> Vec<Entry> {
    let entry = |example, when| Entry { example, when };
    vec![
        entry(
            ApiError::ModelNotFound { name: "digitz".into(), loaded: "digits, event-digits".into() },
            "The model, or the version asked for on a KServe route, is not served (the message lists the loaded ones).",
        ),
        entry(ApiError::RouteNotFound("/v1/modls".into()), "No such route."),
        entry(
            ApiError::MalformedJson("expected `,` or `}` at line 1 column 9".into()),
            "The body is not JSON (the message gives line and column).",
        ),
        entry(
            ApiError::InvalidField("threshold: must be in (0, 1], found 1.5".into()),
            "A missing, unknown or ill-typed field or parameter; `threshold` outside (0, 1]; `max_timesteps` outside 1..=T; a `priority` or budget out of range; a session message out of order (the message names the field).",
        ),
        entry(
            ApiError::InvalidInput(InputError::TooManyFrames { found: 12, max: 8 }),
            "Wrong shape, ragged arrays, non-numbers, values outside float32.",
        ),
        entry(
            ApiError::InvalidEvents(EventError::OutOfOrder { index: 3, t: 120 }),
            "An event off the sensor, outside the window, of an unknown polarity or out of time order (the message gives its index).",
        ),
        entry(
            ApiError::UnsupportedMediaType("\"text/plain\"".into()),
            "A `/v1` body without `Content-Type: application/json`.",
        ),
        entry(
            ApiError::PayloadTooLarge("length limit exceeded".into()),
            "The body or gRPC message is over `--max-body-bytes`.",
        ),
        entry(ApiError::BadBody("connection reset".into()), "The body could not be read."),
        entry(
            ApiError::SessionIdle { seconds: 30.0 },
            "A gRPC session sent no message for `--session-idle-timeout-secs` (it was holding a batch slot).",
        ),
        entry(
            ApiError::Unauthenticated("missing bearer token"),
            "Tokens are configured and the request has no bearer token, not `Bearer <token>`, or a token not accepted (see docs/operations.md).",
        ),
        entry(
            ApiError::RepositoryReadOnly,
            "The repository API's load or unload with `--repository-read-only`.",
        ),
        entry(ApiError::NotReady, "The models are still loading."),
        entry(ApiError::ShuttingDown, "The server is draining for shutdown; retry on another replica."),
        entry(
            ApiError::Engine(EngineError::Overloaded(1024)),
            "The model's queue is full (`--queue-capacity`); retry later.",
        ),
        entry(
            ApiError::Engine(EngineError::Displaced { priority: 0, capacity: 1024 }),
            "The queue was full and a request of a higher priority class took this one's place.",
        ),
        entry(
            ApiError::Engine(EngineError::BudgetTooShort { left_ms: 1.2, needed_ms: 2.4, min_timesteps: 2 }),
            "Refused at admission: at the measured step time the budget cannot cover `min_timesteps`.",
        ),
        entry(
            ApiError::Engine(EngineError::DeadlineBeforeFirstStep { waited_ms: 20.5 }),
            "The latency budget ran out while the request waited for a slot (on SSE: an `error` event).",
        ),
        entry(ApiError::Engine(EngineError::Stopped), "The model's scheduler stopped (the model is being unloaded)."),
        entry(
            ApiError::Engine(EngineError::NoFrames),
            "A session or stream ended before its first frame.",
        ),
        entry(
            ApiError::Engine(EngineError::ShutDown),
            "The shutdown grace period ran out before the request finished.",
        ),
        entry(
            ApiError::Engine(EngineError::Step(StepError::Run("the provider failed".into()))),
            "ONNX Runtime failed to run a step (a server fault: logged as an error).",
        ),
        entry(
            ApiError::Repository(RepositoryError::BadName("../etc".into())),
            "The repository API got a name that is not a directory right under the models directory.",
        ),
        entry(
            ApiError::Repository(RepositoryError::NotInDirectory { name: "mnist".into(), dir: "models".into() }),
            "The repository API's load names a model that is not in the models directory.",
        ),
        entry(
            ApiError::Repository(RepositoryError::NotLoaded("mnist".into())),
            "The repository API's unload names a model that is not loaded.",
        ),
        entry(
            ApiError::Repository(RepositoryError::Refused {
                name: "mnist".into(),
                source: Box::new(LoadError::NotAModel { path: "models/mnist".into() }),
            }),
            "A (re)load was refused; the version before it keeps serving.",
        ),
        entry(
            ApiError::Repository(RepositoryError::Interrupted("mnist".into())),
            "A load stopped unexpectedly (a server fault).",
        ),
    ]
}

/// `docs/errors.md`: every error code with its HTTP status, gRPC code, when it happens and an
/// example message.
pub fn markdown() -> String {
    let mut by_code: BTreeMap<&'static str, Vec<Entry>> = BTreeMap::new();
    for entry in entries() {
        by_code.entry(entry.example.code()).or_default().push(entry);
    }
    let mut page = String::from(
        "# Errors\n\n\
         Generated from the server's error type (`src/api/error_catalogue.rs`) by `make errors-doc`; a \
         test keeps this page in step with the code.\n\n\
         Every refusal carries a stable `code`: in the JSON body of the `/v1` routes and SSE `error` \
         events (`{\"error\": {\"code\": ..., \"message\": ...}}`), and in the gRPC metadata \
         `spikeserve-error-code` next to the status. KServe routes answer in the protocol's own form, \
         `{\"error\": \"<message>\"}` over HTTP and the status message over gRPC, with the same HTTP \
         status and gRPC code as below. Messages name the field, index or limit at fault; they are for \
         people and may change, codes do not.\n\n\
         | code | HTTP | gRPC | when | example message |\n|---|---|---|---|---|\n",
    );
    for (code, entries) in by_code {
        for entry in entries {
            let error = &entry.example;
            let message = error.to_string().replace('|', "\\|");
            let _ = writeln!(
                page,
                "| `{code}` | {} | `{}` | {} | {message} |",
                error.status().as_u16(),
                grpc_name(error.grpc_code()),
                entry.when,
            );
        }
    }
    page
}

/// The code's name as gRPC spells it (`INVALID_ARGUMENT`), from tonic's `InvalidArgument`.
fn grpc_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_errors_md_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/errors.md");
        let generated = markdown();
        if std::env::var_os("UPDATE_ERRORS_DOC").is_some() {
            std::fs::write(&path, &generated).expect("writing docs/errors.md");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/errors.md is out of date: run `make errors-doc` (UPDATE_ERRORS_DOC=1 cargo test --lib error_catalogue)"
        );
    }

    #[test]
    fn grpc_codes_are_spelled_as_grpc_does() {
        assert_eq!(grpc_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(grpc_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(grpc_name(tonic::Code::Internal), "INTERNAL");
    }

    #[test]
    fn every_code_is_listed_with_a_client_or_server_status() {
        let page = markdown();
        for entry in entries() {
            assert!(page.contains(&format!("`{}`", entry.example.code())));
            let status = entry.example.status();
            assert!(status.is_client_error() || status.is_server_error(), "{status}");
        }
    }
}
