//! CORS against the real server: off by default; with `--cors-allow-origin`, a page on an allowed
//! origin passes the preflight, reads JSON, SSE and KServe answers (errors too) and the request id,
//! while other origins get no CORS headers; preflights pass the token check, calls do not.

mod common;

use common::{heldout_digits, run_binary, shipped_models, Server};
use reqwest::header::{HeaderMap, ORIGIN};
use serde_json::json;

const APP: &str = "https://app.example";

async fn preflight(client: &reqwest::Client, server: &Server, path: &str, origin: &str) -> (u16, HeaderMap) {
    let response = client
        .request(reqwest::Method::OPTIONS, server.url(path))
        .header(ORIGIN, origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,authorization")
        .send()
        .await
        .expect("preflight");
    (response.status().as_u16(), response.headers().clone())
}

fn allowed_origin(headers: &HeaderMap) -> Option<&str> {
    headers.get("access-control-allow-origin").and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn without_the_flag_no_origin_is_allowed() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (_, headers) = preflight(&client, &server, "/v1/models/digits/infer", APP).await;
    assert_eq!(allowed_origin(&headers), None, "{headers:?}");
    let response = client.get(server.url("/v1/models")).header(ORIGIN, APP).send().await.expect("sent");
    assert_eq!(allowed_origin(response.headers()), None);
}

#[tokio::test]
async fn an_allowed_origin_reads_json_sse_kserve_and_errors_and_others_do_not() {
    let server = Server::start(
        &shipped_models(),
        &[
            "--cors-allow-origin",
            APP,
            "--auth-tokens",
            "s3cret",
            "--cors-allow-origin",
            "http://localhost:3000",
        ],
    );
    let client = reqwest::Client::new();
    for path in ["/v1/models/digits/infer", "/v2/models/digits/infer"] {
        let (status, headers) = preflight(&client, &server, path, APP).await;
        assert!((200..300).contains(&status), "{path}: a preflight passes without a token ({status})");
        assert_eq!(allowed_origin(&headers), Some(APP), "{path}: {headers:?}");
        let methods = headers.get("access-control-allow-methods").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(methods.contains("POST"), "{methods}");
        let (_, other) = preflight(&client, &server, path, "https://evil.example").await;
        assert_eq!(allowed_origin(&other), None, "{path}: another origin is not allowed: {other:?}");
    }

    let (inputs, _) = heldout_digits();
    let body = json!({"input": inputs[0]});
    // JSON: the answer and its request id are readable by the page.
    let answer = client
        .post(server.url("/v1/models/digits/infer"))
        .header(ORIGIN, APP)
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(answer.status(), 200);
    assert_eq!(allowed_origin(answer.headers()), Some(APP));
    let exposed = answer.headers().get("access-control-expose-headers").and_then(|v| v.to_str().ok());
    assert!(exposed.is_some_and(|v| v.contains("x-request-id")), "{exposed:?}");
    // SSE.
    let stream = client
        .post(server.url("/v1/models/digits/infer"))
        .header(ORIGIN, "http://localhost:3000")
        .header("accept", "text/event-stream")
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(allowed_origin(stream.headers()), Some("http://localhost:3000"));
    assert!(stream.text().await.expect("events").contains("event: final"));
    // A refusal (no token) still carries the header, so the page can read why.
    let refused = client
        .post(server.url("/v1/models/digits/infer"))
        .header(ORIGIN, APP)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401);
    assert_eq!(allowed_origin(refused.headers()), Some(APP));
    // KServe metadata.
    let kserve = client
        .get(server.url("/v2/models/digits"))
        .header(ORIGIN, APP)
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("sent");
    assert_eq!(kserve.status(), 200);
    assert_eq!(allowed_origin(kserve.headers()), Some(APP));
}

#[test]
fn a_malformed_origin_is_refused_at_start_up() {
    let out = run_binary(&["serve", "--models", "models", "--cors-allow-origin", "app.example"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"app.example\" is not an origin"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
