//! An ensemble of three seeds served as one model: its mean and variance against the members'
//! own answers, and its exits against the training job's offline evaluation.

mod common;

use std::path::Path;

use common::{heldout_digits, infer, read_json, shipped_models, Server, CROSS_CPU_CONFIDENCE_TOLERANCE};
use serde_json::{json, Value};

/// A models directory holding the ensemble and, beside it, each member as a model of its own.
fn ensemble_and_members() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let ensemble = shipped_models().join("digits-tet");
    std::os::unix::fs::symlink(&ensemble, dir.path().join("ensemble")).expect("symlink");
    for seed in 0..3 {
        let member = ensemble.join(format!("seed-{seed}"));
        std::os::unix::fs::symlink(member, dir.path().join(format!("seed-{seed}"))).expect("symlink");
    }
    dir
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().expect("array").iter().map(|v| v.as_f64().expect("number")).collect()
}

#[tokio::test]
async fn the_ensemble_answer_is_the_mean_of_its_members_with_their_variance() {
    let dir = ensemble_and_members();
    let server = Server::start(dir.path(), &["--max-batch", "16"]);
    let client = reqwest::Client::new();
    let info: Value =
        client.get(server.url("/v1/models/ensemble")).send().await.expect("get").json().await.expect("json");
    assert_eq!(info["members"], 3);
    let (inputs, _) = heldout_digits();
    for input in &inputs[..12] {
        for steps in [1, 3] {
            let body = json!({"input": input, "threshold": 1.0, "max_timesteps": steps});
            let (status, whole) = infer(&client, &server.base, "ensemble", &body).await;
            assert_eq!(status, 200, "{whole}");
            let mut members = Vec::new();
            for seed in 0..3 {
                let (status, member) = infer(&client, &server.base, &format!("seed-{seed}"), &body).await;
                assert_eq!(status, 200, "{member}");
                assert!(member.get("uncertainty").is_none(), "single models report no uncertainty");
                members.push(floats(&member["probabilities"]));
            }
            let mean: Vec<f64> = (0..10).map(|c| members.iter().map(|p| p[c]).sum::<f64>() / 3.0).collect();
            let got = floats(&whole["probabilities"]);
            for (m, g) in mean.iter().zip(&got) {
                assert!((m - g).abs() < 1e-9, "mean {m} vs ensemble {g}");
            }
            let best = whole["class_index"].as_u64().expect("class") as usize;
            let variance = members.iter().map(|p| (p[best] - mean[best]).powi(2)).sum::<f64>() / 3.0;
            let reported = whole["uncertainty"].as_f64().expect("uncertainty");
            assert!((variance - reported).abs() < 1e-9, "variance {variance} vs reported {reported}");
            assert_eq!(whole["timesteps"], steps);
        }
    }
}

#[tokio::test]
async fn ensemble_exits_equal_the_offline_evaluation_and_a_variance_bound_holds_them_back() {
    let models = shipped_models();
    let server = Server::start(&models, &[]);
    let client = reqwest::Client::new();
    let eval = read_json(&Path::new(&models).join("digits-tet/eval.json"));
    let offline = &eval["anytime_at_default_threshold"];
    let threshold = eval["default_threshold"].as_f64().expect("threshold");
    let (inputs, targets) = heldout_digits();
    let (mut correct, mut steps_free, mut steps_bounded) = (0, 0, 0);
    for (i, input) in inputs.iter().enumerate() {
        let (status, a) =
            infer(&client, &server.base, "digits-tet", &json!({"input": input, "return_confidences": true}))
                .await;
        assert_eq!(status, 200, "{a}");
        if (&a["timesteps"], &a["class_index"]) != (&offline["exit_timesteps"][i], &offline["predictions"][i])
        {
            let near = floats(&a["confidences"])
                .iter()
                .any(|c| (c - threshold).abs() < CROSS_CPU_CONFIDENCE_TOLERANCE);
            assert!(
                near,
                "sample {i}: server {a}, offline t={} class={}",
                offline["exit_timesteps"][i], offline["predictions"][i]
            );
        }
        correct += usize::from(a["class_index"].as_u64() == Some(targets[i] as u64));
        steps_free += a["timesteps"].as_u64().expect("t");
        let (status, b) =
            infer(&client, &server.base, "digits-tet", &json!({"input": input, "max_variance": 1e-6})).await;
        assert_eq!(status, 200, "{b}");
        steps_bounded += b["timesteps"].as_u64().expect("t");
        if b["exit_reason"] == "confident" {
            assert!(b["uncertainty"].as_f64().expect("uncertainty") <= 1e-6, "{b}");
        }
    }
    let accuracy = correct as f64 / inputs.len() as f64;
    let stated = offline["accuracy"].as_f64().expect("accuracy");
    assert!((accuracy - stated).abs() <= 1.0 / inputs.len() as f64 + 1e-12, "{accuracy} vs {stated}");
    assert!(steps_bounded > steps_free, "a tight variance bound waits for the members to agree");
    let (status, e) =
        infer(&client, &server.base, "digits-tet", &json!({"input": inputs[0], "max_variance": -1})).await;
    assert_eq!(status, 400, "{e}");
}

#[tokio::test]
async fn an_ensemble_whose_members_disagree_on_the_contract_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    std::fs::write(bad.join("ensemble.json"), r#"{"members": ["missing.onnx"]}"#).expect("write");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    std::fs::write(empty.join("ensemble.json"), r#"{"members": []}"#).expect("write");
    let typo = dir.path().join("typo");
    std::fs::create_dir(&typo).expect("mkdir");
    std::fs::write(typo.join("ensemble.json"), r#"{"membres": []}"#).expect("write");
    std::os::unix::fs::symlink(shipped_models().join("digits"), dir.path().join("digits")).expect("symlink");
    let server = Server::start(dir.path(), &[]);
    let list: Value = reqwest::get(server.url("/v1/models")).await.expect("list").json().await.expect("json");
    let refused = list["refused"].as_array().expect("refused");
    let reason = |name: &str| {
        refused.iter().find(|r| r["name"] == name).and_then(|r| r["reason"].as_str()).unwrap_or("").to_owned()
    };
    assert!(reason("bad").contains("missing.onnx"), "{}", reason("bad"));
    assert!(reason("empty").contains("lists no members"), "{}", reason("empty"));
    assert!(reason("typo").contains("unknown field `membres`"), "{}", reason("typo"));
    assert_eq!(list["models"][0]["name"], "digits");
}
