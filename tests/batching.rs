//! Continuous batching, overload and cancellation, through the real server.

mod common;

use std::time::Duration;

use common::{heldout_digits, infer, read_json, shipped_models, Server, CROSS_CPU_CONFIDENCE_TOLERANCE};
use serde::Deserialize;
use serde_json::{json, Value};

/// The fields of an answer these tests compare: parsed, so that a renamed or missing field fails
/// here instead of comparing two absent values as equal.
#[derive(Debug, Deserialize)]
struct Answer {
    class_index: usize,
    timesteps: usize,
    exit_reason: String,
    probabilities: Vec<f64>,
    #[serde(default)]
    confidences: Option<Vec<f64>>,
}

impl Answer {
    fn parse(body: &Value) -> Self {
        serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("not an answer ({e}): {body}"))
    }
}

/// `GET /v1/models/{name}/stats`, the fields these tests read.
#[derive(Debug, Deserialize)]
struct Stats {
    queued: u64,
    active_slots: u64,
    steps: u64,
    stepped_samples: u64,
    largest_batch: u64,
    refused: u64,
    exits: Exits,
}

#[derive(Debug, Deserialize)]
struct Exits {
    confident: u64,
    max_timesteps: u64,
    deadline: u64,
    cancelled: u64,
}

async fn stats(client: &reqwest::Client, server: &Server) -> Stats {
    let body: Value = client
        .get(server.url("/v1/models/digits/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("not the stats ({e}): {body}"))
}

/// Polls the stats until no request is queued or holds a slot (bounded).
async fn settled(client: &reqwest::Client, server: &Server) -> Stats {
    for _ in 0..200 {
        let s = stats(client, server).await;
        if s.active_slots == 0 && s.queued == 0 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("slots or queue did not drain: {:?}", stats(client, server).await);
}

async fn all_at_once(client: &reqwest::Client, base: &str, bodies: Vec<Value>) -> Vec<(u16, Value)> {
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (client, base) = (client.clone(), base.to_owned());
            tokio::spawn(async move { infer(&client, &base, "digits", &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_answers_equal_one_at_a_time_and_the_offline_exits() {
    let batched = Server::start(
        &shipped_models(),
        &["--max-batch", "64", "--batch-wait-us", "20000", "--queue-capacity", "1024"],
    );
    let single = Server::start(&shipped_models(), &["--max-batch", "1", "--queue-capacity", "1024"]);
    let client = reqwest::Client::new();
    let eval = read_json(&shipped_models().join("digits/eval.json"));
    let offline_exits: Vec<usize> =
        serde_json::from_value(eval["anytime_at_default_threshold"]["exit_timesteps"].clone())
            .expect("exits");
    let (inputs, _) = heldout_digits();
    let bodies: Vec<Value> = inputs.iter().map(|x| json!({"input": x, "return_confidences": true})).collect();

    let together = all_at_once(&client, &batched.base, bodies.clone()).await;
    let alone = all_at_once(&client, &single.base, bodies).await;
    let threshold = eval["default_threshold"].as_f64().expect("threshold");
    assert_eq!(together.len(), inputs.len());
    assert_eq!(alone.len(), inputs.len());
    assert_eq!(offline_exits.len(), inputs.len(), "eval.json has an exit for every held-out sample");
    for (i, ((s1, a), (s2, b))) in together.iter().zip(&alone).enumerate() {
        assert_eq!((*s1, *s2), (200, 200), "sample {i}: {a} / {b}");
        let (a, b) = (Answer::parse(a), Answer::parse(b));
        assert_eq!(a.timesteps, b.timesteps, "sample {i}");
        assert_eq!(a.exit_reason, b.exit_reason, "sample {i}");
        assert_eq!(a.class_index, b.class_index, "sample {i}");
        assert_eq!(a.probabilities.len(), b.probabilities.len(), "sample {i}");
        for (x, y) in a.probabilities.iter().zip(&b.probabilities) {
            assert!((x - y).abs() <= 1e-5, "sample {i}: batched {x} vs alone {y}");
        }
        if a.timesteps != offline_exits[i] {
            let confidences = a.confidences.as_deref().expect("asked for confidences");
            assert_eq!(confidences.len(), a.timesteps, "sample {i}: one confidence per timestep");
            let near = confidences.iter().any(|c| (c - threshold).abs() < CROSS_CPU_CONFIDENCE_TOLERANCE);
            assert!(near, "sample {i}: server exits at {}, offline at {}", a.timesteps, offline_exits[i]);
        }
    }
    let s = settled(&client, &batched).await;
    assert!(s.largest_batch > 1, "requests were batched: {s:?}");
    assert!(s.steps < s.stepped_samples, "{s:?}");
    let one = settled(&client, &single).await;
    assert_eq!(one.largest_batch, 1, "{one:?}");
    assert_eq!(one.steps, one.stepped_samples, "{one:?}");
    assert!(one.steps > 0, "{one:?}");
    let exits = &s.exits;
    let total = exits.confident + exits.max_timesteps + exits.deadline + exits.cancelled;
    assert_eq!(total, inputs.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_with_429_and_the_server_recovers() {
    let server = Server::start(&shipped_models(), &["--max-batch", "1", "--queue-capacity", "1"]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let bodies: Vec<Value> = (0..64).map(|i| json!({"input": inputs[i], "threshold": 1.0})).collect();
    let answers = all_at_once(&client, &server.base, bodies).await;
    let refused: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 429).map(|(_, b)| b).collect();
    let served = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(refused.len() + served, 64, "only 200 or 429: {answers:?}");
    assert!(!refused.is_empty(), "a queue of 1 cannot hold 64 requests at once");
    assert_eq!(refused[0]["error"]["code"], "overloaded");
    let s = settled(&client, &server).await;
    assert_eq!(s.refused, refused.len() as u64);
    let (status, _) = infer(&client, &server.base, "digits", &json!({"input": inputs[0]})).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_go_away_free_their_slots() {
    let server = Server::start(&shipped_models(), &["--max-batch", "1", "--queue-capacity", "1024"]);
    let (inputs, _) = heldout_digits();
    let client = reqwest::Client::new();
    // 300 requests of 8 timesteps each through one slot: a queue builds up.
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let (client, base) = (client.clone(), server.base.clone());
            let body = json!({"input": inputs[i % inputs.len()], "threshold": 1.0});
            tokio::spawn(async move { infer(&client, &base, "digits", &body).await })
        })
        .collect();
    let mut queued = 0;
    for _ in 0..400 {
        queued = stats(&client, &server).await.queued;
        if queued >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(queued >= 20, "a queue formed");
    // Every client goes away at once: queued ones and the one in the slot are cancelled.
    for task in &tasks {
        task.abort();
    }
    let s = settled(&client, &server).await;
    assert_eq!(s.active_slots, 0);
    assert!(s.exits.cancelled > 0, "{s:?}");
    let (status, answer) = infer(&client, &server.base, "digits", &json!({"input": inputs[0]})).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn timestep_bounds_and_budgets() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    for input in &inputs[..20] {
        let body = json!({"input": input, "threshold": 0.5, "min_timesteps": 3});
        let (status, a) = infer(&client, &server.base, "digits", &body).await;
        assert_eq!(status, 200, "{a}");
        assert!(Answer::parse(&a).timesteps >= 3, "{a}");
        // A generous budget changes nothing.
        let body = json!({"input": input, "latency_budget_ms": 60000});
        let (status, b) = infer(&client, &server.base, "digits", &body).await;
        assert_eq!(status, 200, "{b}");
        assert_ne!(Answer::parse(&b).exit_reason, "deadline");
    }
    for (body, mentions) in [
        (
            json!({"input": inputs[0], "min_timesteps": 0}),
            "min_timesteps: must be between 1 and max_timesteps",
        ),
        (json!({"input": inputs[0], "min_timesteps": 5, "max_timesteps": 4}), "min_timesteps"),
        (json!({"input": inputs[0], "latency_budget_ms": 0}), "latency_budget_ms: must be a positive"),
        (json!({"input": inputs[0], "latency_budget_ms": -5}), "latency_budget_ms"),
    ] {
        let (status, e) = infer(&client, &server.base, "digits", &body).await;
        assert_eq!(status, 400, "{e}");
        assert!(e["error"]["message"].as_str().expect("message").contains(mentions), "{e}");
    }
    let r = client.get(server.url("/v1/models/nope/stats")).send().await.expect("sent");
    assert_eq!(r.status(), 404);
}
