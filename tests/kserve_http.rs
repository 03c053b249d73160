//! The KServe v2 / Open Inference Protocol HTTP door against the real server and the shipped models:
//! health, metadata, configuration, statistics, JSON and binary tensor data, and the errors, each
//! checked against the `/v1` answer for the same input.

mod common;

use std::collections::BTreeMap;

use common::{heldout_digits, infer, read_json, shipped_models, Server, SHIPPED_MODELS};
use serde_json::{json, Value};

/// Held-out digits: the first answer after one timestep; 55, 106 and 190 need 2, 4 and 4, and 15
/// runs all 8 (the offline evaluation at the default threshold).
const SAMPLES: [usize; 7] = [0, 1, 2, 15, 55, 106, 190];

const INFER: &str = "/v2/models/digits/infer";

async fn get(client: &reqwest::Client, server: &Server, path: &str) -> (u16, Value) {
    let response = client.get(server.url(path)).send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

async fn v2_infer(client: &reqwest::Client, server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let response = client.post(server.url(path)).json(body).send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// A held-out digit as 64 floats, row after row.
fn flat(input: &Value) -> Vec<f32> {
    input[0]
        .as_array()
        .expect("[1, 8, 8]")
        .iter()
        .flat_map(|row| row.as_array().expect("row").iter().map(|v| v.as_f64().expect("number") as f32))
        .collect()
}

fn fp32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The one output named `name` of a v2 answer.
fn output<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {answer}"))
}

fn output_names(answer: &Value) -> Vec<&str> {
    answer["outputs"].as_array().expect("outputs").iter().map(|o| o["name"].as_str().expect("name")).collect()
}

fn f32s(value: &Value) -> Vec<f32> {
    value.as_array().expect("array").iter().map(|v| v.as_f64().expect("number") as f32).collect()
}

/// The v2 answer agrees with the v1 answer: label, class, timesteps, exit reason and probabilities.
fn assert_same_answer(v2: &Value, v1: &Value, what: &str) {
    assert_eq!(v2["model_version"], "1", "{what}");
    assert_eq!(output(v2, "label")["data"], json!([v1["label"]]), "{what}: {v2} / {v1}");
    assert_eq!(output(v2, "class_index")["data"], json!([v1["class_index"]]), "{what}");
    assert_eq!(output(v2, "timesteps")["data"], json!([v1["timesteps"]]), "{what}");
    assert_eq!(output(v2, "exit_reason")["data"], json!([v1["exit_reason"]]), "{what}");
    let probabilities = output(v2, "probabilities");
    assert_eq!(probabilities["datatype"], "FP32");
    assert_eq!(probabilities["shape"], json!([1, 10]));
    assert_eq!(f32s(&probabilities["data"]), f32s(&v1["probabilities"]), "{what}");
    assert_eq!(
        f32s(&output(v2, "confidence")["data"]),
        vec![v1["confidence"].as_f64().expect("confidence") as f32]
    );
}

fn x_json(data: Value, shape: &[usize]) -> Value {
    json!({"name": "x", "datatype": "FP32", "shape": shape, "data": data})
}

/// A body with binary tensor data: the JSON header, then the bytes; its header length goes in
/// `Inference-Header-Content-Length`.
fn binary_body(header: &Value, binary: &[u8]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(header).expect("JSON");
    let length = body.len();
    body.extend_from_slice(binary);
    (body, length)
}

async fn post_binary(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    header: &Value,
    binary: &[u8],
) -> reqwest::Response {
    let (body, length) = binary_body(header, binary);
    client
        .post(server.url(path))
        .header("Inference-Header-Content-Length", length.to_string())
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("request sent")
}

/// Splits a response with binary outputs into its JSON part and each binary output's bytes.
async fn binary_answer(response: reqwest::Response) -> (Value, BTreeMap<String, Vec<u8>>) {
    assert_eq!(response.status(), 200);
    let length: usize = response
        .headers()
        .get("inference-header-content-length")
        .expect("binary answers carry Inference-Header-Content-Length")
        .to_str()
        .expect("text")
        .parse()
        .expect("a number");
    assert_eq!(response.headers()["content-type"], "application/octet-stream");
    let body = response.bytes().await.expect("body");
    let header: Value = serde_json::from_slice(&body[..length]).expect("the JSON part");
    let mut rest = &body[length..];
    let mut binary = BTreeMap::new();
    for o in header["outputs"].as_array().expect("outputs") {
        if let Some(size) = o["parameters"]["binary_data_size"].as_u64() {
            assert!(o.get("data").is_none(), "{o}: binary outputs have no data");
            let (mine, tail) = rest.split_at(size as usize);
            binary.insert(o["name"].as_str().expect("name").to_owned(), mine.to_vec());
            rest = tail;
        }
    }
    assert!(rest.is_empty(), "{} bytes past the last binary output", rest.len());
    (header, binary)
}

fn decode_fp32(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
}

fn decode_int64(bytes: &[u8]) -> Vec<i64> {
    assert_eq!(bytes.len() % 8, 0);
    bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// BYTES elements: each a little-endian u32 length, then that many bytes.
fn decode_bytes(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (length, rest) = bytes.split_at(4);
        let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
        let (text, rest) = rest.split_at(length);
        out.push(String::from_utf8(text.to_vec()).expect("UTF-8"));
        bytes = rest;
    }
    out
}

/// A KServe error: the status, and `{"error": "<message>"}` whose message mentions each of `mentions`.
fn assert_v2_error(status: u16, body: &Value, expected: u16, mentions: &[&str], what: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    let message = body["error"].as_str().unwrap_or_else(|| panic!("{what}: error is a string: {body}"));
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: {body}");
    for m in mentions {
        assert!(message.contains(m), "{what}: {message:?} should mention {m:?}");
    }
}

#[tokio::test]
async fn health_metadata_configuration_and_versions() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();

    assert_eq!(get(&client, &server, "/v2/health/live").await, (200, json!({"live": true})));
    assert_eq!(get(&client, &server, "/v2/health/ready").await, (200, json!({"ready": true})));

    let (status, metadata) = get(&client, &server, "/v2").await;
    assert_eq!(status, 200);
    assert_eq!(metadata["name"], "spikeserve");
    assert_eq!(metadata["version"], env!("CARGO_PKG_VERSION"));
    let extensions: Vec<&str> =
        metadata["extensions"].as_array().expect("extensions").iter().flat_map(Value::as_str).collect();
    for extension in ["binary_tensor_data", "parameters", "model_configuration", "statistics"] {
        assert!(extensions.contains(&extension), "{extension} missing from {extensions:?}");
    }

    let (status, digits) = get(&client, &server, "/v2/models/digits").await;
    assert_eq!(status, 200, "{digits}");
    assert_eq!(digits["name"], "digits");
    assert_eq!(digits["versions"], json!(["1"]));
    assert_eq!(digits["inputs"], json!([{"name": "x", "datatype": "FP32", "shape": [1, 8, 8]}]));
    assert_eq!(
        output_names(&json!({"outputs": digits["outputs"]})),
        ["probabilities", "class_index", "label", "confidence", "timesteps", "exit_reason"]
    );
    assert_eq!(output(&json!({"outputs": digits["outputs"]}), "probabilities")["shape"], json!([1, 10]));
    assert_eq!(output(&json!({"outputs": digits["outputs"]}), "label")["datatype"], "BYTES");
    assert_eq!(output(&json!({"outputs": digits["outputs"]}), "timesteps")["datatype"], "INT64");
    assert_eq!(get(&client, &server, "/v2/models/digits/versions/1").await, (200, digits.clone()));

    let (status, events) = get(&client, &server, "/v2/models/event-digits").await;
    assert_eq!(status, 200);
    assert_eq!(
        events["inputs"],
        json!([
            {"name": "x", "datatype": "FP32", "shape": [-1, 2, 34, 34]},
            {"name": "events", "datatype": "INT64", "shape": [-1, 4]},
        ])
    );
    let (_, ensemble) = get(&client, &server, "/v2/models/digits-tet").await;
    assert!(output_names(&json!({"outputs": ensemble["outputs"]})).contains(&"uncertainty"));

    // Only version 1 exists; other versions and models are 404s in the protocol's error form.
    for path in [
        "/v2/models/digits/versions/2",
        "/v2/models/digits/versions/2/ready",
        "/v2/models/digits/versions/2/config",
        "/v2/models/digits/versions/2/stats",
    ] {
        let (status, body) = get(&client, &server, path).await;
        assert_v2_error(status, &body, 404, &["digits/versions/2", "version 1 only"], path);
    }
    let (status, body) = get(&client, &server, "/v2/models/nope").await;
    assert_v2_error(status, &body, 404, &["\"nope\" is not loaded", "digits"], "unknown model");
    let (status, body) = get(&client, &server, "/v2/models/nope/ready").await;
    assert_v2_error(status, &body, 404, &["nope"], "unknown model ready");

    assert_eq!(
        get(&client, &server, "/v2/models/digits/ready").await,
        (200, json!({"name": "digits", "ready": true}))
    );
    assert_eq!(
        get(&client, &server, "/v2/models/digits/versions/1/ready").await,
        (200, json!({"name": "digits", "ready": true}))
    );

    let (status, config) = get(&client, &server, "/v2/models/digits/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["name"], "digits");
    assert_eq!(config["max_batch_size"], 0);
    assert_eq!(config["input"], json!([{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 8, 8]}]));
    let outputs = config["output"].as_array().expect("output");
    let label = outputs.iter().find(|o| o["name"] == "label").expect("label");
    assert_eq!(label["data_type"], "TYPE_STRING");
    let probabilities = outputs.iter().find(|o| o["name"] == "probabilities").expect("probabilities");
    assert_eq!(probabilities, &json!({"name": "probabilities", "data_type": "TYPE_FP32", "dims": [1, 10]}));
    assert_eq!(config["model_transaction_policy"]["decoupled"], true);
    let eval = read_json(&shipped_models().join("digits/eval.json"));
    assert_eq!(config["parameters"]["timesteps"]["string_value"], eval["timesteps"].to_string());
    assert_eq!(
        config["parameters"]["default_threshold"]["string_value"],
        eval["default_threshold"].to_string()
    );
    assert_eq!(config["parameters"]["input_kind"]["string_value"], "static");
    assert_eq!(config["parameters"]["labels"]["string_value"], "0,1,2,3,4,5,6,7,8,9");
    assert_eq!(get(&client, &server, "/v2/models/digits/versions/1/config").await, (200, config));
}

