//! Models change while the server runs: a new version placed in the models directory takes over
//! atomically while clients keep asking (none fails; those in flight finish on the old version),
//! a corrupt version is refused and the old one keeps serving, and the repository API (KServe's
//! `model_repository` extension) loads, unloads and lists over HTTP and gRPC.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{heldout_digits, shipped_models, Server};
use serde_json::{json, Value};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use spikeserve::api::grpc::inference_pb as kpb;
use spikeserve::api::grpc::inference_pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// A models directory holding a copy of the shipped `digits`.
fn models_with_digits() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let digits = dir.path().join("digits");
    std::fs::create_dir(&digits).expect("mkdir");
    for file in ["model.onnx", "card.md", "heldout.json"] {
        std::fs::copy(shipped_models().join("digits").join(file), digits.join(file)).expect("copy");
    }
    dir
}

/// The next version of `digits`: a model with the same contract and other weights.
fn next_version() -> std::path::PathBuf {
    shipped_models().join("digits-tet/seed-1/model.onnx")
}

/// Publishes `bytes` as `dir/model.onnx` the atomic way: written beside it, then renamed in.
fn publish(dir: &Path, bytes: &[u8]) {
    let staged = dir.join(".model.onnx.new");
    std::fs::write(&staged, bytes).expect("write");
    std::fs::rename(&staged, dir.join("model.onnx")).expect("rename");
}

async fn model_info(client: &reqwest::Client, server: &Server) -> Value {
    let response = client.get(server.url("/v1/models/digits")).send().await.expect("sent");
    response.json().await.expect("JSON")
}

async fn wait_for_version(client: &reqwest::Client, server: &Server, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while model_info(client, server).await["version"] != version {
        assert!(
            Instant::now() < deadline,
            "version {version} never served: {}",
            model_info(client, server).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn probabilities(client: &reqwest::Client, server: &Server) -> Value {
    let (inputs, _) = heldout_digits();
    let body = json!({ "input": inputs[0], "threshold": 1.0 });
    let response = client.post(server.url("/v1/models/digits/infer")).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    answer["probabilities"].clone()
}

fn digit_request() -> pb::InferRequest {
    let (inputs, _) = heldout_digits();
    let values = inputs[0]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| r.as_array().expect("row").clone())
        .flat_map(|c| c.as_array().expect("cols").clone())
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    pb::InferRequest {
        model: "digits".into(),
        input: Some(pb::infer_request::Input::Tensor(pb::Tensor { shape: vec![1, 8, 8], values })),
        policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
        ..Default::default()
    }
}

/// Clients that keep asking (HTTP and gRPC streaming, every request running all 8 timesteps)
/// until told to stop; they count answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(server: &Server, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let http = reqwest::Client::new();
        let grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("gRPC connects");
        let (inputs, _) = heldout_digits();
        let body = json!({ "input": inputs[0], "threshold": 1.0 });
        let url = server.url("/v1/models/digits/infer");
        let mut tasks = Vec::new();
        for client in 0..clients {
            let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
            let (http, mut grpc, body, url) = (http.clone(), grpc.clone(), body.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = if client % 2 == 0 {
                        match http.post(&url).json(&body).send().await {
                            Ok(r) if r.status() == 200 => Ok(()),
                            Ok(r) => {
                                Err(format!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default()))
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    } else {
                        match grpc.infer_stream(digit_request()).await {
                            Ok(stream) => {
                                let mut stream = stream.into_inner();
                                let mut last = Err("no final answer".to_owned());
                                loop {
                                    match stream.message().await {
                                        Ok(Some(m)) => {
                                            if matches!(
                                                m.message,
                                                Some(pb::infer_stream_response::Message::Final(_))
                                            ) {
                                                last = Ok(());
                                            }
                                        }
                                        Ok(None) => break,
                                        Err(status) => {
                                            last = Err(format!("{status:?}"));
                                            break;
                                        }
                                    }
                                }
                                last
                            }
                            Err(status) => Err(format!("{status:?}")),
                        }
                    };
                    match outcome {
                        Ok(()) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => failures.lock().expect("lock").push(error),
                    }
                }
            }));
        }
        Self { stop, answered, failures, tasks }
    }

    /// Stops the clients; (answered, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("client task");
        }
        let failures = self.failures.lock().expect("lock").clone();
        (self.answered.load(Ordering::Relaxed), failures)
    }
}

fn log_lines(server: &Server) -> Vec<String> {
    server.log.try_iter().collect()
}

