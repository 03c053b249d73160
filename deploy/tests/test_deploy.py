"""Offline checks of everything under deploy/ and of both Dockerfiles.

Run: cd /work/main && .venv/bin/python -m pytest deploy/tests -q
Kubernetes manifests are validated with kubernetes_validate's strict schemas (unknown fields fail);
promtool and kubectl checks run when those tools are on PATH (scripts/ensure-prometheus.sh installs
promtool) and are skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
KSERVE = DEPLOY / "kserve"
DASHBOARD = DEPLOY / "grafana" / "spikeserve-dashboard.json"

# The Kubernetes version the manifests are validated against (a schema kubernetes_validate bundles).
K8S_VERSION = "1.30"

# The metrics the server exports: name -> (type, labels). The one list every query is checked against.
_H = "histogram"
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "spikeserve_requests_total": ("counter", frozenset({"model", "status", "exit_reason"})),
    "spikeserve_timesteps_used": (_H, frozenset({"model"})),
    "spikeserve_request_duration_seconds": (_H, frozenset({"model"})),
    "spikeserve_queue_duration_seconds": (_H, frozenset({"model"})),
    "spikeserve_time_to_first_partial_seconds": (_H, frozenset({"model"})),
    "spikeserve_step_duration_seconds": (_H, frozenset({"model"})),
    "spikeserve_batch_size": (_H, frozenset({"model"})),
    "spikeserve_queue_depth": ("gauge", frozenset({"model"})),
    "spikeserve_slots_in_use": ("gauge", frozenset({"model"})),
    "spikeserve_slots_capacity": ("gauge", frozenset({"model"})),
    "spikeserve_requests_in_flight": ("gauge", frozenset({"model"})),
    "spikeserve_synaptic_ops": (_H, frozenset({"model"})),
    "spikeserve_ensemble_uncertainty": (_H, frozenset({"model"})),
    "spikeserve_request_outcomes_total": ("counter", frozenset({"model", "priority", "budget", "outcome"})),
    "spikeserve_queue_wait_by_priority_seconds": (_H, frozenset({"model", "priority"})),
    "spikeserve_warmup_seconds": ("gauge", frozenset({"model"})),
    "spikeserve_policy_exits_total": ("counter", frozenset({"model", "policy", "exit_reason"})),
    "spikeserve_policy_timesteps_total": ("counter", frozenset({"model", "policy"})),
    "spikeserve_events_dropped_total": ("counter", frozenset({"model"})),
    "nv_inference_request_success": ("counter", frozenset({"model", "version"})),
    "nv_inference_request_failure": ("counter", frozenset({"model", "version"})),
    "nv_inference_count": ("counter", frozenset({"model", "version"})),
    "nv_inference_exec_count": ("counter", frozenset({"model", "version"})),
    "nv_inference_queue_duration_us": ("counter", frozenset({"model", "version"})),
    "nv_inference_request_duration_us": ("counter", frozenset({"model", "version"})),
}
# Metrics of the whole process, not per model (no dashboard panel filters them by model).
PROCESS_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "spikeserve_log_lines_dropped_total": ("counter", frozenset()),
    "spikeserve_trace_spans_dropped_total": ("counter", frozenset({"reason"})),
    "spikeserve_trace_spans_exported_total": ("counter", frozenset()),
    "spikeserve_unauthenticated_total": ("counter", frozenset({"door", "reason"})),
}
# Prometheus' own series, and the labels every scraped series gets (prometheus.yml adds the last three).
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "component"})
SERVER_PREFIXES = ("spikeserve_", "nv_")

CPU_MANIFESTS = sorted(
    [K8S / "deployment.yaml", *(p for p in (K8S / "common").glob("*.yaml") if p.name != "kustomization.yaml")]
)
GPU_MANIFESTS = [K8S / "gpu" / "deployment.yaml"]
KUSTOMIZATIONS = [K8S, K8S / "gpu"]


# ---------------------------------------------------------------- helpers


def load_all(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs, f"{path} holds no document"
    return docs


def load_one(path: Path) -> dict[str, Any]:
    docs = load_all(path)
    assert len(docs) == 1, f"{path}: expected one document, found {len(docs)}"
    return docs[0]


def k8s_validate(resource: dict[str, Any]) -> None:
    """Strict validation: an unknown field, a wrong type or a missing required field raises."""
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def is_kustomization(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == "Kustomization"


def core_manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in [*CPU_MANIFESTS, *GPU_MANIFESTS]:
        for doc in load_all(path):
            if not is_kustomization(doc):
                yield path, doc


def by_kind(paths: list[Path], kind: str) -> dict[str, Any]:
    found = [doc for path in paths for doc in load_all(path) if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in {paths}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def pod_with(container_spec: dict[str, Any]) -> dict[str, Any]:
    """A Pod around a container spec taken from a CR, so the strict core schema can check it."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": [container_spec]}}


