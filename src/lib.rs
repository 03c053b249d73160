//! spikeserve: an anytime inference server for spiking neural networks.
//!
//! A model is one ONNX graph per timestep (see `docs/MODEL-CONTRACT.md`). The server steps it,
//! keeps a running mean of the logits, and stops a request as soon as the softmax confidence
//! reaches the request's threshold or its timestep budget runs out.

// A request path never panics: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod backend;
pub mod config;
pub mod contract;
pub mod engine;
pub mod input;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod token;
