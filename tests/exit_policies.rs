//! Exit policies (`exit-policies.json`): every door runs the same calibrated row of the policy asked
//! (or the model's own choice) and names it, the guarantee and the exit cause in the answer, the
//! metrics count exits per policy, wrong requests are refused naming the field, and a broken policy
//! file refuses its model (the others keep serving) until a fixed one is reloaded.
//!
//! That the server's exits equal the training job's offline evaluation of the same file's rows on
//! every held-out sample is checked through KServe gRPC by `benchmarks/python/test_anytime_eval.py`
//! (and on the full test split by `make bench-anytime`); here the doors are held to each other.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    heldout_digits, infer, read_json, refused_on_v1_and_sse, session_refusal, shipped_models, sse_final,
    Server,
};
use serde_json::{json, Value};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use spikeserve::api::grpc::inference_pb as kpb;
use spikeserve::api::grpc::inference_pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// What every door must agree on.
#[derive(Debug, Clone, PartialEq)]
struct Exit {
    timesteps: u64,
    class_index: u64,
    exit_reason: String,
    policy: String,
    max_accuracy_drop: Option<f64>,
    guarantee: Option<f64>,
}

impl Exit {
    fn of_json(answer: &Value) -> Self {
        Self {
            timesteps: answer["timesteps"].as_u64().expect("timesteps"),
            class_index: answer["class_index"].as_u64().expect("class_index"),
            exit_reason: answer["exit_reason"].as_str().expect("exit_reason").to_owned(),
            policy: answer["policy"].as_str().expect("policy").to_owned(),
            max_accuracy_drop: answer["max_accuracy_drop"].as_f64(),
            guarantee: answer["guarantee"].as_f64(),
        }
    }

    fn of_grpc(answer: &pb::InferResponse) -> Self {
        let reason = match pb::ExitReason::try_from(answer.exit_reason).expect("a known exit reason") {
            pb::ExitReason::Confident => "confident",
            pb::ExitReason::MaxTimesteps => "max_timesteps",
            pb::ExitReason::Deadline => "deadline",
            pb::ExitReason::Cancelled => "cancelled",
            pb::ExitReason::Policy => "policy",
            pb::ExitReason::Unspecified => "unspecified",
        };
        Self {
            timesteps: u64::from(answer.timesteps),
            class_index: u64::from(answer.class_index),
            exit_reason: reason.to_owned(),
            policy: answer.policy.clone(),
            max_accuracy_drop: answer.max_accuracy_drop,
            guarantee: answer.guarantee,
        }
    }

    fn of_kserve(response: &kpb::ModelInferResponse) -> Self {
        use kpb::infer_parameter::ParameterChoice;
        let raw = |name: &str| {
            let index = response.outputs.iter().position(|o| o.name == name).expect("an output");
            response.raw_output_contents[index].clone()
        };
        let int = |name: &str| i64::from_le_bytes(raw(name)[..8].try_into().expect("8 bytes")) as u64;
        let reason = raw("exit_reason");
        let parameter = |name: &str| response.parameters.get(name).and_then(|p| p.parameter_choice.clone());
        let double = |name: &str| match parameter(name) {
            Some(ParameterChoice::DoubleParam(v)) => Some(v),
            _ => None,
        };
        Self {
            timesteps: int("timesteps"),
            class_index: int("class_index"),
            exit_reason: String::from_utf8(reason[4..].to_vec()).expect("text"),
            policy: match parameter("policy") {
                Some(ParameterChoice::StringParam(name)) => name,
                other => panic!("policy parameter: {other:?}"),
            },
            max_accuracy_drop: double("max_accuracy_drop"),
            guarantee: double("guarantee"),
        }
    }
}

/// One way of asking.
#[derive(Debug, Clone, Copy)]
struct Ask {
    policy: Option<&'static str>,
    budget: Option<f64>,
    guarantee: Option<f64>,
}

const ASKS: [Ask; 7] = [
    Ask { policy: None, budget: Some(0.5), guarantee: None },
    Ask { policy: Some("cutoff"), budget: Some(0.5), guarantee: None },
    Ask { policy: Some("schedule"), budget: Some(1.0), guarantee: None },
    Ask { policy: Some("learned"), budget: Some(0.5), guarantee: None },
    Ask { policy: Some("learned"), budget: None, guarantee: None },
    Ask { policy: None, budget: Some(2.0), guarantee: Some(0.9) },
    Ask { policy: Some("schedule"), budget: Some(1.0), guarantee: Some(0.95) },
];