# ---------------------------------------------------------------- PromQL names

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_TEMPLATE = re.compile(r"<<[^>]*>>|\$\{?\w+\}?")  # prometheus-adapter <<.Series>>, Grafana $var
_SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")


def resolve(name: str) -> tuple[str, frozenset[str]] | None:
    """A series name -> (metric, its labels), counting histograms' _bucket/_sum/_count series."""
    if name in METRICS:
        kind, labels = METRICS[name]
        return (name, labels) if kind != _H else None
    if name in PROCESS_METRICS:
        return name, PROCESS_METRICS[name][1]
    for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
        base = name.removesuffix(suffix)
        if base != name and base in METRICS and METRICS[base][0] == _H:
            return base, METRICS[base][1] | extra
    if name in PROMETHEUS_SERIES:
        return name, PROMETHEUS_SERIES[name]
    return None


def promql_problems(expr: str, defined: set[str]) -> list[str]:
    """Names in a query that are neither a server metric nor a recorded/derived series in `defined`,
    and label matchers that the metric does not carry."""
    problems = []
    # Matchers first (strings still in place, the label names sit before them).
    for name, body in _SELECTOR.findall(_TEMPLATE.sub("", expr)):
        resolved = resolve(name)
        if resolved is None:
            continue
        for label in _MATCHER.findall(_STRING.sub('""', body)):
            if label not in resolved[1] | TARGET_LABELS:
                problems.append(f"{name} has no label {label!r}")
    bare = _STRING.sub('""', _TEMPLATE.sub("", expr))
    for match in _IDENT.finditer(bare):
        name = match.group(1)
        followed_by = bare[match.end() :].lstrip()[:1]
        is_series = ":" in name or name.startswith(SERVER_PREFIXES) or followed_by in ("{", "[")
        if is_series and resolve(name) is None and name not in defined:
            problems.append(f"unknown series {name!r}")
    return problems


