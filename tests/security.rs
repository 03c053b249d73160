//! Bearer tokens and TLS against the real server: HTTPS and gRPC over TLS with real clients that
//! trust a CA made in the test, tokens from a file and from the environment, what stays open, what
//! a plaintext client gets, that tokens never reach the log, and the start-up checks of the flags.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{heldout_digits, ort_library, run_binary, shipped_models, Server};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use serde_json::{json, Value};
use spikeserve::api::grpc::anytime_pb as pb;
use spikeserve::api::grpc::anytime_pb::anytime_client::AnytimeClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A CA and a server certificate it signed, for `localhost` and `127.0.0.1`, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "spikeserve test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    Pki { dir, ca_pem: ca.pem(), cert: cert_path, key: key_path }
}

fn https_client(pki: &Pki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA certificate");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTPS client")
}

async fn grpc_channel(server: &Server, pki: Option<&Pki>) -> Channel {
    let mut endpoint =
        Channel::from_shared(server.grpc.clone()).expect("uri").timeout(Duration::from_secs(10));
    if let Some(pki) = pki {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem));
        endpoint = endpoint.tls_config(tls).expect("client TLS");
    }
    endpoint.connect().await.expect("gRPC connects")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", bearer(token).parse().expect("ascii"));
    }
    request
}

fn digit_request(input: &Value) -> pb::InferRequest {
    let values = input
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|row| row.as_array().expect("row").clone())
        .flat_map(|cols| cols.as_array().expect("cols").clone())
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    pb::InferRequest {
        model: "digits".into(),
        input: Some(pb::infer_request::Input::Tensor(pb::Tensor { shape: vec![1, 8, 8], values })),
        ..Default::default()
    }
}

async fn post_infer(client: &reqwest::Client, server: &Server, token: Option<&str>) -> reqwest::Response {
    let (inputs, _) = heldout_digits();
    let mut request = client.post(server.url("/v1/models/digits/infer")).json(&json!({ "input": inputs[0] }));
    if let Some(token) = token {
        request = request.header("authorization", bearer(token));
    }
    request.send().await.expect("request answered")
}

async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> u16 {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.header("authorization", bearer(token));
    }
    request.send().await.expect("request answered").status().as_u16()
}

