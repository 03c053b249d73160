//! Server-Sent Events on the `/v1` infer route, request ids, and the OpenAPI document with its page.

mod common;

use common::{heldout_digits, infer, shipped_models, Server};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Reads a whole `text/event-stream` body into (event, data) pairs.
async fn read_events(response: reqwest::Response) -> Vec<(String, Value)> {
    let mut text = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = Some(name.trim().to_owned());
                } else if let Some(payload) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(payload.trim()).expect("JSON data"));
                }
            }
            Some((event?, data?))
        })
        .collect()
}

#[tokio::test]
async fn event_streams_send_a_partial_per_timestep_then_the_final_answer() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    for (i, input) in inputs.iter().take(12).enumerate() {
        let body = json!({ "input": input, "threshold": 0.99 });
        let (_, expected) = infer(&client, &server.base, "digits", &body).await;
        let response = client
            .post(server.url("/v1/models/digits/infer"))
            .header("accept", "text/event-stream")
            .header("x-request-id", format!("sse-{i}"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["x-request-id"], format!("sse-{i}").as_str());
        let events = read_events(response).await;
        let (last_name, last) = events.last().expect("events").clone();
        assert_eq!(last_name, "final");
        assert_eq!(last["request_id"], format!("sse-{i}"));
        assert_eq!(last["label"], expected["label"]);
        assert_eq!(last["timesteps"], expected["timesteps"]);
        assert_eq!(last["exit_reason"], expected["exit_reason"]);
        let partials: Vec<&Value> = events.iter().filter(|(n, _)| n == "partial").map(|(_, d)| d).collect();
        assert_eq!(partials.len() as u64, expected["timesteps"].as_u64().expect("timesteps"));
        for (t, partial) in partials.iter().enumerate() {
            assert_eq!(partial["timestep"], t + 1);
        }
        assert_eq!(partials.last().map(|p| &p["probabilities"]), Some(&last["probabilities"]));
    }
}

#[tokio::test]
async fn errors_before_the_stream_are_statuses_and_after_it_are_error_events() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let sse = |body: Value| {
        client
            .post(server.url("/v1/models/digits/infer"))
            .header("accept", "text/event-stream")
            .json(&body)
            .send()
    };
    // Refused before any event: an ordinary error response.
    let response = sse(json!({ "input": inputs[0], "threshold": 2 })).await.expect("sent");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "invalid_field");
    // A budget of one microsecond runs out in the queue, after the stream began: an `error` event.
    let response = sse(json!({ "input": inputs[0], "latency_budget_ms": 0.001 })).await.expect("sent");
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    let (name, data) = events.last().expect("an event").clone();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(data["error"]["code"], "deadline_exceeded");
    // Plain JSON requests still get a request id, made by the server.
    let response = client
        .post(server.url("/v1/models/digits/infer"))
        .json(&json!({ "input": inputs[0] }))
        .send()
        .await
        .expect("sent");
    let id = response.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["request_id"], id.as_str());
    assert_eq!(id.len(), 36, "a UUID");
}

#[tokio::test]
async fn the_openapi_document_matches_the_committed_copy_and_has_a_page() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let served =
        client.get(server.url("/openapi.json")).send().await.expect("sent").text().await.expect("text");
    let document: Value = serde_json::from_str(&served).expect("JSON");
    for path in ["/v1/models/{name}/infer", "/v1/models", "/health"] {
        assert!(document["paths"].get(path).is_some(), "{path} is documented");
    }
    assert!(document["components"]["schemas"].get("InferRequest").is_some());
    let committed_path = common::project_root().join("docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &served).expect("writing docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == served,
        "docs/openapi.json is out of date: run `make openapi` (UPDATE_OPENAPI=1 cargo test --test sse_openapi)"
    );
    // The page (Swagger UI, compiled in): `/docs` redirects to `/docs/`, whose script reads the
    // document from this server, and every asset it names is served.
    let page = client.get(server.url("/docs")).send().await.expect("sent");
    assert_eq!(page.status(), 200);
    assert_eq!(page.url().path(), "/docs/");
    assert!(page.headers()["content-type"].to_str().expect("ascii").starts_with("text/html"));
    let html = page.text().await.expect("text");
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter_map(|part| part.strip_prefix("./"))
        .filter(|a| a.contains('.'))
        .collect();
    assert!(assets.contains(&"swagger-initializer.js"), "{assets:?}");
    for asset in &assets {
        let response = client.get(server.url(&format!("/docs/{asset}"))).send().await.expect("sent");
        assert_eq!(response.status(), 200, "/docs/{asset}");
        if *asset == "swagger-initializer.js" {
            assert!(response.text().await.expect("text").contains("\"url\": \"/openapi.json\""));
        }
    }
    let icon = client.get(server.url("/favicon.ico")).send().await.expect("sent");
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
}

/// Reads an event stream chunk by chunk, noting when each event arrived.
async fn timed_events(response: reqwest::Response) -> Vec<(String, std::time::Instant)> {
    let mut arrivals = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        let now = std::time::Instant::now();
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(name) = block.lines().find_map(|l| l.strip_prefix("event:")) {
                arrivals.push((name.trim().to_owned(), now));
            }
        }
    }
    arrivals
}

#[tokio::test]
async fn partials_arrive_before_the_request_finishes() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let heldout = common::read_json(&shipped_models().join("event-digits-str/heldout.json"));
    let events = &heldout["events"][0];
    // An ensemble of three stepping all ten timesteps: the first partial exists long before the end.
    // The client reads incrementally; over a few tries at least one must show the first partial
    // in an earlier read than the final answer (a buffered response never would).
    let mut streamed = false;
    for _ in 0..5 {
        let response = client
            .post(server.url("/v1/models/event-digits-str/infer"))
            .header("accept", "text/event-stream")
            .json(&json!({ "events": events, "threshold": 1.0 }))
            .send()
            .await
            .expect("sent");
        let arrivals = timed_events(response).await;
        assert_eq!(arrivals.iter().filter(|(n, _)| n == "partial").count(), 10);
        let first = arrivals.first().expect("events");
        let last = arrivals.last().expect("events");
        assert_eq!((first.0.as_str(), last.0.as_str()), ("partial", "final"));
        if first.1 < last.1 {
            streamed = true;
            break;
        }
    }
    assert!(streamed, "the first partial never arrived before the final answer");
}