#[tokio::test]
async fn json_inference_equals_v1_and_honours_parameters() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let eval = read_json(&shipped_models().join("digits/eval.json"));
    let offline = &eval["anytime_at_default_threshold"];

    for &i in &SAMPLES {
        let (status, v1) = infer(&client, &server.base, "digits", &json!({"input": inputs[i]})).await;
        assert_eq!(status, 200, "{v1}");
        assert_eq!(v1["timesteps"], offline["exit_timesteps"][i], "sample {i}");
        assert_eq!(v1["class_index"], offline["predictions"][i], "sample {i}");
        // Nested data, flat data, and a leading batch dimension all give the same answer.
        let bodies = [
            json!({"inputs": [x_json(inputs[i].clone(), &[1, 8, 8])]}),
            json!({"inputs": [x_json(json!(flat(&inputs[i])), &[1, 8, 8])]}),
            json!({"inputs": [x_json(json!(flat(&inputs[i])), &[1, 1, 8, 8])]}),
        ];
        for body in &bodies {
            let (status, v2) = v2_infer(&client, &server, INFER, body).await;
            assert_eq!(status, 200, "sample {i}: {v2}");
            assert_eq!(v2["model_name"], "digits");
            assert_same_answer(&v2, &v1, &format!("sample {i}"));
            assert_eq!(
                output_names(&v2),
                ["probabilities", "class_index", "label", "confidence", "timesteps", "exit_reason"]
            );
        }
        let (status, versioned) =
            v2_infer(&client, &server, "/v2/models/digits/versions/1/infer", &bodies[2]).await;
        assert_eq!(status, 200, "{versioned}");
        assert_same_answer(&versioned, &v1, &format!("sample {i}, versioned"));
    }

    let x = x_json(json!(flat(&inputs[106])), &[1, 1, 8, 8]);
    // threshold 1.0 runs all 8 timesteps, as /v1 does.
    let (_, v1) =
        infer(&client, &server.base, "digits", &json!({"input": inputs[106], "threshold": 1.0})).await;
    let (status, v2) =
        v2_infer(&client, &server, INFER, &json!({"inputs": [x], "parameters": {"threshold": 1.0}})).await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(output(&v2, "timesteps")["data"], json!([8]));
    assert_eq!(output(&v2, "exit_reason")["data"], json!(["max_timesteps"]));
    assert_same_answer(&v2, &v1, "threshold 1.0");
    // max_timesteps caps them.
    let (status, v2) = v2_infer(
        &client,
        &server,
        INFER,
        &json!({"inputs": [x], "parameters": {"threshold": 1.0, "max_timesteps": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(output(&v2, "timesteps")["data"], json!([3]));
    assert_eq!(output(&v2, "exit_reason")["data"], json!(["max_timesteps"]));
    let (_, v1) = infer(
        &client,
        &server.base,
        "digits",
        &json!({"input": inputs[106], "threshold": 1.0, "max_timesteps": 3}),
    )
    .await;
    assert_same_answer(&v2, &v1, "max_timesteps 3");
    // A lower threshold exits no later than the default (sample 106 needs 4 at 0.9).
    let (_, v2) =
        v2_infer(&client, &server, INFER, &json!({"inputs": [x], "parameters": {"threshold": 0.5}})).await;
    assert!(output(&v2, "timesteps")["data"][0].as_u64().expect("timesteps") < 4, "{v2}");
    // timeout is the latency budget in microseconds: a generous one changes nothing, one of 1 us
    // runs out before the first timestep.
    let (status, v2) =
        v2_infer(&client, &server, INFER, &json!({"inputs": [x], "parameters": {"timeout": 10_000_000}}))
            .await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(output(&v2, "timesteps")["data"], json!([4]));
    let (status, body) =
        v2_infer(&client, &server, INFER, &json!({"inputs": [x], "parameters": {"timeout": 1}})).await;
    assert_v2_error(
        status,
        &body,
        504,
        &["latency budget ran out before the first timestep"],
        "timeout 1 us",
    );

    // Only the outputs asked for; the request id is echoed.
    let (status, v2) = v2_infer(
        &client,
        &server,
        INFER,
        &json!({"id": "my-request", "inputs": [x], "outputs": [{"name": "label"}]}),
    )
    .await;
    assert_eq!(status, 200, "{v2}");
    assert_eq!(v2["id"], "my-request");
    assert_eq!(
        v2["outputs"],
        json!([{
            "name": "label", "datatype": "BYTES", "shape": [1],
            "data": [offline["predictions"][106].to_string()]
        }])
    );
    let (_, two) = v2_infer(
        &client,
        &server,
        INFER,
        &json!({"inputs": [x], "outputs": [{"name": "timesteps"}, {"name": "probabilities"}]}),
    )
    .await;
    assert_eq!(output_names(&two), ["probabilities", "timesteps"]);
}

#[tokio::test]
async fn binary_tensor_data_in_and_out() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    for i in [0, 15, 106] {
        let values = flat(&inputs[i]);
        let (_, json_answer) =
            v2_infer(&client, &server, INFER, &json!({"inputs": [x_json(json!(values), &[1, 1, 8, 8])]}))
                .await;
        let header = json!({"inputs": [{
            "name": "x", "datatype": "FP32", "shape": [1, 1, 8, 8], "parameters": {"binary_data_size": 256}
        }]});
        // Binary in, JSON out: the same answer as JSON in.
        let response = post_binary(&client, &server, INFER, &header, &fp32_bytes(&values)).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("inference-header-content-length").is_none());
        let answer: Value = response.json().await.expect("JSON answer");
        assert_eq!(answer["outputs"], json_answer["outputs"], "sample {i}");

        // Binary in, binary out.
        let mut header = header.clone();
        header["parameters"] = json!({"binary_data_output": true});
        let response = post_binary(&client, &server, INFER, &header, &fp32_bytes(&values)).await;
        let (json_part, binary) = binary_answer(response).await;
        assert_eq!(binary.len(), 6, "every output is binary: {json_part}");
        for o in json_part["outputs"].as_array().expect("outputs") {
            let name = o["name"].as_str().expect("name");
            let expected = output(&json_answer, name);
            assert_eq!(o["datatype"], expected["datatype"], "{name}");
            assert_eq!(o["shape"], expected["shape"], "{name}");
        }
        assert_eq!(
            decode_fp32(&binary["probabilities"]),
            f32s(&output(&json_answer, "probabilities")["data"])
        );
        assert_eq!(decode_fp32(&binary["confidence"]), f32s(&output(&json_answer, "confidence")["data"]));
        let label = decode_bytes(&binary["label"]);
        assert_eq!(json!(label), output(&json_answer, "label")["data"]);
        assert_eq!(binary["label"].len(), 4 + label[0].len(), "one length-prefixed element");
        assert_eq!(json!(decode_bytes(&binary["exit_reason"])), output(&json_answer, "exit_reason")["data"]);
        assert_eq!(json!(decode_int64(&binary["timesteps"])), output(&json_answer, "timesteps")["data"]);
        assert_eq!(json!(decode_int64(&binary["class_index"])), output(&json_answer, "class_index")["data"]);

        // Binary for some outputs only, as each requested output's parameters say.
        let mut header = header.clone();
        header["parameters"] = json!({});
        header["outputs"] = json!([
            {"name": "probabilities", "parameters": {"binary_data": true}},
            {"name": "label", "parameters": {"binary_data": false}},
        ]);
        let response = post_binary(&client, &server, INFER, &header, &fp32_bytes(&values)).await;
        let (json_part, binary) = binary_answer(response).await;
        assert_eq!(binary.keys().collect::<Vec<_>>(), ["probabilities"]);
        assert_eq!(
            decode_fp32(&binary["probabilities"]),
            f32s(&output(&json_answer, "probabilities")["data"])
        );
        assert_eq!(output(&json_part, "label")["data"], output(&json_answer, "label")["data"]);
    }
}

#[tokio::test]
async fn events_input_equals_v1() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let model = shipped_models().join("event-digits");
    let heldout = read_json(&model.join("heldout.json"));
    let offline = &read_json(&model.join("eval.json"))["anytime_at_default_threshold"];
    let samples = heldout["events"].as_array().expect("events");
    let path = "/v2/models/event-digits/infer";
    for (i, events) in samples.iter().enumerate().take(6) {
        let (status, v1) = infer(&client, &server.base, "event-digits", &json!({"events": events})).await;
        assert_eq!(status, 200, "{v1}");
        let n = events.as_array().expect("events").len();
        let body =
            json!({"inputs": [{"name": "events", "datatype": "INT64", "shape": [n, 4], "data": events}]});
        let (status, v2) = v2_infer(&client, &server, path, &body).await;
        assert_eq!(status, 200, "sample {i}: {v2}");
        assert_same_answer(&v2, &v1, &format!("event sample {i}"));
        assert_eq!(output(&v2, "timesteps")["data"][0], offline["exit_timesteps"][i], "sample {i}");
        assert_eq!(output(&v2, "class_index")["data"][0], offline["predictions"][i], "sample {i}");
        // With the batch dimension a batching server such as Triton takes: [1, N, 4].
        let batched =
            json!({"inputs": [{"name": "events", "datatype": "INT64", "shape": [1, n, 4], "data": events}]});
        let (status, with_batch) = v2_infer(&client, &server, path, &batched).await;
        assert_eq!(status, 200, "sample {i}: {with_batch}");
        assert_same_answer(&with_batch, &v1, &format!("event sample {i} as [1, N, 4]"));

        // The same events as INT64 binary data.
        let binary: Vec<u8> = events
            .as_array()
            .expect("events")
            .iter()
            .flat_map(|e| e.as_array().expect("event").iter().map(|v| v.as_i64().expect("integer")))
            .flat_map(i64::to_le_bytes)
            .collect();
        let header = json!({"inputs": [{
            "name": "events", "datatype": "INT64", "shape": [n, 4],
            "parameters": {"binary_data_size": binary.len()}
        }]});
        let response = post_binary(&client, &server, path, &header, &binary).await;
        assert_eq!(response.status(), 200);
        let from_binary: Value = response.json().await.expect("JSON");
        assert_same_answer(&from_binary, &v1, &format!("binary event sample {i}"));
    }
    // Events off the sensor are refused by index and field, as on /v1.
    let bad = json!({"inputs": [{"name": "events", "datatype": "INT64", "shape": [2, 4],
        "data": [[0, 0, 10, 1], [40, 3, 20, 0]]}]});
    let (status, body) = v2_infer(&client, &server, path, &bad).await;
    assert_v2_error(status, &body, 400, &["events[1]: x = 40"], "event off the sensor");
    let bad =
        json!({"inputs": [{"name": "events", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 10, 1]}]});
    let (status, body) = v2_infer(&client, &server, path, &bad).await;
    assert_v2_error(status, &body, 400, &["inputs[events]", "INT64", "FP32"], "events as FP32");
    let bad =
        json!({"inputs": [{"name": "events", "datatype": "INT64", "shape": [1, 3], "data": [0, 0, 10]}]});
    let (status, body) = v2_infer(&client, &server, path, &bad).await;
    assert_v2_error(status, &body, 400, &["inputs[events]", "[N, 4]"], "events of 3 columns");
}

