//! The OpenAPI document of the `/v1` HTTP API (`/openapi.json`, committed as `docs/openapi.json`)
//! and the page that browses it (`/docs`: Swagger UI, compiled into the binary so that it works
//! without a network, with "Try it out" sending real requests to this server).
//!
//! The handlers' own `#[utoipa::path]` annotations live beside them in [`super::http`]; what is here
//! is what no single handler owns: the list of schemas, the bearer-token scheme, and the routes that
//! serve the document and the page.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::http::{__path_get_model, __path_health, __path_infer, __path_list_models, __path_model_stats};
use super::schema::{
    ErrorResponse, Health, InferEventStream, InferRequest, InferResponse, ModelInfo, ModelList, ModelStats,
    NestedNumbers, PartialResponse,
};

/// Where the document is served; the page reads it from here.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// Where the page is served (`/docs` redirects to `/docs/`, whose assets live under it).
pub const PAGE_PATH: &str = "/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "spikeserve",
        description = "Anytime inference for spiking neural networks: every request stops as soon as the \
softmax of the running mean of logits reaches its threshold, its timestep bound or its latency budget. \
The KServe v2 (Open Inference Protocol) routes under /v2 follow the public specification and are not \
repeated here. Every error has the body `ErrorResponse`; the codes are listed in docs/errors.md."
    ),
    paths(health, list_models, get_model, model_stats, infer),
    components(schemas(
        InferRequest,
        NestedNumbers,
        InferResponse,
        PartialResponse,
        InferEventStream,
        ErrorResponse,
        ModelInfo,
        ModelList,
        ModelStats,
        Health
    )),
    modifiers(&BearerToken)
)]
pub struct ApiDoc;

/// The OpenAPI document, as served at `/openapi.json` (and committed as `docs/openapi.json`).
pub fn openapi_document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// `/openapi.json`, `/docs` (and its assets) and `/favicon.ico`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = Config::from(DOCUMENT_PATH)
        .try_it_out_enabled(true)
        .display_request_duration(true)
        // The document's examples are real requests; keep the page from re-ordering them.
        .display_operation_id(false);
    Router::from(SwaggerUi::new(PAGE_PATH).config(page))
        .route(DOCUMENT_PATH, get(document))
        .route("/favicon.ico", get(favicon))
}

async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_document()).into_response()
}

/// A browser asks every origin for `/favicon.ico`; a small drawing of a spike answers it instead
/// of a 404 in the server's error counts.
async fn favicon() -> Response {
    (
        [(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")],
        include_str!("favicon.svg"),
    )
        .into_response()
}

/// The optional bearer token (`--auth-tokens`): declared so that the page's "Authorize" button
/// sends it with "Try it out"; `{}` beside it says the API also runs without authentication.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "Only when the server runs with --auth-tokens; /health and /metrics stay open unless \
                 --auth-health.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
        openapi.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::default(),
        ]);
    }
}