impl Ask {
    fn json(&self, input: (&str, &Value)) -> Value {
        let mut body = json!({ input.0: input.1 });
        if let Some(p) = self.policy {
            body["policy"] = json!(p);
        }
        if let Some(b) = self.budget {
            body["max_accuracy_drop"] = json!(b);
        }
        if let Some(g) = self.guarantee {
            body["guarantee"] = json!(g);
        }
        body
    }

    fn grpc(&self) -> pb::Policy {
        pb::Policy {
            policy: self.policy.map(str::to_owned),
            max_accuracy_drop: self.budget,
            guarantee: self.guarantee,
            ..Default::default()
        }
    }

    fn kserve(&self) -> HashMap<String, kpb::InferParameter> {
        use kpb::infer_parameter::ParameterChoice;
        let mut parameters = HashMap::new();
        let mut put = |name: &str, choice: ParameterChoice| {
            parameters.insert(name.to_owned(), kpb::InferParameter { parameter_choice: Some(choice) });
        };
        if let Some(p) = self.policy {
            put("policy", ParameterChoice::StringParam(p.to_owned()));
        }
        if let Some(b) = self.budget {
            put("max_accuracy_drop", ParameterChoice::DoubleParam(b));
        }
        if let Some(g) = self.guarantee {
            put("guarantee", ParameterChoice::DoubleParam(g));
        }
        parameters
    }

    fn kserve_json(&self) -> Value {
        let mut parameters = json!({});
        if let Some(p) = self.policy {
            parameters["policy"] = json!(p);
        }
        if let Some(b) = self.budget {
            parameters["max_accuracy_drop"] = json!(b);
        }
        if let Some(g) = self.guarantee {
            parameters["guarantee"] = json!(g);
        }
        parameters
    }

    /// The policy and row the model's file says this ask runs: (policy, budget, level).
    fn expected(&self, file: &Value) -> (String, f64, Option<f64>) {
        let policy = self.policy.map(str::to_owned).unwrap_or_else(|| {
            let field = if self.guarantee.is_some() { "serving_policy_guarantee" } else { "serving_policy" };
            file[field].as_str().expect("serving policy").to_owned()
        });
        let budget = self.budget.unwrap_or(0.5);
        let spec = &file["policies"][&policy];
        let (rows, level): (Vec<&Value>, Option<f64>) = match self.guarantee {
            None => (spec["point"].as_array().expect("rows").iter().collect(), None),
            Some(asked) => {
                let mut levels: Vec<f64> = spec["guarantee"]
                    .as_array()
                    .expect("rows")
                    .iter()
                    .map(|r| r["level"].as_f64().expect("level"))
                    .filter(|&l| l >= asked)
                    .collect();
                levels.sort_by(f64::total_cmp);
                let level = levels[0];
                let rows = spec["guarantee"]
                    .as_array()
                    .expect("rows")
                    .iter()
                    .filter(|r| r["level"].as_f64() == Some(level))
                    .collect();
                (rows, Some(level))
            }
        };
        let row = rows
            .iter()
            .map(|r| r["max_accuracy_drop"].as_f64().expect("budget"))
            .filter(|&b| b <= budget)
            .fold(f64::NEG_INFINITY, f64::max);
        (policy, row, level)
    }
}

fn flatten(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other.as_f64().expect("number")],
    }
}

