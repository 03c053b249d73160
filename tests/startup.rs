//! Start-up: broken models are refused with their reason, a missing runtime is a clear error.

mod common;

use common::{ort_library, run_binary, shipped_models, Server};
use serde_json::Value;

fn models_dir_with_digits_and(extra: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let digits = dir.path().join("digits");
    std::fs::create_dir(&digits).expect("mkdir");
    std::fs::copy(shipped_models().join("digits/model.onnx"), digits.join("model.onnx")).expect("copy model");
    for (name, bytes) in extra {
        let model = dir.path().join(name);
        std::fs::create_dir(&model).expect("mkdir");
        std::fs::write(model.join("model.onnx"), bytes).expect("write");
    }
    dir
}

#[tokio::test]
async fn a_corrupt_model_is_refused_and_the_rest_are_served() {
    let dir = models_dir_with_digits_and(&[("broken", b"this is not an onnx graph")]);
    let server = Server::start(dir.path(), &[]);
    let list: Value = reqwest::get(server.url("/v1/models")).await.expect("list").json().await.expect("json");
    assert_eq!(list["models"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["models"][0]["name"], "digits");
    assert_eq!(list["refused"][0]["name"], "broken");
    let reason = list["refused"][0]["reason"].as_str().expect("reason");
    assert!(reason.contains("cannot open model") && reason.contains("broken/model.onnx"), "{reason}");
    let health: Value =
        reqwest::get(server.url("/health")).await.expect("health").json().await.expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["refused"], 1);
}

#[test]
fn a_server_with_no_loadable_model_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).expect("mkdir");
    std::fs::write(broken.join("model.onnx"), b"garbage").expect("write");
    let models = dir.path().to_str().expect("utf-8 path");
    let out = run_binary(&["serve", "--http-addr", "127.0.0.1:0", "--models", models], Some(&ort_library()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no model could be loaded") && stderr.contains("1 refused"), "{stderr}");
    // The queued log lines were written before the exit, and without colour codes (not a terminal).
    assert!(stderr.contains("ERROR") && stderr.contains("broken/model.onnx"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in a log that is not a terminal:\n{stderr}");

    let out = run_binary(
        &["serve", "--http-addr", "127.0.0.1:0", "--models", "/nonexistent/models"],
        Some(&ort_library()),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("models directory /nonexistent/models cannot be read"), "{stderr}");
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_start_up_error() {
    let out = run_binary(&["serve", "--ort-library", "/nonexistent/libonnxruntime.so.1.31.1"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ONNX Runtime library /nonexistent/libonnxruntime.so.1.31.1 does not exist"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A file that is not a shared library at all.
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"not a library").expect("write");
    let out = run_binary(&["serve", "--ort-library", fake.to_str().expect("utf-8")], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot load ONNX Runtime"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn asking_for_cuda_without_a_gpu_library_is_a_start_up_error_not_a_fall_back() {
    let models = shipped_models();
    let args = ["serve", "--http-addr", "127.0.0.1:0", "--device", "cuda:0", "--models"];
    let out = run_binary(&[&args[..], &[models.to_str().expect("utf-8")]].concat(), Some(&ort_library()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("device cuda:0 was asked for") && stderr.contains("no CUDA execution provider"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
    let out = run_binary(&["serve", "--device", "tpu"], Some(&ort_library()));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected \"cpu\", \"cuda\" or \"cuda:N\""));
}

#[test]
fn inspect_prints_the_contract() {
    let model = shipped_models().join("digits");
    let out = run_binary(&["inspect", model.to_str().expect("utf-8")], Some(&ort_library()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let contract: Value = serde_json::from_slice(&out.stdout).expect("JSON contract");
    assert_eq!(contract["timesteps"], 8);
    assert_eq!(contract["states"].as_array().map(Vec::len), Some(3));
}

/// Each model steps its warm-up batch sizes before the server says it is listening (and so
/// before it is ready); the time is logged and exported; `--warmup off` skips it.
#[tokio::test]
async fn models_warm_up_before_the_server_is_ready() {
    let dir = models_dir_with_digits_and(&[]);
    let server = Server::start(dir.path(), &["--max-batch", "16", "--metrics-addr", "127.0.0.1:0"]);
    let records: Vec<Value> =
        server.startup_log.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let warmed = records
        .iter()
        .position(|r| r["fields"]["message"] == "warmed up" && r["fields"]["model"] == "digits");
    let listening = records.iter().position(|r| r["fields"]["message"] == "listening");
    let (warmed, listening) = (warmed.expect("a `warmed up` line for digits"), listening.expect("listening"));
    assert!(warmed < listening, "warm-up comes before the server is ready");
    assert!(records[warmed]["fields"]["seconds"].as_f64().is_some_and(|s| s > 0.0));
    let metrics = reqwest::get(format!("http://{}/metrics", server.metrics_addr()))
        .await
        .expect("scraped")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.lines().any(|l| l.starts_with("spikeserve_warmup_seconds{model=\"digits\"}")),
        "the warm-up time is exported"
    );

    let cold = Server::start(dir.path(), &["--warmup", "off"]);
    assert!(!cold.startup_log.iter().any(|l| l.contains("warmed up")), "{:?}", cold.startup_log);
    let refused = run_binary(&["serve", "--models", "x", "--warmup", "1,eight"], Some(&ort_library()));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`eight`"));
}
