//! The tools' command lines: every flag the scripts and benchmarks pass is still there, and the
//! in-process floor runs without a server. (Against a server, the tools are tested by the server's
//! own tests, `tests/grpc_api.rs` and `tests/security.rs`, which start it.)

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn tools() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spikeserve-tools"))
}

fn help(subcommand: &str) -> String {
    let output = tools().args([subcommand, "--help"]).output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_flags(subcommand: &str, flags: &[&str]) {
    let text = help(subcommand);
    for flag in flags {
        assert!(text.contains(&format!("--{flag}")), "`{subcommand}` lost --{flag}:\n{text}");
    }
}

const ACCESS: &[&str] = &["token", "ca-cert"];

#[test]
fn infer_bench_and_soak_keep_their_flags() {
    let infer = [
        "model",
        "input",
        "server",
        "threshold",
        "min-timesteps",
        "max-timesteps",
        "budget-ms",
        "priority",
        "max-accuracy-drop",
        "json",
    ];
    assert_flags("infer", &[&infer[..], ACCESS].concat());
    let bench = [
        "model",
        "inputs",
        "protocol",
        "http",
        "grpc",
        "clients",
        "rate",
        "requests",
        "warmup",
        "threshold",
        "kserve-sequence",
        "budgets-ms",
        "priorities",
        "floor",
        "model-dir",
        "ort-library",
        "json",
        "no-progress",
    ];
    assert_flags("bench", &[&bench[..], ACCESS].concat());
    let soak = [
        "model",
        "inputs",
        "http",
        "grpc",
        "clients",
        "duration-secs",
        "cancel-fraction",
        "disconnect-fraction",
        "budget-fraction",
        "grpc-connections",
        "server-pid",
        "until-shutdown",
        "seed",
        "json",
        "no-progress",
    ];
    assert_flags("soak", &[&soak[..], ACCESS].concat());
    for protocol in ["grpc-unary", "grpc-stream", "http", "sse", "grpc-health", "kserve-http", "kserve-grpc"]
    {
        assert!(help("bench").contains(protocol), "bench lost --protocol {protocol}");
    }
}

#[test]
fn the_floor_steps_the_shipped_model_in_process() {
    let Ok(ort) = std::env::var("ORT_DYLIB_PATH") else {
        panic!("ORT_DYLIB_PATH must point at libonnxruntime; run the tests with `make test`")
    };
    let digits = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/digits");
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("floor.json");
    let output = tools()
        .args(["bench", "--floor", "--requests", "20", "--warmup", "2", "--no-progress", "--model-dir"])
        .arg(&digits)
        .arg("--inputs")
        .arg(digits.join("heldout.json"))
        .arg("--json")
        .arg(&report)
        .env("ORT_DYLIB_PATH", ort)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("floor digits | floor | clients 1 | 20 ok of 20"), "{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    assert_eq!((report["ok"].as_u64(), report["mode"].as_str()), (Some(20), Some("floor")), "{report}");
    assert!(report["protocol"].is_null(), "{report}");
}
