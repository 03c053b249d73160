//! Raw events through the server: binned as the training job bins them, answered as the offline
//! evaluation of the shipped event-digits model says, and bad events refused by index and field.

mod common;

use common::{infer, read_json, shipped_models, Server, CROSS_CPU_CONFIDENCE_TOLERANCE};
use serde_json::{json, Value};

#[tokio::test]
async fn raw_events_are_answered_as_the_offline_evaluation_says() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let model = shipped_models().join("event-digits");
    let heldout = read_json(&model.join("heldout.json"));
    let eval = read_json(&model.join("eval.json"));
    let offline = &eval["anytime_at_default_threshold"];
    let threshold = eval["default_threshold"].as_f64().expect("threshold");
    let samples = heldout["events"].as_array().expect("events");
    assert!(samples.len() >= 20);
    let info: Value = client
        .get(server.url("/v1/models/event-digits"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(info["input_kind"], "events");
    assert_eq!(info["events"]["bins"], info["timesteps"]);
    for (i, events) in samples.iter().enumerate() {
        let body = json!({"events": events, "return_confidences": true});
        let (status, answer) = infer(&client, &server.base, "event-digits", &body).await;
        assert_eq!(status, 200, "sample {i}: {answer}");
        let same = answer["timesteps"] == offline["exit_timesteps"][i]
            && answer["class_index"] == offline["predictions"][i];
        if !same {
            let confidences = answer["confidences"].as_array().expect("confidences");
            let near = confidences
                .iter()
                .flat_map(Value::as_f64)
                .any(|c| (c - threshold).abs() < CROSS_CPU_CONFIDENCE_TOLERANCE);
            assert!(
                near,
                "sample {i}: server {answer}, offline t={} class={}",
                offline["exit_timesteps"][i], offline["predictions"][i]
            );
        }
    }
}

#[tokio::test]
async fn bad_events_are_refused_by_index_and_field() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let cases = [
        (
            json!({"events": [[0, 0, 10, 1], [40, 3, 20, 0]]}),
            "events[1]: x = 40 is outside the sensor's 34 columns",
        ),
        (
            json!({"events": [[0, 0, 50, 1], [1, 1, 40, 0]]}),
            "events[1]: t = 40 is earlier than the event before it",
        ),
        (json!({"events": [[0, 0, 300000, 1]]}), "events[0]: t = 300000 is outside the 300000 us window"),
        (json!({"events": [[0, 0, 5, 2]]}), "events[0]: p = 2 is not one of the 2 polarities"),
        (json!({"events": [[0, 0, 5]]}), "events[0]: expected [x, y, t, p] as four integers"),
        (json!({"events": []}), "events: none given"),
        (json!({"events": [[0, 0, 5, 1]], "input": [1]}), "either \"input\" or \"events\""),
    ];
    for (body, message) in cases {
        let (status, error) = infer(&client, &server.base, "event-digits", &body).await;
        assert_eq!(status, 400, "{error}");
        let text = error["error"]["message"].as_str().expect("message");
        assert!(text.contains(message), "{text:?} should contain {message:?}");
    }
    let (status, error) = infer(&client, &server.base, "digits", &json!({"events": [[0, 0, 5, 1]]})).await;
    assert_eq!(status, 400);
    assert!(error["error"]["message"].as_str().expect("message").contains("not raw events"), "{error}");
    // The server still answers good events.
    let (status, answer) =
        infer(&client, &server.base, "event-digits", &json!({"events": [[3, 4, 100, 1], [5, 6, 200, 0]]}))
            .await;
    assert_eq!(status, 200, "{answer}");
}