async fn wait_for_log(server: &Server, seen: &mut Vec<String>, message: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        seen.extend(log_lines(server));
        if let Some(line) = seen.iter().find(|l| l.contains(message)) {
            return line.clone();
        }
        assert!(Instant::now() < deadline, "no {message:?} in the log:\n{}", seen.join("\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_new_version_in_the_directory_takes_over_while_clients_keep_asking_and_a_corrupt_one_is_refused() {
    let models = models_with_digits();
    let digits = models.path().join("digits");
    let server = Server::start(models.path(), &["--reload-interval-secs", "0.2"]);
    let client = reqwest::Client::new();
    assert_eq!(model_info(&client, &server).await["version"], 1);
    let before = probabilities(&client, &server).await;

    let load = Load::start(&server, 8).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&digits, &std::fs::read(next_version()).expect("next version"));
    wait_for_version(&client, &server, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (answered, failures) = load.finish().await;
    assert!(failures.is_empty(), "{} requests failed during the reload: {failures:?}", failures.len());
    assert!(answered > 20, "only {answered} requests were answered");
    let after = probabilities(&client, &server).await;
    assert_ne!(before, after, "the new version answers differently");
    let mut log = Vec::new();
    let reloaded = wait_for_log(&server, &mut log, "model reloaded").await;
    assert!(reloaded.contains("\"old_version\":1") && reloaded.contains("\"new_version\":2"), "{reloaded}");

    // A corrupt version: refused with one log line naming it; version 2 keeps serving.
    let load = Load::start(&server, 4).await;
    publish(&digits, b"this is not an ONNX graph");
    let refused = wait_for_log(&server, &mut log, "model refused").await;
    assert!(refused.contains("\"model\":\"digits\"") && refused.contains("model.onnx"), "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    let listing: Value =
        client.get(server.url("/v1/models")).send().await.expect("sent").json().await.expect("JSON");
    let refusal = &listing["refused"][0];
    assert_eq!(refusal["name"], "digits", "{listing}");
    assert!(refusal["reason"].as_str().is_some_and(|r| !r.is_empty()), "{listing}");
    assert_eq!(model_info(&client, &server).await["version"], 2);
    assert_eq!(probabilities(&client, &server).await, after);

    let metrics = client.get(server.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    for series in [
        "spikeserve_model_changes_total{model=\"digits\",outcome=\"loaded\"} 1",
        "spikeserve_model_changes_total{model=\"digits\",outcome=\"refused\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }

    // The good version again, then the directory removed: unloaded.
    publish(&digits, &std::fs::read(shipped_models().join("digits/model.onnx")).expect("read"));
    wait_for_version(&client, &server, 3).await;
    assert_eq!(probabilities(&client, &server).await, before);
    std::fs::remove_dir_all(&digits).expect("remove");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client.get(server.url("/v1/models/digits")).send().await.expect("sent");
        if response.status() == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "digits was never unloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_repository_api_loads_unloads_and_lists_over_http_and_grpc() {
    let models = models_with_digits();
    let digits = models.path().join("digits");
    let broken = models.path().join("broken");
    std::fs::create_dir(&broken).expect("mkdir");
    std::fs::write(broken.join("model.onnx"), b"garbage").expect("write");
    let server = Server::start(models.path(), &["--reload-interval-secs", "0"]);
    let client = reqwest::Client::new();
    let before = probabilities(&client, &server).await;
    let post = |path: &str| client.post(server.url(path)).send();

    let index: Value = post("/v2/repository/index").await.expect("sent").json().await.expect("JSON");
    assert_eq!(index[0]["name"], "broken", "{index}");
    assert_eq!(index[0]["state"], "UNAVAILABLE");
    assert!(index[0]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{index}");
    assert_eq!(index[1], json!({"name": "digits", "version": "1", "state": "READY", "reason": ""}));
    let ready: Value = client
        .post(server.url("/v2/repository/index"))
        .json(&json!({"ready": true}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(ready.as_array().map(Vec::len), Some(1), "{ready}");

    // A new file with the watcher off: nothing changes until the API asks.
    publish(&digits, &std::fs::read(next_version()).expect("read"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(model_info(&client, &server).await["version"], 1);
    assert_eq!(post("/v2/repository/models/digits/load").await.expect("sent").status(), 200);
    assert_eq!(model_info(&client, &server).await["version"], 2);
    let after = probabilities(&client, &server).await;
    assert_ne!(before, after);

    // Unload while a session is open on it: the session finishes on the version it started on.
    let mut grpc = AnytimeClient::connect(server.grpc.clone()).await.expect("connects");
    let frame = || {
        let Some(pb::infer_request::Input::Tensor(tensor)) = digit_request().input else { unreachable!() };
        pb::SessionRequest { message: Some(pb::session_request::Message::Frame(tensor)) }
    };
    let (tx, rx) = mpsc::channel(16);
    let start = pb::SessionStart {
        model: "digits".into(),
        policy: Some(pb::Policy { threshold: Some(1.0), ..Default::default() }),
        ..Default::default()
    };
    tx.send(pb::SessionRequest { message: Some(pb::session_request::Message::Start(start)) })
        .await
        .expect("start");
    tx.send(frame()).await.expect("frame");
    let mut answers = grpc.session(ReceiverStream::new(rx)).await.expect("session").into_inner();
    assert!(answers.message().await.expect("a partial").is_some());
    assert_eq!(post("/v2/repository/models/digits/unload").await.expect("sent").status(), 200);
    let response = client
        .post(server.url("/v1/models/digits/infer"))
        .json(&json!({"input": heldout_digits().0[0]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404, "new requests no longer reach the unloaded model");
    for _ in 0..7 {
        tx.send(frame()).await.expect("frame");
    }
    drop(tx);
    let mut final_answer = None;
    while let Some(message) = answers.message().await.expect("the session goes on") {
        if let Some(pb::infer_stream_response::Message::Final(answer)) = message.message {
            final_answer = Some(answer);
        }
    }
    assert_eq!(final_answer.expect("answered").timesteps, 8);
    let index: Value = post("/v2/repository/index").await.expect("sent").json().await.expect("JSON");
    assert_eq!(index[1]["state"], "UNAVAILABLE", "{index}");
    assert!(index[1]["reason"].as_str().is_some_and(|r| r.contains("unloaded")), "{index}");

    // gRPC: load again (version 3), the broken one, bad names, unknown ones.
    let mut triton = GrpcInferenceServiceClient::connect(server.grpc.clone()).await.expect("connects");
    let load = |name: &str| kpb::RepositoryModelLoadRequest { model_name: name.into(), ..Default::default() };
    triton.repository_model_load(load("digits")).await.expect("loads");
    let metadata = triton
        .model_metadata(kpb::ModelMetadataRequest { name: "digits".into(), version: String::new() })
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(metadata.versions, vec!["3".to_owned()]);
    let extensions = triton.server_metadata(kpb::ServerMetadataRequest {}).await.expect("meta").into_inner();
    assert!(extensions.extensions.contains(&"model_repository".to_owned()));
    let old = triton
        .model_metadata(kpb::ModelMetadataRequest { name: "digits".into(), version: "1".into() })
        .await
        .expect_err("version 1 is gone");
    assert_eq!(old.code(), Code::NotFound);
    assert!(old.message().contains("has version 3 only"), "{old:?}");
    for (name, code, mentions) in [
        ("broken", Code::FailedPrecondition, "broken"),
        ("../digits", Code::InvalidArgument, "not a model name"),
        ("nope", Code::NotFound, "not in the models directory"),
    ] {
        let status = triton.repository_model_load(load(name)).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(status.message().contains(mentions), "{name}: {status:?}");
    }
    let status = triton
        .repository_model_unload(kpb::RepositoryModelUnloadRequest {
            model_name: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("not loaded");
    assert_eq!(status.code(), Code::NotFound);
    let index = triton
        .repository_index(kpb::RepositoryIndexRequest { ready: true, ..Default::default() })
        .await
        .expect("index")
        .into_inner();
    assert_eq!(index.models.len(), 1);
    assert_eq!((index.models[0].name.as_str(), index.models[0].version.as_str()), ("digits", "3"));

    // HTTP refusals: Triton's override parameters, and a broken model (the old version stays).
    let response = client
        .post(server.url("/v2/repository/models/digits/load"))
        .json(&json!({"parameters": {"config": "{}"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("JSON");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("parameters.config")), "{error}");
    publish(&digits, b"garbage");
    let response = post("/v2/repository/models/digits/load").await.expect("sent");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("JSON");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("keeps serving")), "{error}");
    assert_eq!(model_info(&client, &server).await["version"], 3);
    assert_eq!(probabilities(&client, &server).await, after);
}

#[tokio::test]
async fn a_read_only_repository_lists_and_watches_but_refuses_loads_and_unloads() {
    let models = models_with_digits();
    let server = Server::start(models.path(), &["--repository-read-only", "--reload-interval-secs", "0.2"]);
    let client = reqwest::Client::new();
    for action in ["load", "unload"] {
        let response = client
            .post(server.url(&format!("/v2/repository/models/digits/{action}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 403, "{action}");
        let error: Value = response.json().await.expect("JSON");
        assert!(error["error"].as_str().is_some_and(|e| e.contains("--repository-read-only")), "{error}");
    }
    let mut triton = GrpcInferenceServiceClient::connect(server.grpc.clone()).await.expect("connects");
    let status = triton
        .repository_model_unload(kpb::RepositoryModelUnloadRequest {
            model_name: "digits".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let index = triton
        .repository_index(kpb::RepositoryIndexRequest { ready: true, ..Default::default() })
        .await
        .expect("the index stays readable")
        .into_inner();
    assert_eq!(index.models.len(), 1);
    // Still serving version 1, and the directory is still watched: a new file takes over.
    assert_eq!(model_info(&client, &server).await["version"], 1);
    publish(&models.path().join("digits"), &std::fs::read(next_version()).expect("read"));
    wait_for_version(&client, &server, 2).await;
}
