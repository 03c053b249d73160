//! `spikeserve-tools infer`: sends one request to a running server over gRPC and prints a line per
//! timestep as the partial predictions stream in, then the final answer.

use std::io::Read;
use std::path::PathBuf;

use std::ops::ControlFlow;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::input::{decode_json_events, decode_json_tensor};

use crate::client::{follow, ClientAccess, Grpc, StreamEnd};

#[derive(Debug, Clone, Args)]
pub struct InferArgs {
    /// The model to ask.
    #[arg(long)]
    pub model: String,
    /// A JSON file shaped like the HTTP body: {"input": [...]} (with an optional "shape") or
    /// {"events": [[x, y, t_us, p], ...]}; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// The server's gRPC address.
    #[arg(long, env = "SPIKESERVE_GRPC_URL", default_value = "http://127.0.0.1:8001")]
    pub server: String,
    #[arg(long)]
    pub threshold: Option<f64>,
    #[arg(long)]
    pub min_timesteps: Option<u32>,
    #[arg(long)]
    pub max_timesteps: Option<u32>,
    /// Latency budget in milliseconds.
    #[arg(long)]
    pub budget_ms: Option<f64>,
    /// Priority class, 0 to 3 (the server's default is 1).
    #[arg(long)]
    pub priority: Option<u32>,
    /// Accuracy-drop budget in percentage points, instead of --threshold: the server uses the
    /// model's calibrated threshold for it.
    #[arg(long, conflicts_with = "threshold")]
    pub max_accuracy_drop: Option<f64>,
    /// The exit policy: cutoff, schedule or learned (the model's choice when absent).
    #[arg(long)]
    pub policy: Option<String>,
    /// With --max-accuracy-drop: the probability (e.g. 0.9) with which the budget must hold.
    #[arg(long, requires = "max_accuracy_drop")]
    pub guarantee: Option<f64>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub access: ClientAccess,
}

pub async fn run(args: InferArgs) -> anyhow::Result<()> {
    let text = if args.input.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
        text
    } else {
        std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    let body: Value = serde_json::from_str(&text).context("the input file is not JSON")?;
    let input = request_input(&body)?;
    let request = pb::InferRequest {
        model: args.model.clone(),
        request_id: String::new(),
        input: Some(input),
        policy: Some(pb::Policy {
            threshold: args.threshold,
            min_timesteps: args.min_timesteps,
            max_timesteps: args.max_timesteps,
            latency_budget_ms: args.budget_ms,
            max_variance: None,
            priority: args.priority,
            max_accuracy_drop: args.max_accuracy_drop,
            policy: args.policy.clone(),
            guarantee: args.guarantee,
        }),
        return_confidences: false,
    };
    let grpc = Grpc::connect(&args.access, &args.server).await?;
    let mut stream = grpc.infer_stream(request).await.map_err(status_error)?;
    let end = follow(&mut stream, |partial| {
        print_partial(partial, args.json);
        ControlFlow::Continue(())
    })
    .await;
    match end {
        StreamEnd::Final(answer) => print_final(&answer, args.json),
        StreamEnd::Failed(status) => return Err(status_error(status)),
        // The server closes a stream after its final answer; no answer leaves nothing more to print.
        StreamEnd::Closed | StreamEnd::Stopped => {}
    }
    Ok(())
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

fn request_input(body: &Value) -> anyhow::Result<pb::infer_request::Input> {
    if let Some(events) = body.get("events") {
        let events = decode_json_events(events)?;
        return Ok(pb::infer_request::Input::Events(pb::Events::from(events.as_slice())));
    }
    let Some(input) = body.get("input") else { bail!("the input file has neither \"input\" nor \"events\"") };
    let shape: Option<Vec<usize>> =
        body.get("shape").map(|s| serde_json::from_value(s.clone())).transpose()?;
    let tensor = decode_json_tensor(input, shape.as_deref())?;
    Ok(pb::infer_request::Input::Tensor(pb::Tensor {
        shape: tensor.shape.iter().map(|&d| d as u64).collect(),
        values: tensor.data,
    }))
}

fn print_partial(p: &pb::Partial, json: bool) {
    if json {
        let line = serde_json::json!({
            "partial": { "timestep": p.timestep, "label": p.label, "confidence": p.confidence, "uncertainty": p.uncertainty }
        });
        println!("{line}");
    } else {
        let uncertainty = p.uncertainty.map(|u| format!("  uncertainty {u:.4}")).unwrap_or_default();
        println!("t={:<3} label {:<10} confidence {:.4}{uncertainty}", p.timestep, p.label, p.confidence);
    }
}

fn print_final(f: &pb::InferResponse, json: bool) {
    let reason =
        pb::ExitReason::try_from(f.exit_reason).map(|r| r.as_str_name()).unwrap_or("EXIT_REASON_UNSPECIFIED");
    let reason = reason.trim_start_matches("EXIT_REASON_").to_lowercase();
    if json {
        let line = serde_json::json!({ "final": {
            "request_id": f.request_id, "label": f.label, "class_index": f.class_index, "confidence": f.confidence,
            "uncertainty": f.uncertainty, "timesteps": f.timesteps, "max_timesteps": f.max_timesteps,
            "exit_reason": reason, "queue_ms": f.queue_ms, "compute_ms": f.compute_ms,
        }});
        println!("{line}");
    } else {
        println!(
            "=> label {} (class {}), confidence {:.4} after {}/{} timesteps, exit {reason}; queue {:.3} ms, compute {:.3} ms, request {}",
            f.label, f.class_index, f.confidence, f.timesteps, f.max_timesteps, f.queue_ms, f.compute_ms, f.request_id
        );
    }
}