/// A held-out sample as every door sends it.
struct Sample {
    json: (&'static str, Value),
    grpc: pb::infer_request::Input,
    kserve: kpb::model_infer_request::InferInputTensor,
    kserve_json: Value,
    /// A session's messages after its start.
    session: Vec<pb::session_request::Message>,
}

fn static_sample(input: &Value, timesteps: usize) -> Sample {
    let values: Vec<f32> = flatten(input).into_iter().map(|v| v as f32).collect();
    let tensor = pb::Tensor { shape: vec![1, 8, 8], values: values.clone() };
    Sample {
        json: ("input", input.clone()),
        grpc: pb::infer_request::Input::Tensor(tensor.clone()),
        kserve: kpb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 1, 8, 8],
            contents: Some(kpb::InferTensorContents { fp32_contents: values.clone(), ..Default::default() }),
            ..Default::default()
        },
        kserve_json: json!([{ "name": "x", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": values }]),
        session: (0..timesteps).map(|_| pb::session_request::Message::Frame(tensor.clone())).collect(),
    }
}

fn event_sample(events: &Value) -> Sample {
    let rows: Vec<[i64; 4]> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let v: Vec<i64> = e.as_array().expect("event").iter().map(|x| x.as_i64().expect("int")).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect();
    let columns = pb::Events {
        x: rows.iter().map(|r| r[0]).collect(),
        y: rows.iter().map(|r| r[1]).collect(),
        t_us: rows.iter().map(|r| r[2]).collect(),
        p: rows.iter().map(|r| r[3]).collect(),
    };
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Sample {
        json: ("events", events.clone()),
        grpc: pb::infer_request::Input::Events(columns.clone()),
        kserve: kpb::model_infer_request::InferInputTensor {
            name: "events".into(),
            datatype: "INT64".into(),
            shape: vec![1, rows.len() as i64, 4],
            contents: Some(kpb::InferTensorContents { int64_contents: flat.clone(), ..Default::default() }),
            ..Default::default()
        },
        kserve_json: json!([{ "name": "events", "datatype": "INT64", "shape": [1, rows.len(), 4], "data": flat }]),
        // The whole recording in one chunk; the half-close closes its last bins.
        session: vec![pb::session_request::Message::Events(columns)],
    }
}

async fn through_every_door(
    server: &Server,
    model: &str,
    sample: &Sample,
    ask: Ask,
) -> Vec<(&'static str, Exit)> {
    let http = reqwest::Client::new();
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC");
    let mut kserve = GrpcInferenceServiceClient::connect(server.grpc.clone()).await.expect("KServe gRPC");
    let body = ask.json((sample.json.0, &sample.json.1));
    let mut exits = Vec::new();
    let (status, answer) = infer(&http, &server.base, model, &body).await;
    assert_eq!(status, 200, "{answer}");
    exits.push(("v1", Exit::of_json(&answer)));
    exits.push(("sse", Exit::of_json(&sse_final(&http, server, model, &body).await)));

    let request = pb::InferRequest {
        model: model.into(),
        input: Some(sample.grpc.clone()),
        policy: Some(ask.grpc()),
        ..Default::default()
    };
    let unary = grpc.infer(request.clone()).await.expect("gRPC answer").into_inner();
    exits.push(("grpc unary", Exit::of_grpc(&unary)));
    let mut stream = grpc.infer_stream(request).await.expect("stream").into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await.expect("stream message") {
        if let Some(pb::infer_stream_response::Message::Final(answer)) = message.message {
            last = Some(answer);
        }
    }
    exits.push(("grpc stream", Exit::of_grpc(&last.expect("a final answer"))));

    let (tx, rx) = mpsc::channel(sample.session.len() + 1);
    let start = pb::SessionStart { model: model.into(), policy: Some(ask.grpc()), ..Default::default() };
    tx.send(pb::SessionRequest { message: Some(pb::session_request::Message::Start(start)) })
        .await
        .expect("start");
    let mut session = grpc.session(ReceiverStream::new(rx)).await.expect("session").into_inner();
    for message in &sample.session {
        if tx.send(pb::SessionRequest { message: Some(message.clone()) }).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut session_final = None;
    while let Some(message) = session.message().await.expect("session message") {
        if let Some(pb::infer_stream_response::Message::Final(answer)) = message.message {
            session_final = Some(answer);
        }
    }
    exits.push(("grpc session", Exit::of_grpc(&session_final.expect("a session answer"))));

    let kserve_request = kpb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![sample.kserve.clone()],
        parameters: ask.kserve(),
        ..Default::default()
    };
    let response = kserve.model_infer(kserve_request).await.expect("KServe").into_inner();
    exits.push(("kserve grpc", Exit::of_kserve(&response)));

    let v2 = json!({ "inputs": sample.kserve_json, "parameters": ask.kserve_json() });
    let answer: Value = http
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .json(&v2)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let output = |name: &str| -> Value {
        answer["outputs"].as_array().expect("outputs").iter().find(|o| o["name"] == name).expect("output")
            ["data"][0]
            .clone()
    };
    exits.push((
        "kserve http",
        Exit {
            timesteps: output("timesteps").as_u64().expect("timesteps"),
            class_index: output("class_index").as_u64().expect("class"),
            exit_reason: output("exit_reason").as_str().expect("reason").to_owned(),
            policy: answer["parameters"]["policy"].as_str().expect("policy").to_owned(),
            max_accuracy_drop: answer["parameters"]["max_accuracy_drop"].as_f64(),
            guarantee: answer["parameters"]["guarantee"].as_f64(),
        },
    ));
    exits
}

#[tokio::test]
async fn every_door_runs_the_same_policy_row_and_names_it() {
    let server = Server::start(&shipped_models(), &[]);
    let (digits, _) = heldout_digits();
    let mnist = read_json(&shipped_models().join("mnist-events/heldout.json"));
    let cases: Vec<(&str, Vec<Sample>)> = vec![
        ("digits", digits.iter().take(6).map(|input| static_sample(input, 8)).collect()),
        (
            "mnist-events",
            mnist["events"].as_array().expect("events").iter().take(4).map(event_sample).collect(),
        ),
    ];
    let mut policy_exits = 0;
    for (model, samples) in &cases {
        let file = read_json(&shipped_models().join(model).join("exit-policies.json"));
        for ask in ASKS {
            let (policy, budget, level) = ask.expected(&file);
            for sample in samples {
                let exits = through_every_door(&server, model, sample, ask).await;
                let (_, first) = &exits[0];
                for (door, exit) in &exits {
                    assert_eq!(exit, first, "{model} {ask:?}: {door} differs from /v1");
                }
                assert_eq!(
                    (first.policy.as_str(), first.max_accuracy_drop, first.guarantee),
                    (policy.as_str(), Some(budget), level),
                    "{model} {ask:?}: the row the file says"
                );
                let causes: &[&str] = if policy == "cutoff" {
                    &["confident", "max_timesteps"]
                } else {
                    &["policy", "max_timesteps"]
                };
                assert!(causes.contains(&first.exit_reason.as_str()), "{model} {ask:?}: {first:?}");
                policy_exits += usize::from(first.exit_reason == "policy");
            }
        }
    }
    assert!(policy_exits > 0, "some answers were stopped by a policy");

    // The model's description lists its policies; the metrics count exits per policy.
    let http = reqwest::Client::new();
    let info: Value = http
        .get(server.url("/v1/models/mnist-events"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let policies = &info["exit_policies"];
    assert_eq!(
        policies["serving_policy"],
        read_json(&shipped_models().join("mnist-events/exit-policies.json"))["serving_policy"]
    );
    let names: Vec<&str> = policies["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["cutoff", "learned", "schedule"]);
    let metrics = http.get(server.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    let schedule = metrics
        .lines()
        .find(|l| {
            l.starts_with("spikeserve_policy_exits_total")
                && l.contains("model=\"digits\"")
                && l.contains("policy=\"schedule\"")
                && l.contains("exit_reason=\"policy\"")
        })
        .unwrap_or_else(|| panic!("no per-policy exit count in {metrics}"));
    let count: f64 = schedule.rsplit(' ').next().expect("a value").parse().expect("a number");
    assert!(count > 0.0, "{schedule}");
    assert!(metrics.contains("spikeserve_policy_timesteps_total{"), "per-policy timesteps");
}

#[tokio::test]
async fn wrong_policy_requests_are_refused_naming_the_field() {
    let server = Server::start(&shipped_models(), &[]);
    let http = reqwest::Client::new();
    let (inputs, _) = heldout_digits();
    let input = &inputs[0];
    let cases = [
        (
            json!({ "input": input, "policy": "oracle", "max_accuracy_drop": 0.5 }),
            vec!["policy", "\"oracle\"", "cutoff, learned, schedule"],
        ),
        (
            json!({ "input": input, "max_accuracy_drop": 0.5, "guarantee": 0.99 }),
            vec!["guarantee", "0.99", "levels: 0.9, 0.95"],
        ),
        (json!({ "input": input, "guarantee": 0.9 }), vec!["guarantee", "needs max_accuracy_drop"]),
        (
            json!({ "input": input, "max_accuracy_drop": 0.5, "guarantee": 1.5 }),
            vec!["guarantee", "between 0 and 1"],
        ),
        (
            json!({ "input": input, "threshold": 0.9, "policy": "schedule" }),
            vec!["threshold", "only the cutoff"],
        ),
        (
            json!({ "input": input, "max_accuracy_drop": 0.01, "policy": "learned" }),
            vec!["max_accuracy_drop", "learned", "0.1, 0.25"],
        ),
        (json!({ "input": input, "policy": 3 }), vec!["policy"]),
    ];
    for (body, mentions) in &cases {
        for (accept, error) in refused_on_v1_and_sse(&http, &server, body).await {
            let message = error["error"]["message"].as_str().expect("a message");
            for word in mentions {
                assert!(message.contains(word), "{message:?} should mention {word:?} ({accept})");
            }
        }
    }
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC");
    let values: Vec<f32> = flatten(input).into_iter().map(|v| v as f32).collect();
    for (policy, mentions) in [
        (
            pb::Policy { max_accuracy_drop: Some(0.5), guarantee: Some(f64::NAN), ..Default::default() },
            vec!["guarantee"],
        ),
        (pb::Policy { policy: Some("nope".into()), ..Default::default() }, vec!["policy", "\"nope\""]),
        (
            pb::Policy { max_accuracy_drop: Some(0.5), guarantee: Some(0.999), ..Default::default() },
            vec!["levels: 0.9, 0.95"],
        ),
    ] {
        let request = pb::InferRequest {
            model: "digits".into(),
            input: Some(pb::infer_request::Input::Tensor(pb::Tensor {
                shape: vec![1, 8, 8],
                values: values.clone(),
            })),
            policy: Some(policy.clone()),
            ..Default::default()
        };
        let status = grpc.infer(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        for word in &mentions {
            assert!(status.message().contains(word), "{:?} should mention {word:?}", status.message());
        }
        let refused = session_refusal(&mut grpc, "digits", policy).await;
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    // KServe: a policy that is not a string, and an unknown one.
    for (parameters, mention) in [
        (json!({ "policy": 1.0 }), "parameters.policy"),
        (json!({ "policy": "nope", "max_accuracy_drop": 0.5 }), "unknown policy"),
    ] {
        let body = json!({
            "inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": values }],
            "parameters": parameters,
        });
        let response =
            http.post(server.url("/v2/models/digits/infer")).json(&body).send().await.expect("sent");
        assert_eq!(response.status(), 400);
        let text = response.text().await.expect("text");
        assert!(text.contains(mention), "{text}");
    }
    let (status, _) =
        infer(&http, &server.base, "digits", &json!({ "input": input, "max_accuracy_drop": 0.5 })).await;
    assert_eq!(status, 200, "still serving");
}

fn link_model(from: &std::path::Path, to: &std::path::Path, policy_file: &str) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        if entry.file_name() != "exit-policies.json" {
            std::os::unix::fs::symlink(entry.path(), to.join(entry.file_name())).expect("symlink");
        }
    }
    std::fs::write(to.join("exit-policies.json"), policy_file).expect("write");
}

async fn models(http: &reqwest::Client, server: &Server) -> Value {
    http.get(server.url("/v1/models")).send().await.expect("sent").json().await.expect("json")
}

#[tokio::test]
async fn a_broken_policy_file_refuses_its_model_until_a_fixed_one_is_reloaded() {
    let shipped = std::fs::read_to_string(shipped_models().join("digits/exit-policies.json")).expect("file");
    let mut broken: Value = serde_json::from_str(&shipped).expect("json");
    broken["policies"]["schedule"]["point"][0]["thresholds"] = json!([0.9, 0.8, 0.7]);
    let dir = tempfile::tempdir().expect("tempdir");
    link_model(&shipped_models().join("digits"), &dir.path().join("digits"), &broken.to_string());
    link_model(
        &shipped_models().join("digits-tet"),
        &dir.path().join("digits-tet"),
        &std::fs::read_to_string(shipped_models().join("digits-tet/exit-policies.json")).expect("file"),
    );
    let server = Server::start(dir.path(), &["--reload-interval-secs", "0.2"]);
    let http = reqwest::Client::new();
    let listed = models(&http, &server).await;
    let refused = listed["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 1, "{listed}");
    assert_eq!(refused[0]["name"], "digits");
    let reason = refused[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains(
            "exit-policies.json: policies.schedule.point[0].thresholds: has 3 entries for 8 timesteps"
        ),
        "{reason}"
    );
    let (inputs, _) = heldout_digits();
    let (status, _) =
        infer(&http, &server.base, "digits-tet", &json!({ "input": inputs[0], "max_accuracy_drop": 0.5 }))
            .await;
    assert_eq!(status, 200, "the other model keeps serving");

    // A fixed file, renamed over the broken one as a deployment does: the model is loaded.
    let staged = dir.path().join("digits/.exit-policies.json.new");
    std::fs::write(&staged, &shipped).expect("write");
    std::fs::rename(&staged, dir.path().join("digits/exit-policies.json")).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = models(&http, &server).await;
        if listed["models"].as_array().expect("models").iter().any(|m| m["name"] == "digits") {
            break;
        }
        assert!(Instant::now() < deadline, "digits was not reloaded: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) = infer(
        &http,
        &server.base,
        "digits",
        &json!({ "input": inputs[0], "max_accuracy_drop": 0.5, "policy": "schedule" }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["policy"], "schedule");
}
