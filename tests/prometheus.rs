//! A real Prometheus (Debian's package; `make test` installs it with scripts/ensure-prometheus.sh)
//! scrapes the server on loopback. After a known set of requests, PromQL's average timesteps and the
//! request counts by exit reason must equal what the responses said.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{heldout_digits, infer, shipped_models, Server};
use serde_json::{json, Value};

/// A Prometheus process with its own config and storage, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn start_prometheus(target: &str) -> Prometheus {
    let binary = which("prometheus").unwrap_or_else(|| {
        panic!("the `prometheus` binary is not on PATH: run scripts/ensure-prometheus.sh (make test does)")
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: spikeserve\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    Prometheus { child, base: format!("http://127.0.0.1:{port}"), _dir: dir }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
}

/// The value of an instant query's single series (None while it has none).
async fn query(client: &reqwest::Client, prometheus: &Prometheus, promql: &str) -> Option<f64> {
    let response = client
        .get(format!("{}/api/v1/query", prometheus.base))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    let result = body["data"]["result"].as_array()?;
    let value = result.first()?["value"][1].as_str()?;
    value.parse().ok()
}

async fn query_until(client: &reqwest::Client, prometheus: &Prometheus, promql: &str, expected: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = query(client, prometheus, promql).await;
        if value.is_some_and(|v| (v - expected).abs() < 1e-9) || Instant::now() > deadline {
            return value.unwrap_or(f64::NAN);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn prometheus_reads_the_average_timesteps_and_exit_reasons_the_responses_reported() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let target = server.base.trim_start_matches("http://").to_owned();
    let prometheus = start_prometheus(&target);

    // A known mix: default threshold (mostly confident), threshold 1 (max_timesteps), a cap of 3.
    let (inputs, _) = heldout_digits();
    let mut timesteps = 0u64;
    let mut answered = 0u64;
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for (i, input) in inputs.iter().take(60).enumerate() {
        let body = match i % 3 {
            0 => json!({ "input": input }),
            1 => json!({ "input": input, "threshold": 1.0 }),
            _ => json!({ "input": input, "threshold": 0.9999, "max_timesteps": 3 }),
        };
        let (status, answer) = infer(&client, &server.base, "digits", &body).await;
        assert_eq!(status, 200, "{answer}");
        timesteps += answer["timesteps"].as_u64().expect("timesteps");
        answered += 1;
        *by_reason.entry(answer["exit_reason"].as_str().expect("reason").to_owned()).or_default() += 1;
    }
    for _ in 0..4 {
        let (status, _) =
            infer(&client, &server.base, "digits", &json!({ "input": inputs[0], "threshold": 7 })).await;
        assert_eq!(status, 400);
    }
    assert!(by_reason.len() >= 2, "the mix exercises several exit reasons: {by_reason:?}");

    let count = query_until(
        &client,
        &prometheus,
        r#"spikeserve_timesteps_used_count{model="digits"}"#,
        answered as f64,
    )
    .await;
    assert_eq!(count, answered as f64, "Prometheus did not scrape the requests (is it scraping {target}?)");
    let average = query(
        &client,
        &prometheus,
        r#"sum(spikeserve_timesteps_used_sum{model="digits"}) / sum(spikeserve_timesteps_used_count{model="digits"})"#,
    )
    .await
    .expect("average timesteps");
    let expected = timesteps as f64 / answered as f64;
    assert!((average - expected).abs() < 1e-9, "PromQL average {average}, responses {expected}");
    for (reason, n) in &by_reason {
        let promql =
            format!(r#"spikeserve_requests_total{{model="digits",status="ok",exit_reason="{reason}"}}"#);
        assert_eq!(query(&client, &prometheus, &promql).await, Some(*n as f64), "{reason}");
    }
    let refused =
        query(&client, &prometheus, r#"spikeserve_requests_total{model="digits",status="invalid_field"}"#)
            .await;
    assert_eq!(refused, Some(4.0));
    let triton =
        query(&client, &prometheus, r#"nv_inference_request_success{model="digits",version="1"}"#).await;
    assert_eq!(triton, Some(answered as f64));
    let failures =
        query(&client, &prometheus, r#"nv_inference_request_failure{model="digits",version="1"}"#).await;
    assert_eq!(failures, Some(4.0));
    // A scrape reads as a dashboard would: described series, histograms with buckets, gauges back at zero.
    let text = client.get(server.url("/metrics")).send().await.expect("scrape").text().await.expect("text");
    for line in [
        "# HELP spikeserve_timesteps_used",
        "# TYPE spikeserve_timesteps_used histogram",
        "spikeserve_timesteps_used_bucket{model=\"digits\",le=\"1\"}",
        "spikeserve_step_duration_seconds_bucket",
        "spikeserve_batch_size_bucket",
        "spikeserve_time_to_first_partial_seconds_count{model=\"digits\"} 60",
        "spikeserve_slots_in_use{model=\"digits\"} 0",
        "spikeserve_queue_depth{model=\"digits\"} 0",
        "spikeserve_slots_capacity{model=\"digits\"} 64",
        "spikeserve_synaptic_ops_count{model=\"digits\"} 60",
    ] {
        assert!(text.contains(line), "/metrics lacks {line:?}");
    }
}

#[tokio::test]
async fn metrics_can_move_to_their_own_port() {
    // Port 0, read back from the log: a port picked free beforehand can be taken by then.
    let server = Server::start(&shipped_models(), &["--metrics-addr", "127.0.0.1:0"]);
    let client = reqwest::Client::new();
    let own = client.get(format!("http://{}/metrics", server.metrics_addr())).send().await.expect("scrape");
    assert_eq!(own.status(), 200);
    assert!(own.text().await.expect("text").contains("spikeserve_slots_capacity"));
    let main = client.get(server.url("/metrics")).send().await.expect("sent");
    assert_eq!(main.status(), 404, "metrics left the API's port");
}
