//! The server's HTTP routes the tools call: `/v1` inference (a JSON answer, or SSE), a model's
//! info and its stats.

use std::sync::Arc;

use serde_json::Value;

use super::access::ClientAccess;

/// An HTTP client (a connection pool) bound to one server.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    /// `http(s)://host:port`, without a trailing slash.
    base: Arc<str>,
}

impl Http {
    /// A client for `base` built from `builder` (which sets the pool), trusting `--ca-cert` for
    /// `https://` and sending the token on every request.
    pub fn new(access: &ClientAccess, builder: reqwest::ClientBuilder, base: &str) -> anyhow::Result<Self> {
        let client = access.http_client(builder, base)?;
        Ok(Self { client, base: base.trim_end_matches('/').into() })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /v1/models/{model}/infer` with a JSON `body`; `sse` asks for the partials as events.
    pub fn infer(&self, model: &str, body: &[u8], sse: bool) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(format!("{}/v1/models/{model}/infer", self.base))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if sse {
            request.header("accept", "text/event-stream")
        } else {
            request
        }
    }

    /// `POST /v2/models/{model}/infer` (KServe v2) with a JSON `body`.
    pub fn kserve_infer(&self, model: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v2/models/{model}/infer", self.base))
            .header("content-type", "application/json")
            .body(body)
    }

    /// `GET {path}` (a path from the server's root, `/v1/...`).
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    /// `GET {path}` read as JSON.
    pub async fn get_json(&self, path: &str) -> reqwest::Result<Value> {
        self.get(path).send().await?.json().await
    }
}