#[tokio::test]
async fn bad_requests_get_a_4xx_naming_the_field_and_the_server_goes_on() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let values = flat(&inputs[0]);
    let x = x_json(json!(values), &[1, 1, 8, 8]);
    let (_, good) = v2_infer(&client, &server, INFER, &json!({"inputs": [x]})).await;
    assert_eq!(output(&good, "label")["data"], json!(["7"]));

    let letters = vec!["a"; 64];
    let json_cases = [
        (
            "BYTES datatype",
            json!({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 8, 8], "data": letters}]}),
            vec!["inputs[x]", "BYTES"],
        ),
        (
            "BYTES datatype, numeric data",
            json!({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 8, 8], "data": values}]}),
            vec!["inputs[x]", "BYTES"],
        ),
        (
            "wrong element count",
            json!({"inputs": [x_json(json!(values[..63]), &[1, 8, 8])]}),
            vec!["inputs[x]", "64", "63"],
        ),
        (
            "wrong shape",
            json!({"inputs": [x_json(json!(values), &[8, 8])]}),
            vec!["[8, 8]", "expects [1, 8, 8]"],
        ),
        (
            "a string element",
            json!({"inputs": [x_json(json!([["a"]]), &[1, 1, 1])]}),
            vec!["inputs[x].data[0]"],
        ),
        (
            "no data",
            json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8, 8]}]}),
            vec!["inputs[x]", "no `data`"],
        ),
        (
            "unknown input",
            json!({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, 8, 8], "data": values}]}),
            vec!["unknown input \"y\""],
        ),
        ("two inputs", json!({"inputs": [x, x]}), vec!["exactly one input", "found 2"]),
        ("no inputs", json!({"inputs": []}), vec!["exactly one input"]),
        (
            "events to a static model",
            json!({"inputs": [{"name": "events", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1]}]
            }),
            vec!["events", "digits"],
        ),
        (
            "unknown output",
            json!({"inputs": [x], "outputs": [{"name": "nope"}]}),
            vec!["unknown output \"nope\""],
        ),
        ("threshold 0", json!({"inputs": [x], "parameters": {"threshold": 0.0}}), vec!["threshold"]),
        ("threshold above 1", json!({"inputs": [x], "parameters": {"threshold": 1.5}}), vec!["threshold"]),
        (
            "threshold as text",
            json!({"inputs": [x], "parameters": {"threshold": "high"}}),
            vec!["parameters.threshold"],
        ),
        (
            "negative timeout",
            json!({"inputs": [x], "parameters": {"timeout": -5}}),
            vec!["parameters.timeout"],
        ),
        (
            "max_timesteps 0",
            json!({"inputs": [x], "parameters": {"max_timesteps": 0}}),
            vec!["max_timesteps"],
        ),
        (
            "max_timesteps past T",
            json!({"inputs": [x], "parameters": {"max_timesteps": 9}}),
            vec!["max_timesteps"],
        ),
        (
            "fractional max_timesteps",
            json!({"inputs": [x], "parameters": {"max_timesteps": 2.5}}),
            vec!["parameters.max_timesteps"],
        ),
        ("unknown field", json!({"inputs": [x], "priority": 1}), vec!["priority"]),
        (
            "binary_data_size without binary data",
            json!({"inputs": [{
                "name": "x", "datatype": "FP32", "shape": [1, 1, 8, 8],
                "parameters": {"binary_data_size": 256}
            }]}),
            vec!["binary_data_size", "0 bytes"],
        ),
    ];
    for (what, body, mentions) in &json_cases {
        let (status, answer) = v2_infer(&client, &server, INFER, body).await;
        assert_v2_error(status, &answer, 400, mentions, what);
    }

    let header = |size: usize| {
        json!({"inputs": [{
            "name": "x", "datatype": "FP32", "shape": [1, 1, 8, 8], "parameters": {"binary_data_size": size}
        }]})
    };
    let mut nan = values.clone();
    nan[5] = f32::NAN;
    let mut extra = fp32_bytes(&values);
    extra.extend([0, 0, 0, 0]);
    let binary_cases = [
        ("NaN in binary data", header(256), fp32_bytes(&nan), vec!["x[5]", "NaN"]),
        (
            "infinity in binary data",
            header(256),
            fp32_bytes(&[f32::INFINITY; 64]),
            vec!["x[0]", "not a finite"],
        ),
        (
            "binary_data_size too big",
            header(260),
            fp32_bytes(&values),
            vec!["inputs[x].parameters.binary_data_size", "260"],
        ),
        (
            "binary_data_size too small",
            header(252),
            fp32_bytes(&values),
            vec!["inputs[x].parameters.binary_data_size", "252", "256"],
        ),
        ("bytes left over", header(256), extra, vec!["4 bytes are left over"]),
        (
            "binary BYTES",
            json!({"inputs": [{
                "name": "x", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}
            }]}),
            b"\x01\x00\x00\x00a".to_vec(),
            vec!["inputs[x]", "BYTES"],
        ),
        (
            "binary data not a whole element",
            json!({"inputs": [{
                "name": "x", "datatype": "FP32", "shape": [-1], "parameters": {"binary_data_size": 6}
            }]}),
            vec![0; 6],
            vec!["inputs[x]"],
        ),
    ];
    for (what, header, binary, mentions) in &binary_cases {
        let response = post_binary(&client, &server, INFER, header, binary).await;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.expect("JSON error");
        assert_v2_error(status, &answer, 400, mentions, what);
    }

    // The header length must fit the body, and must be a number.
    let (body, length) = binary_body(&header(256), &fp32_bytes(&values));
    for (what, claimed, mentions) in [
        (
            "header length past the body",
            (length + 1000).to_string(),
            vec!["inference-header-content-length", "longer than"],
        ),
        ("header length not a number", "many".to_owned(), vec!["inference-header-content-length"]),
        ("header length cuts the JSON", (length - 3).to_string(), vec!["not valid JSON"]),
    ] {
        let response = client
            .post(server.url(INFER))
            .header("Inference-Header-Content-Length", claimed)
            .body(body.clone())
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.expect("JSON error");
        assert_v2_error(status, &answer, 400, &mentions, what);
    }

    // Not JSON, and not binary data either: 415 (as on /v1), saying what to send.
    let response = client
        .post(server.url(INFER))
        .header("Content-Type", "text/plain")
        .body(serde_json::to_vec(&json!({"inputs": [x]})).expect("JSON"))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("JSON error");
    assert_v2_error(
        status,
        &answer,
        415,
        &["text/plain", "application/json", "inference-header-content-length"],
        "text/plain",
    );
    let response = client
        .post(server.url(INFER))
        .header("Content-Type", "application/json")
        .body("{\"inputs\": [")
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("JSON error");
    assert_v2_error(status, &answer, 400, &["not valid JSON", "line 1"], "truncated JSON");

    let (status, answer) = v2_infer(&client, &server, "/v2/models/nope/infer", &json!({"inputs": [x]})).await;
    assert_v2_error(status, &answer, 404, &["\"nope\" is not loaded", "digits"], "unknown model");
    let (status, answer) =
        v2_infer(&client, &server, "/v2/models/digits/versions/7/infer", &json!({"inputs": [x]})).await;
    assert_v2_error(status, &answer, 404, &["digits/versions/7"], "unknown version");

    // After all of that the server still answers, the same as before.
    let (status, again) = v2_infer(&client, &server, INFER, &json!({"inputs": [x]})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["outputs"], good["outputs"]);
    let response = post_binary(&client, &server, INFER, &header(256), &fp32_bytes(&values)).await;
    assert_eq!(response.status(), 200);
    let from_binary: Value = response.json().await.expect("JSON");
    assert_eq!(from_binary["outputs"], good["outputs"]);
}