/// Asserts a 401 with the Bearer challenge and the usual error body.
async fn assert_unauthorized(response: reqwest::Response, challenge_error: Option<&str>) {
    assert_eq!(response.status().as_u16(), 401);
    let challenge =
        response.headers().get("www-authenticate").expect("a challenge").to_str().expect("text").to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    match challenge_error {
        Some(error) => assert!(challenge.contains(&format!("error=\"{error}\"")), "{challenge}"),
        None => assert!(!challenge.contains("error="), "{challenge}"),
    }
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// Every log line the server wrote, reading on until one holds each of `needles` (or 5 s pass).
fn log_until(server: &Server, needles: &[&str]) -> Vec<String> {
    let mut lines = server.startup_log.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = |lines: &[String]| needles.iter().all(|n| lines.iter().any(|l| l.contains(n)));
    while !found(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.log.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    lines.extend(server.log.try_iter());
    lines
}

#[tokio::test]
async fn tls_and_tokens_from_a_file_guard_both_doors_and_leave_health_open() {
    let pki = pki();
    let tokens = pki.dir.path().join("tokens");
    std::fs::write(&tokens, "# the ops team\n\nfile-token-one\n  file-token-two  \n").expect("write tokens");
    let server = Server::start(
        &shipped_models(),
        &[
            "--tls-cert",
            pki.cert.to_str().expect("utf-8"),
            "--tls-key",
            pki.key.to_str().expect("utf-8"),
            "--auth-tokens-file",
            tokens.to_str().expect("utf-8"),
        ],
    );
    assert!(server.base.starts_with("https://") && server.grpc.starts_with("https://"), "{}", server.base);
    let https = https_client(&pki);

    // HTTPS: no token, a wrong one, another scheme: 401; a listed one: the answer.
    assert_unauthorized(post_infer(&https, &server, None).await, None).await;
    assert_unauthorized(post_infer(&https, &server, Some("file-token-three")).await, Some("invalid_token"))
        .await;
    let basic = https
        .get(server.url("/v1/models"))
        .header("authorization", "Basic ZmlsZS10b2tlbi1vbmU=")
        .send()
        .await
        .expect("answered");
    assert_unauthorized(basic, Some("invalid_request")).await;
    let answer = post_infer(&https, &server, Some("file-token-two")).await;
    assert_eq!(answer.status().as_u16(), 200);
    let answer: Value = answer.json().await.expect("JSON answer");
    let label = answer["label"].as_str().expect("a label").to_owned();
    assert!(answer["timesteps"].as_u64().is_some_and(|t| t >= 1), "{answer}");
    // Every route but health and metrics is guarded, unknown ones too (no probing for routes).
    assert_eq!(get(&https, &server.url("/v1/models"), None).await, 401);
    assert_eq!(get(&https, &server.url("/v2/models/digits/ready"), None).await, 401);
    assert_eq!(get(&https, &server.url("/no/such/route"), None).await, 401);
    assert_eq!(get(&https, &server.url("/v1/models"), Some("file-token-one")).await, 200);
    for open in ["/health", "/v2/health/live", "/v2/health/ready", "/metrics"] {
        assert_eq!(get(&https, &server.url(open), None).await, 200, "{open}");
    }

    // gRPC over TLS: UNAUTHENTICATED without a listed token, the same answer with one.
    let channel = grpc_channel(&server, Some(&pki)).await;
    let mut grpc = AnytimeClient::new(channel.clone());
    let (inputs, _) = heldout_digits();
    for token in [None, Some("file-token-three"), Some("")] {
        let status = grpc.infer(with_token(digit_request(&inputs[0]), token)).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}: {status:?}");
        let code = status.metadata().get("spikeserve-error-code").map(|v| v.to_str().expect("ascii"));
        assert_eq!(code, Some("unauthenticated"), "{status:?}");
        assert!(
            status.message().contains("bearer token") || status.message().contains("Bearer"),
            "{status:?}"
        );
    }
    let reply = grpc
        .infer(with_token(digit_request(&inputs[0]), Some("file-token-one")))
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(reply.label, label);
    // Health stays open; reflection (the whole API's description) does not.
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health is open")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let status = grpc.list_models(pb::ListModelsRequest {}).await.expect_err("listing is guarded");
    assert_eq!(status.code(), Code::Unauthenticated);
    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let refused = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect_err("reflection is guarded");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }

    // Plaintext clients on the TLS ports fail cleanly, and the server goes on serving.
    let plain_http = format!("http://{}/health", server.base.trim_start_matches("https://"));
    let outcome = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(plain_http)
        .send()
        .await;
    assert!(outcome.is_err(), "plain HTTP on the TLS port got {outcome:?}");
    let plain_grpc = server.grpc.replacen("https://", "http://", 1);
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        let mut client = AnytimeClient::connect(plain_grpc).await.map_err(|e| e.to_string())?;
        client.list_models(pb::ListModelsRequest {}).await.map_err(|e| e.to_string())
    })
    .await
    .expect("the plaintext attempt ends quickly");
    assert!(outcome.is_err(), "plaintext gRPC on the TLS port got {outcome:?}");
    assert_eq!(post_infer(&https, &server, Some("file-token-one")).await.status().as_u16(), 200);
    let reply = grpc
        .infer(with_token(digit_request(&inputs[0]), Some("file-token-two")))
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(reply.label, label);

    // Refusals are counted by door and reason, and logged without the token.
    let metrics =
        https.get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for series in [
        "spikeserve_unauthenticated_total{door=\"http\",reason=\"missing\"}",
        "spikeserve_unauthenticated_total{door=\"http\",reason=\"invalid\"}",
        "spikeserve_unauthenticated_total{door=\"grpc\",reason=\"invalid\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    let log = log_until(&server, &["\"door\":\"http\"", "\"door\":\"grpc\""]);
    let refusals: Vec<&String> =
        log.iter().filter(|l| l.contains("unauthenticated request refused")).collect();
    assert!(refusals.iter().any(|l| l.contains("/v1/models/digits/infer")), "{log:#?}");
    assert!(refusals.iter().any(|l| l.contains("/spikeserve.anytime.v1.Anytime/Infer")), "{log:#?}");
    for line in &log {
        assert!(!line.contains("file-token"), "a token reached the log: {line}");
    }

    // `spikeserve-tools infer` reaches it with --ca-cert and --token, and says what is missing without.
    let ca = pki.dir.path().join("ca.crt");
    std::fs::write(&ca, &pki.ca_pem).expect("write CA");
    let input = pki.dir.path().join("digit.json");
    std::fs::write(&input, json!({ "input": inputs[0] }).to_string()).expect("write input");
    let run_infer = |extra: Vec<String>| {
        let mut args: Vec<String> =
            ["infer", "--model", "digits", "--json", "--server", server.grpc.as_str()]
                .map(str::to_owned)
                .to_vec();
        args.extend(["--input".to_owned(), input.display().to_string()]);
        args.extend(extra);
        run_client(args)
    };
    let ca_arg = ["--ca-cert".to_owned(), ca.display().to_string()];
    let output =
        run_infer([&ca_arg[..], &["--token".to_owned(), "file-token-one".to_owned()]].concat()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("\"label\":\"{label}\"")), "{stdout}");
    let output = run_infer(ca_arg.to_vec()).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Unauthenticated"), "{output:?}");
    let output = run_infer(vec![]).await;
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ca-cert"), "{output:?}");

    // So does the load generator, over HTTPS and gRPC over TLS, every request answered (and its
    // empty gRPC call, the transport's floor); and the soak, every door, nothing failed.
    let heldout = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/digits/heldout.json");
    let secure_client = |command: &[&str], report: &std::path::Path| {
        let mut args: Vec<String> = command.iter().map(|a| (*a).to_owned()).collect();
        args.extend(["--http".to_owned(), server.base.clone(), "--grpc".to_owned(), server.grpc.clone()]);
        args.extend(["--inputs".to_owned(), heldout.display().to_string(), "--json".to_owned()]);
        args.push(report.display().to_string());
        args.extend(ca_arg.iter().cloned());
        args.extend(["--token".to_owned(), "file-token-one".to_owned(), "--no-progress".to_owned()]);
        run_client(args)
    };
    for protocol in ["http", "grpc-unary", "grpc-stream", "grpc-health"] {
        let report = pki.dir.path().join(format!("bench-{protocol}.json"));
        let output =
            secure_client(&["bench", "--requests", "20", "--warmup", "2", "--protocol", protocol], &report)
                .await;
        assert!(output.status.success(), "{protocol}: {}", String::from_utf8_lossy(&output.stderr));
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
        assert_eq!(
            (report["ok"].as_u64(), report["requests"].as_u64()),
            (Some(20), Some(20)),
            "{protocol}: {report}"
        );
    }
    let report = pki.dir.path().join("soak.json");
    let output = secure_client(&["soak", "--clients", "8", "--duration-secs", "2"], &report).await;
    assert!(output.status.success(), "soak: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    assert!(report["answered"].as_u64().is_some_and(|n| n > 0), "{report}");

    // Graceful shutdown works with the TLS listener too: SIGTERM, exit 0. (The wait is async: the
    // clients' connection tasks run on this runtime and must answer the server's HTTP/2 GOAWAY.)
    drop((grpc, channel));
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let log: Vec<String> = server.log.try_iter().collect();
            panic!("the TLS server did not exit after SIGTERM; its log:\n{}", log.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test]
async fn tokens_from_the_environment_and_auth_health_guard_health_and_metrics_too() {
    let server = Server::start_with_env(
        &shipped_models(),
        &["--auth-health", "--metrics-addr", "127.0.0.1:0"],
        &[("SPIKESERVE_AUTH_TOKENS", "env-token-a, env-token-b,")],
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    for path in ["/health", "/v2/health/live", "/v2/health/ready"] {
        assert_eq!(get(&http, &server.url(path), None).await, 401, "{path}");
        assert_eq!(get(&http, &server.url(path), Some("env-token-b")).await, 200, "{path}");
    }
    let metrics = format!("http://{}/metrics", server.metrics_addr());
    assert_eq!(get(&http, &metrics, None).await, 401);
    assert_eq!(get(&http, &metrics, Some("env-token-a")).await, 200);
    assert_unauthorized(post_infer(&http, &server, Some("env-token-c")).await, Some("invalid_token")).await;
    assert_eq!(post_infer(&http, &server, Some("env-token-a")).await.status().as_u16(), 200);

    let channel = grpc_channel(&server, None).await;
    let mut health = HealthClient::new(channel.clone());
    let refused = health.check(with_token(HealthCheckRequest::default(), None)).await.expect_err("guarded");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let status =
        health.check(with_token(HealthCheckRequest::default(), Some("env-token-b"))).await.expect("checked");
    assert_eq!(status.into_inner().status, ServingStatus::Serving as i32);
    let (inputs, _) = heldout_digits();
    let reply = AnytimeClient::new(channel)
        .infer(with_token(digit_request(&inputs[1]), Some("env-token-a")))
        .await
        .expect("answer");
    assert!(!reply.into_inner().label.is_empty());

    let log = log_until(&server, &["\"door\":\"grpc\""]);
    for line in &log {
        assert!(!line.contains("env-token"), "a token reached the log: {line}");
    }
}

/// Runs `serve` with `args` and returns its stderr, asserting that it failed without a panic.
fn failed_start(args: &[&str]) -> String {
    let models = shipped_models();
    let mut all = vec!["serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--models"];
    all.push(models.to_str().expect("utf-8"));
    all.extend_from_slice(args);
    let out = run_binary(&all, Some(&ort_library()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} started: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("listening"), "{stderr}");
    stderr
}

#[test]
fn bad_tls_and_token_settings_stop_the_start_with_a_clear_message() {
    let pki = pki();
    let (cert, key) = (pki.cert.to_str().expect("utf-8"), pki.key.to_str().expect("utf-8"));
    let stderr = failed_start(&["--tls-cert", cert]);
    assert!(
        stderr.contains("required arguments were not provided") && stderr.contains("--tls-key"),
        "{stderr}"
    );
    let stderr = failed_start(&["--tls-key", key]);
    assert!(stderr.contains("--tls-cert"), "{stderr}");

    let stderr = failed_start(&["--tls-cert", "/nonexistent/server.crt", "--tls-key", key]);
    assert!(stderr.contains("cannot read the TLS certificate /nonexistent/server.crt"), "{stderr}");
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let stderr = failed_start(&["--tls-cert", garbage.to_str().expect("utf-8"), "--tls-key", key]);
    assert!(stderr.contains("holds no PEM certificate"), "{stderr}");
    let stderr = failed_start(&["--tls-cert", cert, "--tls-key", garbage.to_str().expect("utf-8")]);
    assert!(stderr.contains("holds no PEM private key"), "{stderr}");
    // A key that is not the certificate's.
    let other_key = pki.dir.path().join("other.key");
    std::fs::write(&other_key, KeyPair::generate().expect("key").serialize_pem()).expect("write");
    let stderr = failed_start(&["--tls-cert", cert, "--tls-key", other_key.to_str().expect("utf-8")]);
    assert!(stderr.contains("cannot be used"), "{stderr}");

    let stderr = failed_start(&["--auth-tokens-file", "/nonexistent/tokens"]);
    assert!(stderr.contains("cannot read the auth tokens file /nonexistent/tokens"), "{stderr}");
    let tokens = pki.dir.path().join("tokens");
    std::fs::write(&tokens, "fine-token\nsecret with spaces\n").expect("write");
    let stderr = failed_start(&["--auth-tokens-file", tokens.to_str().expect("utf-8")]);
    assert!(stderr.contains("line 2 of") && !stderr.contains("secret with spaces"), "{stderr}");
    let stderr = failed_start(&["--auth-health"]);
    assert!(stderr.contains("--auth-health needs tokens"), "{stderr}");
}

/// Runs a `spikeserve-tools` subcommand to completion, with no token from the environment.
async fn run_client(args: Vec<String>) -> std::process::Output {
    let tools = common::tools_binary();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(tools).args(args).env_remove("SPIKESERVE_TOKEN").output().expect("runs")
    })
    .await
    .expect("joined")
}