def recording_rules() -> dict[str, str]:
    rules = {}
    for group in load_one(PROMETHEUS / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                rules[rule["record"]] = rule["expr"]
    return rules


def adapter_rules() -> list[dict[str, Any]]:
    return load_one(K8S / "prometheus-adapter-values.yaml")["rules"]["custom"]


def adapter_metric_names() -> set[str]:
    return {rule["name"].get("as") or rule["name"]["matches"].strip("^$") for rule in adapter_rules()}


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


# ---------------------------------------------------------------- Kubernetes


def test_kubernetes_validate_bundles_the_version() -> None:
    assert K8S_VERSION in {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}


@pytest.mark.parametrize("path", [*CPU_MANIFESTS, *GPU_MANIFESTS], ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    for doc in load_all(path):
        if not is_kustomization(doc):
            k8s_validate(doc)


def test_validator_rejects_broken_manifests() -> None:
    good = by_kind([K8S / "deployment.yaml"], "Deployment")
    k8s_validate(good)
    broken = yaml.safe_load(
        """
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers:
        - name: c
          image: x
          ports: [{containerPort: "eight thousand"}]
"""
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(broken)
    unknown_field = json.loads(json.dumps(good))
    container(unknown_field)["livenessProbe"]["grpc"]["portt"] = 8001
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(unknown_field)
    no_selector = json.loads(json.dumps(good))
    del no_selector["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(no_selector)


@pytest.mark.parametrize("path", [K8S / "deployment.yaml", K8S / "gpu" / "deployment.yaml"], ids=["cpu", "gpu"])
def test_deployment_runs_the_server_safely(path: Path) -> None:
    deployment = load_one(path)
    pod = deployment["spec"]["template"]
    spec, c = pod["spec"], container(deployment)
    args = c["args"]
    assert args[0] == "serve"
    http, grpc = port_of(flag(args, "--http-addr")), port_of(flag(args, "--grpc-addr"))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": http, "grpc": grpc} == {"http": 8000, "grpc": 8001}
    # Non-root, read-only, no privileges.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    # Probes: ready on the v2 route, alive over native gRPC health, a startup probe for loading.
    for probe in ("readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] == "/v2/health/ready"
        assert c[probe]["httpGet"]["port"] in ("http", http)
    assert c["livenessProbe"]["grpc"]["port"] == grpc
    # Scraped on the HTTP port.
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == http and annotations["prometheus.io/path"] == "/metrics"
    # The kubelet waits for preStop + the server's drain before killing it.
    env = {e["name"]: e["value"] for e in c["env"]}
    drain = int(env["SPIKESERVE_SHUTDOWN_GRACE_SECS"])
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain
    assert pod["metadata"]["labels"].items() >= deployment["spec"]["selector"]["matchLabels"].items()


def test_gpu_variant() -> None:
    gpu = container(load_one(K8S / "gpu" / "deployment.yaml"))
    assert flag(gpu["args"], "--device") == "cuda:0"
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["image"] == "spikeserve-cuda"
    kustomization = load_one(K8S / "gpu" / "kustomization.yaml")
    assert {image["name"] for image in kustomization["images"]} == {"spikeserve-cuda"}
    cpu = container(load_one(K8S / "deployment.yaml"))
    assert flag(cpu["args"], "--device") == "cpu" and "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_service_and_hpa_match_the_deployment() -> None:
    deployment = load_one(K8S / "deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = load_one(K8S / "common" / "service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    hpa = load_one(K8S / "common" / "hpa.yaml")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "spikeserve"}
    pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metrics, "the HPA scales on a Pods custom metric"
    assert set(pods_metrics) <= adapter_metric_names(), "every HPA metric is served by a prometheus-adapter rule"
    pdb = load_one(K8S / "common" / "pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_kustomizations_list_existing_files() -> None:
    for directory in [*KUSTOMIZATIONS, K8S / "common"]:
        kustomization = load_one(directory / "kustomization.yaml")
        assert kustomization["kind"] == "Kustomization"
        for resource in kustomization["resources"]:
            assert (directory / resource).exists(), f"{directory}/kustomization.yaml lists missing {resource}"
    listed = {(K8S / r).resolve() for r in load_one(K8S / "kustomization.yaml")["resources"]}
    listed |= {(K8S / "common" / r).resolve() for r in load_one(K8S / "common" / "kustomization.yaml")["resources"]}
    assert set(p.resolve() for p in CPU_MANIFESTS) <= listed


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=["cpu", "gpu"])
def test_kustomize_build_is_valid(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the rendered kustomization is not checked")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    assert {doc["kind"] for doc in docs} == {
        "Namespace",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for doc in docs:
        k8s_validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "spikeserve"
    image = container(next(d for d in docs if d["kind"] == "Deployment"))["image"]
    assert image.startswith("registry.example.com/spikeserve") and ":" in image


def test_prometheus_adapter_rules() -> None:
    rules = adapter_rules()
    assert rules
    for rule in rules:
        assert {"seriesQuery", "resources", "name", "metricsQuery"} <= set(rule)
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
        for query in (rule["seriesQuery"], rule["metricsQuery"]):
            assert promql_problems(query, set()) == [], query
        assert re.fullmatch(rule["name"]["matches"], rule["seriesQuery"].split("{")[0].strip())


# ---------------------------------------------------------------- KServe


def test_kserve_serving_runtime() -> None:
    runtime = load_one(KSERVE / "servingruntime.yaml")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and runtime["kind"] == "ServingRuntime"
    spec = runtime["spec"]
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    (model_format,) = spec["supportedModelFormats"]
    assert model_format["name"] == "spikeserve-step-onnx" and model_format["autoSelect"] is False
    (c,) = spec["containers"]
    assert c["name"] == "kserve-container"
    k8s_validate(pod_with(c))
    args = c["args"]
    assert args[0] == "serve" and flag(args, "--models") == "/mnt/models"
    http, grpc = port_of(flag(args, "--http-addr")), port_of(flag(args, "--grpc-addr"))
    assert [p["containerPort"] for p in c["ports"]] == [http] and http != grpc
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": http}
    assert int(spec["annotations"]["prometheus.kserve.io/port"]) == http
    assert c["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    # The same server and flags as the Deployment (only the KServe ports and model dir differ).
    deployment = container(load_one(K8S / "deployment.yaml"))
    assert c["image"].rsplit(":", 1)[0].endswith("/" + deployment["image"])
    assert [a for a in args if a.startswith("--")] == [a for a in deployment["args"] if a.startswith("--")]
    assert flag(args, "--device") == flag(deployment["args"], "--device")


def test_kserve_inference_service() -> None:
    runtime = load_one(KSERVE / "servingruntime.yaml")
    isvc = load_one(KSERVE / "inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] == runtime["spec"]["supportedModelFormats"][0]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert re.match(r"^(gs|s3|pvc|https?|oci)://", model["storageUri"])


# ---------------------------------------------------------------- Prometheus


def run_promtool(*args: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (scripts/ensure-prometheus.sh installs it)")
    result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def promtool_has_kubernetes_sd(tmp_path: Path) -> bool:
    probe = tmp_path / "probe.yml"
    probe.write_text("scrape_configs:\n  - job_name: p\n    kubernetes_sd_configs:\n      - role: pod\n")
    promtool = shutil.which("promtool")
    assert promtool is not None
    return subprocess.run([promtool, "check", "config", str(probe)], capture_output=True, timeout=60).returncode == 0


def test_promtool_check_rules() -> None:
    run_promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))


def test_promtool_rule_unit_tests() -> None:
    run_promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))


def test_promtool_check_local_config() -> None:
    run_promtool("check", "config", str(PROMETHEUS / "prometheus-local.yml"))


def test_promtool_check_kubernetes_config(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not on PATH (scripts/ensure-prometheus.sh installs it)")
    config = PROMETHEUS / "prometheus.yml"
    if not promtool_has_kubernetes_sd(tmp_path):
        # Debian's promtool is built without Kubernetes service discovery: check everything else
        # (relabelling, rule files, alerting) with the discovery swapped for a static target.
        parsed = load_one(config)
        for job in parsed["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
            job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
        shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(parsed))
    run_promtool("check", "config", str(config))


def test_prometheus_configs_scrape_spikeserve() -> None:
    for name in ("prometheus.yml", "prometheus-local.yml"):
        config = load_one(PROMETHEUS / name)
        assert config["rule_files"] == ["alerts.yml"]
        assert [job["job_name"] for job in config["scrape_configs"]] == ["spikeserve"]
    local = load_one(PROMETHEUS / "prometheus-local.yml")["scrape_configs"][0]
    assert local["static_configs"][0]["targets"] == ["localhost:8000"]
    relabel = load_one(PROMETHEUS / "prometheus.yml")["scrape_configs"][0]["relabel_configs"]
    assert {r.get("target_label") for r in relabel} >= {"namespace", "pod", "__address__", "__metrics_path__"}


def test_alerts_cover_the_operational_risks() -> None:
    groups = load_one(PROMETHEUS / "alerts.yml")["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}
    assert set(alerts) == {
        "SpikeserveTimestepsDrift",
        "SpikeserveQueueTimeHigh",
        "SpikeserveErrorRateHigh",
        "SpikeserveSlotsSaturated",
        "SpikeserveTargetDown",
        "SpikeserveLogLinesDropped",
    }
    for rule in alerts.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    records = recording_rules()
    assert "model:spikeserve_timesteps_used:mean5m" in records
    assert "spikeserve_timesteps_used_sum" in records["model:spikeserve_timesteps_used:mean5m"]
    assert "mean1d" in alerts["SpikeserveTimestepsDrift"]["expr"]
    assert "spikeserve_log_lines_dropped_total" in alerts["SpikeserveLogLinesDropped"]["expr"]


# ---------------------------------------------------------------- metric names everywhere


def test_name_checker_catches_mistakes() -> None:
    assert promql_problems('rate(spikeserve_requests_total{model="a",status!="ok"}[5m])', set()) == []
    assert promql_problems("histogram_quantile(0.9, rate(spikeserve_batch_size_bucket[1m]))", set()) == []
    assert promql_problems("rate(spikeserve_request_total[5m])", set()) == ["unknown series 'spikeserve_request_total'"]
    assert promql_problems("spikeserve_queue_depth_sum", set()), "a gauge has no _sum series"
    assert promql_problems("spikeserve_batch_size", set()), "a histogram is only queried by its series"
    assert promql_problems('spikeserve_queue_depth{modle="a"}', set()) == [
        "spikeserve_queue_depth has no label 'modle'"
    ]
    assert promql_problems("model:made_up:rate5m > 1", set())
    assert promql_problems("process_cpu_seconds_total[5m]", set())
    assert promql_problems("<<.Series>>{<<.LabelMatchers>>}", set()) == []


def test_alert_and_recording_rules_use_known_metrics() -> None:
    records = recording_rules()
    groups = load_one(PROMETHEUS / "alerts.yml")["groups"]
    for group in groups:
        for rule in group["rules"]:
            assert promql_problems(rule["expr"], set(records)) == [], rule.get("alert") or rule.get("record")


def test_dashboard_uses_known_metrics() -> None:
    queries = dashboard_queries()
    assert queries
    for title, expr in queries:
        assert promql_problems(expr, set()) == [], title


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["type"] == "query" and "spikeserve_" in variables["model"]["definition"]
    assert variables["model"]["datasource"]["uid"] == "${datasource}"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            if "spikeserve_" in target["expr"] or "nv_inference_" in target["expr"]:
                assert '$model"' in target["expr"], f"{panel['title']!r} ignores the model variable"
    text = " ".join(expr for _, expr in dashboard_queries())
    used = {m for m in METRICS if re.search(rf"\b{m}(_bucket|_sum|_count)?\b", text)}
    assert used == set(METRICS), f"metrics without a panel: {sorted(set(METRICS) - used)}"
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "timesteps",
        "exit reasons",
        "p50 / p99",
        "throughput",
        "batch size",
        "slots",
        "queue depth",
        "first partial",
        "synaptic ops",
        "goodput",
        "warm-up",
        "by policy",
    ):
        assert topic in titles, topic
    assert any("histogram_quantile(0.99" in expr for _, expr in dashboard_queries())


# ---------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile(name: str) -> None:
    instructions = dockerfile_instructions(ROOT / name)
    stages: list[str] = []
    user_in_stage: str | None = None
    exposed: set[int] = set()
    for instruction, args in instructions:
        if instruction == "FROM":
            words = args.split()
            stages.append(words[2] if len(words) == 3 and words[1].upper() == "AS" else "")
            user_in_stage = None
        elif instruction == "COPY":
            words = [w for w in args.split() if not w.startswith("--")]
            from_stage = re.search(r"--from=(\S+)", args)
            if from_stage:
                assert from_stage.group(1) in stages[:-1], f"{name}: COPY from unknown stage {from_stage.group(1)}"
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"{name} copies {source}, which is missing"
        elif instruction == "USER":
            user_in_stage = args.strip()
        elif instruction == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in args.split()}
    assert len(stages) >= 2, f"{name} is multi-stage"
    assert user_in_stage not in (None, "0", "root"), f"{name}: the runtime stage runs as non-root"
    assert {8000, 8001} <= exposed
    text = (ROOT / name).read_text()
    assert "models /models" in text


def test_cuda_dockerfile_ships_the_gpu_runtime() -> None:
    text = (ROOT / "Dockerfile.cuda").read_text()
    assert "onnxruntime-gpu==1.31.1" in text and "libonnxruntime.so.1.31.1" in text
    assert "nvidia-cudnn-cu13" in text and "SPIKESERVE_DEVICE=cuda:0" in text
    cpu = (ROOT / "Dockerfile").read_text()
    assert "onnxruntime==1.31.1" in cpu