#[tokio::test]
async fn statistics_count_requests() {
    let server = Server::start(&shipped_models(), &[]);
    let client = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let stats = |body: &Value| body["model_stats"][0].clone();

    let (status, before) = get(&client, &server, "/v2/models/digits/stats").await;
    assert_eq!(status, 200, "{before}");
    let before = stats(&before);
    assert_eq!(before["name"], "digits");
    assert_eq!(before["version"], "1");
    assert_eq!(before["inference_count"], 0);
    assert_eq!(before["inference_stats"]["success"]["count"], 0);

    let mut timesteps = 0;
    for &i in &SAMPLES[..4] {
        let (status, answer) = v2_infer(
            &client,
            &server,
            INFER,
            &json!({"inputs": [x_json(json!(flat(&inputs[i])), &[1, 8, 8])]}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        timesteps += output(&answer, "timesteps")["data"][0].as_u64().expect("timesteps");
    }
    let (_, after) = get(&client, &server, "/v2/models/digits/versions/1/stats").await;
    let after = stats(&after);
    assert_eq!(after["inference_count"], 4, "{after}");
    assert_eq!(after["inference_stats"]["success"]["count"], 4);
    assert_eq!(after["inference_stats"]["compute_infer"]["count"], 4);
    let steps = after["execution_count"].as_u64().expect("execution_count");
    assert!(steps >= 1 && steps <= timesteps, "{steps} steps for {timesteps} timesteps");
    assert!(after["inference_stats"]["success"]["ns"].as_u64().expect("ns") > 0);
    assert!(after["last_inference"].as_u64().expect("last_inference") > 0);

    // Every model, as Triton's clients ask when they name none.
    let (status, every) = get(&client, &server, "/v2/models/stats").await;
    assert_eq!(status, 200, "{every}");
    let names: Vec<&str> = every["model_stats"]
        .as_array()
        .expect("model_stats")
        .iter()
        .flat_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, SHIPPED_MODELS);
    assert_eq!(every["model_stats"][0]["inference_count"], 4);
    let (status, body) = get(&client, &server, "/v2/models/nope/stats").await;
    assert_v2_error(status, &body, 404, &["nope"], "stats of an unknown model");
}
