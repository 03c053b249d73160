//! How a tool reaches a server started with tokens or TLS: `--token` and `--ca-cert`, the same for
//! `infer`, `bench` and `soak`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Clone, Args)]
pub struct ClientAccess {
    /// Bearer token for a server started with tokens (`authorization: Bearer ...` on every request).
    #[arg(long, env = "SPIKESERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate of the CA that signed the server's certificate, for `https://` addresses.
    #[arg(long, value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for ClientAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAccess")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

impl ClientAccess {
    /// A gRPC channel to `address`: TLS when it is `https://` (trusting `--ca-cert`).
    pub async fn grpc_channel(&self, address: &str) -> anyhow::Result<Channel> {
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .with_context(|| format!("not an address: {address}"))?;
        if address.starts_with("https://") {
            let pem = self.ca_pem(address)?;
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            endpoint = endpoint.tls_config(tls).context("configuring TLS")?;
        }
        endpoint.connect().await.with_context(|| format!("connecting to {address}"))
    }

    /// An HTTP client for `address` from `builder`: trusting `--ca-cert` for `https://`, and sending
    /// the token on every request.
    pub fn http_client(
        &self,
        builder: reqwest::ClientBuilder,
        address: &str,
    ) -> anyhow::Result<reqwest::Client> {
        let mut builder = builder;
        if address.starts_with("https://") {
            let pem = self.ca_pem(address)?;
            let ca = reqwest::Certificate::from_pem(&pem).context("--ca-cert is not a PEM certificate")?;
            builder = builder.add_root_certificate(ca);
        }
        if let Some(token) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token must be visible ASCII")?;
            value.set_sensitive(true);
            let headers = [(reqwest::header::AUTHORIZATION, value)].into_iter().collect();
            builder = builder.default_headers(headers);
        }
        builder.build().context("building the HTTP client")
    }

    /// The `authorization` metadata for gRPC requests, when a token is given.
    pub fn grpc_authorization(&self) -> anyhow::Result<Option<MetadataValue<Ascii>>> {
        self.token
            .as_ref()
            .map(|token| format!("Bearer {token}").parse().context("the token must be visible ASCII"))
            .transpose()
    }

    fn ca_pem(&self, address: &str) -> anyhow::Result<Vec<u8>> {
        let Some(path) = &self.ca_cert else {
            bail!("{address} is a TLS address: give --ca-cert with the CA that signed its certificate")
        };
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// `message` as a gRPC request carrying `authorization` when there is one.
pub fn with_authorization<T>(message: T, authorization: Option<&MetadataValue<Ascii>>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.clone());
    }
    request
}
