"""Deployment artefacts: Dockerfile, compose file and Kubernetes manifests, checked without Docker or a cluster.

No Docker engine (only the client) or cluster exists here, so the files are checked by the tools of the field
from the tools venv (hadolint, check-jsonschema with the compose spec, kubernetes-validate --strict), by
rendering the kustomize overlays (a small pure-Python renderer, cross-checked against `kubectl kustomize` where
installed) and by asserting the facts that make a deployment work: probe paths, ports, GPU limits, a grace
period that covers preStop + drain, an HPA metric that the adapter rule really produces.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO_ROOT

TOOLS_BIN = REPO_ROOT / ".venv-tools" / "bin"
K8S = REPO_ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
EXTRAS = ("keda", "kserve", "triton")


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.skip(f"{name} not installed in .venv-tools (run `make tools`)")
    return path


def run_tool(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)


# --- a small kustomize renderer: exactly the features deploy/k8s uses ---------------------------------------


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize applies it to our patches: maps merge, lists of named maps merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        merged_list = [copy.deepcopy(i) for i in base]
        index = {item.get("name"): n for n, item in enumerate(merged_list) if isinstance(item, dict)}
        for item in patch:
            if item["name"] in index:
                merged_list[index[item["name"]]] = _merge(merged_list[index[item["name"]]], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _pod_containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = resource.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("predictor") or {}  # Deployment, InferenceService
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _replace_field(resource: dict[str, Any], field_path: str, value: str, options: dict[str, Any]) -> None:
    """kustomize replacement into `field_path` (dots; list indices as numbers), whole or one delimited part."""
    *parents, last = [int(p) if p.isdigit() else p for p in field_path.split(".")]
    node: Any = resource
    for part in parents:
        node = node[part]
    if "delimiter" in options:
        parts = node[last].split(options["delimiter"])
        parts[options["index"]] = value
        value = options["delimiter"].join(parts)
    node[last] = value


def render_kustomization(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "labels", "configMapGenerator", "images", "replicas", "patches",
             "namespace", "replacements"}
    unknown = set(kustomization) - known
    assert not unknown, f"{directory}: renderer does not implement {unknown}"
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources.extend(render_kustomization(path))
        else:
            resources.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for generator in kustomization.get("configMapGenerator", []):
        assert generator.get("options", {}).get("disableNameSuffixHash"), "renderer handles unhashed names only"
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": generator["name"]},
            "data": {Path(f).name: (directory / f).read_text() for f in generator.get("files", [])},
        }
        if generator.get("behavior") == "replace":  # the replaced map keeps the base's metadata (labels)
            key = ("ConfigMap", generator["name"])
            replaced = next(r for r in resources if (r["kind"], r["metadata"]["name"]) == key)
            config_map["metadata"] = copy.deepcopy(replaced["metadata"])
            resources.remove(replaced)
        resources.append(config_map)
    for patch_entry in kustomization.get("patches", []):
        text = patch_entry["patch"] if "patch" in patch_entry else (directory / patch_entry["path"]).read_text()
        patch = yaml.safe_load(text)
        key = (patch["kind"], patch["metadata"]["name"])
        targets = [r for r in resources if (r["kind"], r["metadata"]["name"]) == key]
        assert len(targets) == 1, f"patch {patch_entry.get('path', 'inline')} matches {len(targets)} resources"
        if patch.pop("$patch", None) == "delete":
            resources.remove(targets[0])
            continue
        resources[resources.index(targets[0])] = _merge(targets[0], patch)
    for replica in kustomization.get("replicas", []):
        for r in resources:
            if r["kind"] == "Deployment" and r["metadata"]["name"] == replica["name"]:
                r["spec"]["replicas"] = replica["count"]
    for image in kustomization.get("images", []):
        for r in resources:
            for container in _pod_containers(r):
                name = container["image"].split(":")[0]
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    for label_set in kustomization.get("labels", []):
        for r in resources:
            r.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])
    if "namespace" in kustomization:
        for r in resources:
            r["metadata"]["namespace"] = kustomization["namespace"]
    for replacement in kustomization.get("replacements", []):
        source = replacement["source"]
        origin = next(r for r in resources if (r["kind"], r["metadata"]["name"]) == (source["kind"], source["name"]))
        value = origin
        for part in source["fieldPath"].split("."):
            value = value[part]
        for target in replacement["targets"]:
            select = target["select"]
            for r in resources:
                if (r["kind"], r["metadata"]["name"]) == (select["kind"], select["name"]):
                    for field_path in target["fieldPaths"]:
                        _replace_field(r, field_path, value, target.get("options", {}))
    return resources


def by_kind(resources: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


def _canonical(value: Any) -> Any:
    """Order of named list items (volumes, mounts, env) carries no meaning: sort them for comparisons."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        if all(isinstance(i, dict) and "name" in i for i in items):
            items.sort(key=lambda i: (i["name"], i.get("mountPath", "")))
        return items
    return value


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, dict[tuple[str, str], dict[str, Any]]]:
    return request.param, by_kind(render_kustomization(K8S / "overlays" / request.param))


def server_container(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    spec = resources[("Deployment", "paca-serve")]["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "server")


def pod_spec(resources: dict[tuple[str, str], dict[str, Any]], name: str = "paca-serve") -> dict[str, Any]:
    return resources[("Deployment", name)]["spec"]["template"]["spec"]


# --- validators of the field --------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    result = run_tool(tool("hadolint"), REPO_ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_wired_to_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    result = run_tool(tool("hadolint"), bad)
    assert result.returncode != 0 and "DL3008" in result.stdout


def test_compose_file_matches_compose_spec() -> None:
    result = run_tool(
        tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", REPO_ROOT / "docker-compose.yml"
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", OVERLAYS)
def test_rendered_overlay_passes_strict_kubernetes_validation(name: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(yaml.safe_dump_all(render_kustomization(K8S / "overlays" / name)))
    result = run_tool(tool("kubernetes-validate"), "--strict", rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed for resource deployment/paca-serve" in result.stdout


@pytest.mark.parametrize("name", EXTRAS)
def test_rendered_extras_pass_strict_kubernetes_validation(name: str, tmp_path: Path) -> None:
    """KEDA, KServe and Triton renderings. Kinds without a Kubernetes schema (the ScaledObject and
    InferenceService CRDs) only get a warning from kubernetes-validate; their own tests below check them."""
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(yaml.safe_dump_all(render_kustomization(K8S / "extras" / name)))
    result = run_tool(tool("kubernetes-validate"), "--strict", rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stdout.lower() + result.stderr.lower()


def test_monitoring_manifests_pass_strict_validation(tmp_path: Path) -> None:
    rendered = tmp_path / "monitoring.yaml"
    rendered.write_text(yaml.safe_dump_all(render_kustomization(K8S / "monitoring")))
    result = run_tool(tool("kubernetes-validate"), "--strict", rendered)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_a_misspelled_probe_field(tmp_path: Path) -> None:
    resources = render_kustomization(K8S / "overlays" / "cpu")
    deployment = by_kind(resources)[("Deployment", "paca-serve")]
    probe = server_container(by_kind([deployment]))["startupProbe"]
    probe["failureThresold"] = probe.pop("failureThreshold")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    result = run_tool(tool("kubernetes-validate"), "--strict", broken)
    assert result.returncode != 0


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("name", [f"overlays/{o}" for o in OVERLAYS] + [f"extras/{e}" for e in EXTRAS] + ["monitoring"])
def test_renderer_agrees_with_kubectl_kustomize(name: str) -> None:
    result = run_tool("kubectl", "kustomize", K8S / name)
    if result.returncode != 0 and "kustomize" not in result.stderr.lower():
        pytest.skip(f"kubectl kustomize unavailable: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr
    from_kubectl = by_kind([d for d in yaml.safe_load_all(result.stdout) if d])
    assert _canonical(from_kubectl) == _canonical(by_kind(render_kustomization(K8S / name)))


# --- the facts a working deployment needs -------------------------------------------------------------------


def test_probes_follow_the_triton_pattern(overlay: tuple[str, dict]) -> None:
    name, resources = overlay
    container = server_container(resources)
    startup, liveness, readiness = (container[p] for p in ("startupProbe", "livenessProbe", "readinessProbe"))
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert liveness["httpGet"]["path"] == "/v2/health/live"
    assert readiness["httpGet"]["path"] == "/v2/health/ready"
    for probe in (startup, liveness, readiness):
        assert probe["httpGet"]["port"] == "http"
    # Startup must cover model load + warm-up (CPU) and engine load + warm-up on the GPU.
    startup_budget_s = startup["periodSeconds"] * startup["failureThreshold"]
    assert startup_budget_s >= (600 if name == "gpu" else 300)


def test_ports_are_named_and_match_the_server_flags(overlay: tuple[str, dict]) -> None:
    _, resources = overlay
    container = server_container(resources)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001}
    args = container["args"]
    assert args[args.index("--port") + 1] == "8000"
    assert args[args.index("--grpc-port") + 1] == "8001"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    service = resources[("Service", "paca-serve")]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "http": (8000, "http"),
        "grpc": (8001, "grpc"),
    }
    selector = service["spec"]["selector"]
    labels = resources[("Deployment", "paca-serve")]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    pdb = resources[("PodDisruptionBudget", "paca-serve")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items() and pdb["spec"]["minAvailable"] == 1
    annotations = resources[("Deployment", "paca-serve")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8000" and annotations["prometheus.io/path"] == "/metrics"


def test_gpu_overlay_requests_one_whole_gpu_and_cpu_overlay_none(overlay: tuple[str, dict]) -> None:
    name, resources = overlay
    spec = pod_spec(resources)
    gpu_limits = [
        c["resources"].get("limits", {}).get("nvidia.com/gpu")
        for c in _pod_containers(resources[("Deployment", "paca-serve")])
    ]
    if name == "cpu":
        assert gpu_limits == [None]
        assert "nodeSelector" not in spec
        return
    # GPUs go in limits (requests absent or equal), whole GPUs; the engine-building init container too.
    assert gpu_limits == [1, 1]
    for container in _pod_containers(resources[("Deployment", "paca-serve")]):
        assert container["resources"].get("requests", {}).get("nvidia.com/gpu", 1) == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])


def test_gpu_engine_cache_volume_is_wired() -> None:
    resources = by_kind(render_kustomization(K8S / "overlays" / "gpu"))
    spec = pod_spec(resources)
    claim = spec["volumes"][[v["name"] for v in spec["volumes"]].index("engine-cache")]["persistentVolumeClaim"]
    pvc = resources[("PersistentVolumeClaim", claim["claimName"])]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    init = spec["initContainers"][0]
    env = {e["name"]: e["value"] for e in init["env"]}
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts["engine-cache"] == env["PACA_ENGINE_CACHE"] and mounts["engines"] == env["PACA_ENGINE_DIR"]
    server_mounts = {m["name"]: m for m in server_container(resources)["volumeMounts"]}
    # The links in /run/paca/engines point into the cache: the server needs both at the same paths.
    assert server_mounts["engine-cache"]["mountPath"] == mounts["engine-cache"]
    assert server_mounts["engines"]["mountPath"] == mounts["engines"]
    repository = yaml.safe_load(resources[("ConfigMap", "paca-serve-repository")]["data"]["repository.yaml"])
    engines = [m for m in repository["models"] if m["backend"] == "tensorrt"]
    assert engines and all(str(m["artifact"]).startswith(env["PACA_ENGINE_DIR"] + "/") for m in engines)
    # Each engine names its source ONNX (metadata + hash check), which is the file the init container builds from.
    onnx_dir = init["command"][-1]
    for model in engines:
        assert model["options"]["onnx"] == f"{onnx_dir}/{model['name']}.onnx"
    # HOME is read-only: the timing cache and Triton's compile cache live on the engine volume (init
    # container), and the engines are built for the max_batch_size of the repository it reads.
    for variable in ("PACA_CACHE", "TRITON_CACHE_DIR"):
        assert env[variable].startswith(mounts["engine-cache"] + "/")
    init_mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert init_mounts["repository"]["mountPath"] == str(Path(env["PACA_REPOSITORY"]).parent)
    assert init_mounts["repository"]["mountPath"] == server_mounts["repository"]["mountPath"]
    # The server mounts the engine volume read-only; its Triton cache must be on a writable mount.
    server_env = {e["name"]: e["value"] for e in server_container(resources)["env"]}
    writable = [m["mountPath"] for m in server_mounts.values() if not m.get("readOnly")]
    assert any(server_env["TRITON_CACHE_DIR"].startswith(path + "/") for path in writable)


def test_gpu_image_keeps_its_caches_on_the_engine_volume() -> None:
    env_line = " ".join(line for line in dockerfile_stages()["serve-gpu"] if line.startswith("ENV "))
    env = dict(re.findall(r"(\w+)=(\S+)", env_line))
    for variable in ("PACA_CACHE", "TRITON_CACHE_DIR"):
        assert env[variable].startswith(env["PACA_ENGINE_CACHE"] + "/")
    assert env["PACA_REPOSITORY"] == "/etc/paca/repository.yaml"


def test_grace_period_covers_prestop_and_drain(overlay: tuple[str, dict]) -> None:
    _, resources = overlay
    spec = pod_spec(resources)
    container = server_container(resources)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0].endswith("sleep")
    pre_stop_s = float(command[1])
    env = {e["name"]: e["value"] for e in container["env"]}
    drain_s = float(env["PACA_EXIT_TIMEOUT_S"])
    assert 5 <= pre_stop_s <= 15
    assert spec["terminationGracePeriodSeconds"] > pre_stop_s + drain_s
    # A queued request must be able to finish within the drain: queue deadline ≤ exit timeout.
    repository = yaml.safe_load(resources[("ConfigMap", "paca-serve-repository")]["data"]["repository.yaml"])
    for model in repository["models"]:
        assert model["batching"]["queue_timeout_ms"] / 1000 <= drain_s, model["name"]


def test_repository_configmap_is_a_valid_model_repository(overlay: tuple[str, dict]) -> None:
    repository_module = pytest.importorskip("service.repository")
    _, resources = overlay
    text = resources[("ConfigMap", "paca-serve-repository")]["data"]["repository.yaml"]
    repository = repository_module.RepositoryConfig.model_validate(yaml.safe_load(text))
    default = yaml.safe_load((REPO_ROOT / "service" / "default_repository.yaml").read_text())
    assert {m.name for m in repository.models} == {m["name"] for m in default["models"]}
    # Mounted where the container's --config points.
    container = server_container(resources)
    config_path = Path(container["args"][container["args"].index("--config") + 1])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "repository")
    assert config_path.parent == Path(mount["mountPath"])


def adapter_rule() -> dict[str, Any]:
    (rule,) = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-rule.yaml").read_text())["rules"]
    return rule


def test_hpa_scales_on_the_metric_the_adapter_rule_produces(overlay: tuple[str, dict]) -> None:
    _, resources = overlay
    hpa = resources[("HorizontalPodAutoscaler", "paca-serve")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "paca-serve"}
    assert hpa["spec"]["minReplicas"] >= 1  # no scale-to-zero: cold starts on GPUs take minutes
    metric = hpa["spec"]["metrics"][0]
    rule = adapter_rule()
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert "nv_inference_queue_duration_us" in rule["seriesQuery"]
    assert "nv_inference_request_success" in rule["metricsQuery"]


def test_the_autoscaler_alone_owns_the_replica_count(overlay: tuple[str, dict]) -> None:
    """A `replicas` in the Deployment would be re-applied by every `kubectl apply`, undoing the HPA's scaling."""
    name, resources = overlay
    assert "replicas" not in resources[("Deployment", "paca-serve")]["spec"]
    hpa = resources[("HorizontalPodAutoscaler", "paca-serve")]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if name == "cpu":
        assert hpa["spec"]["minReplicas"] == 2  # the overlay's "two replicas" now lives in the HPA


def test_helm_values_carry_the_same_adapter_rule() -> None:
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    assert values["rules"]["custom"] == [adapter_rule()]


def test_monitoring_no_longer_replaces_the_adapter_configuration() -> None:
    rendered = render_kustomization(K8S / "monitoring")
    assert not [r for r in rendered if r["kind"] == "ConfigMap"]  # the old full-ConfigMap replacement is gone
    (monitor,) = rendered
    assert monitor["kind"] == "PodMonitor"
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    labels = pod_template_labels(by_kind(render_kustomization(K8S / "overlays" / "cpu")))
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()


def pod_template_labels(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    return resources[("Deployment", "paca-serve")]["spec"]["template"]["metadata"]["labels"]


def _adapter_config_map(rules: list[dict[str, Any]]) -> str:
    config = {"rules": rules, "resourceRules": {"cpu": {"containerQuery": "sum(rate(x[3m]))"}}}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "prometheus-adapter", "namespace": "monitoring",
                                        "resourceVersion": "4711"},
                           "data": {"config.yaml": yaml.safe_dump(config)}})


def _merge_script(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = K8S / "monitoring" / "merge-adapter-rule.py"
    return subprocess.run([sys.executable, str(script), *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_merge_script_adds_the_rule_and_keeps_every_existing_one(tmp_path: Path) -> None:
    existing = [{"seriesQuery": 'http_requests_total{namespace!="",pod!=""}',
                 "resources": {"template": "<<.Resource>>"},
                 "name": {"matches": "^(.*)_total$", "as": "${1}_per_second"},
                 "metricsQuery": "sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)"}]
    first = _merge_script(_adapter_config_map(existing))
    assert first.returncode == 0, first.stderr
    merged = yaml.safe_load(first.stdout)
    config = yaml.safe_load(merged["data"]["config.yaml"])
    assert config["rules"] == [*existing, adapter_rule()]
    assert config["resourceRules"] == {"cpu": {"containerQuery": "sum(rate(x[3m]))"}}
    assert merged["metadata"]["resourceVersion"] == "4711"  # `kubectl replace` keeps its optimistic lock
    # Idempotent: merging into the merged map changes nothing; an outdated copy of our rule is replaced.
    assert yaml.safe_load(_merge_script(first.stdout).stdout) == merged
    outdated = {**adapter_rule(), "metricsQuery": "old"}
    replaced = yaml.safe_load(_merge_script(_adapter_config_map([outdated, *existing])).stdout)
    assert yaml.safe_load(replaced["data"]["config.yaml"])["rules"] == [adapter_rule(), *existing]
    (tmp_path / "merged.yaml").write_text(first.stdout)
    result = run_tool(tool("kubernetes-validate"), "--strict", tmp_path / "merged.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_merge_script_refuses_what_is_not_an_adapter_config_map() -> None:
    result = _merge_script(yaml.safe_dump({"kind": "Secret", "data": {}}))
    assert result.returncode == 2 and "expected a ConfigMap" in result.stderr
    result = _merge_script(yaml.safe_dump({"kind": "ConfigMap", "data": {"other.yaml": "rules: []"}}))
    assert result.returncode == 2 and "config.yaml" in result.stderr


def test_keda_overlay_replaces_the_hpa_and_queries_its_own_namespace(tmp_path: Path) -> None:
    resources = by_kind(render_kustomization(K8S / "extras" / "keda"))
    assert ("HorizontalPodAutoscaler", "paca-serve") not in resources  # KEDA creates its own HPA
    scaled = resources[("ScaledObject", "paca-serve")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "paca-serve" and scaled["spec"]["minReplicaCount"] >= 1
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert {"serverAddress", "query", "threshold"} <= trigger["metadata"].keys()
    namespace = scaled["metadata"]["namespace"]
    assert resources[("Deployment", "paca-serve")]["metadata"]["namespace"] == namespace
    assert trigger["metadata"]["query"].count(f'namespace="{namespace}"') == 2
    assert "replicas" not in resources[("Deployment", "paca-serve")]["spec"]
    # Another namespace, set in the one place the kustomization has: the query follows.
    copy_root = tmp_path / "k8s"
    shutil.copytree(K8S, copy_root)
    kustomization = copy_root / "extras" / "keda" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace(f"namespace: {namespace}", "namespace: team-a"))
    query = by_kind(render_kustomization(copy_root / "extras" / "keda"))[("ScaledObject", "paca-serve")]
    query_text = query["spec"]["triggers"][0]["metadata"]["query"]
    assert query_text.count('namespace="team-a"') == 2 and "default" not in query_text
    assert "nv_inference_queue_duration_us" in query_text and "nv_inference_request_success" in query_text


def test_kserve_inference_service_is_a_v2_custom_predictor_of_the_image(tmp_path: Path) -> None:
    (service,) = render_kustomization(K8S / "extras" / "kserve")
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # the container KServe routes to
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PROTOCOL"] == "v2"  # KServe's marker for a custom predictor's protocol
    args = container["args"]
    port = int(args[args.index("--port") + 1])
    assert [p["containerPort"] for p in container["ports"]] == [port] == [8080]  # one port under Knative
    assert args[args.index("--grpc-port") + 1] == "0" and args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--config") + 1] == "/etc/paca/repository.yaml"  # baked into the image
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    assert predictor["annotations"]["prometheus.kserve.io/port"] == str(port)
    assert predictor["minReplicas"] >= 1 and predictor["scaleMetric"] in ("concurrency", "rps", "cpu", "memory")
    # The predictor's pod part is a Kubernetes PodSpec: validate it strictly as one.
    kserve_fields = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "timeout", "annotations",
                     "labels", "containerConcurrency", "canaryTrafficPercent", "logger", "batcher"}
    assert set(predictor) - kserve_fields <= {"containers", "volumes"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "paca-serve-predictor"},
           "spec": {k: v for k, v in predictor.items() if k not in kserve_fields}}
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    result = run_tool(tool("kubernetes-validate"), "--strict", tmp_path / "pod.yaml")
    assert result.returncode == 0 and "passed for resource pod/paca-serve-predictor" in result.stdout, result.stdout


def test_triton_deployment_serves_what_its_init_container_exports() -> None:
    resources = by_kind(render_kustomization(K8S / "extras" / "triton"))
    spec = resources[("Deployment", "triton")]["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    (triton,) = spec["containers"]
    assert init["image"].startswith("paca-serve:") and triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    script = init["args"][0]
    exported = re.search(r"for model in ([^;]+);", script).group(1).split()
    repository = yaml.safe_load((K8S / "base" / "repository.yaml").read_text())
    assert sorted(exported) == sorted(m["name"] for m in repository["models"])  # the models the image bakes in
    assert "paca export-triton" in script and "--repository /models" in script
    args = triton["args"]
    assert "--model-repository=/models" in args and "--model-control-mode=explicit" in args
    assert sorted(a.removeprefix("--load-model=") for a in args if a.startswith("--load-model=")) == sorted(
        f"{m}_onnx" for m in exported)
    mounts = {c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in (init, triton)}
    assert mounts["export-triton"]["models"] == mounts["triton"]["models"] == "/models"
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    for probe, path in (("startupProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live"),
                        ("readinessProbe", "/v2/health/ready")):
        assert triton[probe]["httpGet"] == {"path": path, "port": "http"}
    service = resources[("Service", "triton")]
    assert {p["name"] for p in service["spec"]["ports"]} == set(ports)


@pytest.fixture(scope="module")
def demo_onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo ONNX files the images bake in: artifacts/demo when `paca demo ensure` made them, else made now."""
    folder = REPO_ROOT / "artifacts" / "demo"
    names = [m["name"] for m in yaml.safe_load((K8S / "base" / "repository.yaml").read_text())["models"]]
    if all((folder / f"{name}.onnx").is_file() for name in names):
        return folder
    from typer.testing import CliRunner

    from service.cli import app

    folder = tmp_path_factory.mktemp("demo-artifacts")
    result = CliRunner().invoke(app, ["demo", "ensure", "--artifacts-dir", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


def test_triton_init_container_script_writes_the_repository_triton_loads(demo_onnx_dir: Path, tmp_path: Path) -> None:
    """The init container's own script, run here with the real `paca export-triton` (paths moved into tmp)."""
    spec = pod_spec(by_kind(render_kustomization(K8S / "extras" / "triton")), "triton")
    models = tmp_path / "models"
    script = spec["initContainers"][0]["args"][0]
    script = script.replace("/app/artifacts/demo", str(demo_onnx_dir)).replace("/models", str(models))
    shim = tmp_path / "bin" / "paca"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; sys.argv[0] = \'paca\'; '
                    f'from service.cli import main; main()" "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}", "PYTHONPATH": str(REPO_ROOT)}
    result = run_tool("/bin/sh", "-c", script, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = [a.removeprefix("--load-model=") for a in spec["containers"][0]["args"] if a.startswith("--load-model=")]
    for name in loaded:
        config = (models / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in config and 'platform: "onnxruntime_onnx"' in config
        assert (models / name / "1" / "model.onnx").stat().st_size > 0


# --- images -------------------------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(1)
        stages.setdefault(current, []).append(line)
    return stages


@pytest.mark.parametrize("stage", ["serve-cpu", "serve-gpu"])
def test_serving_images_run_as_non_root_with_ports_and_healthcheck(stage: str) -> None:
    lines = dockerfile_stages()[stage]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.split()[1:] == ["8000", "8001"] for line in lines if line.startswith("EXPOSE "))
    healthcheck = next(line for line in lines if line.startswith("HEALTHCHECK "))
    assert "http://127.0.0.1:8000/v2/health/ready" in healthcheck
    # The repository baked into the image is the one the manifests mount.
    copies = [line for line in lines if line.startswith("COPY ") and "/etc/paca/repository.yaml" in line]
    source = copies[0].split()[1]
    expected = "deploy/k8s/base/repository.yaml" if stage == "serve-cpu" else "deploy/k8s/overlays/gpu/repository.yaml"
    assert source == expected


def test_cpu_image_carries_no_torch() -> None:
    lines = dockerfile_stages()["serve-cpu"]
    requirement_files = [Path(f).name for line in lines for f in re.findall(r"-r\s+(\S+)", line)]
    assert requirement_files == ["requirements-serve.txt"]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


def test_serving_requirements_use_the_main_pins_and_no_torch() -> None:
    main = _pins(REPO_ROOT / "requirements.txt")
    serve = _pins(REPO_ROOT / "requirements-serve.txt")
    gpu = _pins(REPO_ROOT / "requirements-serve-gpu.txt")
    assert not {"torch", "torchvision", "timm"} & serve.keys()
    for name, version in serve.items():
        assert main.get(name) == version, f"{name}=={version} differs from requirements.txt"
    assert gpu.pop("onnxruntime-gpu")
    assert gpu.pop("torch") == main["torch"]  # TensorRT backend buffers and the plugin's Triton kernel
    serve.pop("onnxruntime")
    assert gpu == serve


def test_repository_files_cover_the_artifacts_the_image_bakes_in() -> None:
    lines = dockerfile_stages()["serve-cpu"]
    baked = next(line for line in lines if line.startswith("COPY --from=export"))
    destination = baked.split()[-1]  # ./artifacts/demo relative to WORKDIR /app
    workdir = next(line.split()[1] for line in lines if line.startswith("WORKDIR "))
    baked_dir = (Path(workdir) / destination).as_posix()
    repository = yaml.safe_load((K8S / "base" / "repository.yaml").read_text())
    for model in repository["models"]:
        artifact = (Path(repository["base_dir"]) / model["artifact"]).as_posix()
        assert artifact == f"{baked_dir}/{model['name']}.onnx"


def test_export_stage_writes_where_the_serving_stages_copy_from() -> None:
    export_lines = dockerfile_stages()["export"]
    ensure = next(line for line in export_lines if "paca demo ensure" in line)
    artifacts_dir = re.search(r"--artifacts-dir\s+(\S+)", ensure).group(1)
    for stage in ("serve-cpu", "serve-gpu"):
        baked = next(line for line in dockerfile_stages()[stage] if line.startswith("COPY --from=export"))
        assert baked.split()[2] == artifacts_dir


def _cli_help(*command: str) -> str:
    from typer.testing import CliRunner

    from service.cli import app

    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, f"paca {' '.join(command)}: {result.output}"
    return result.output


def test_commands_the_images_and_manifests_run_exist_with_their_flags() -> None:
    serve_help = _cli_help("serve")
    for flag in ("--config", "--host", "--port", "--grpc-port"):
        assert flag in serve_help
    assert "--artifacts-dir" in _cli_help("demo", "ensure")
    assert re.search(r"\bversion\b", _cli_help())  # used in the engine cache key


def test_engine_build_command_exists_for_the_gpu_image() -> None:
    from service.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    if "build-engine" not in commands:
        pytest.skip("`paca build-engine` (export/) not implemented yet; ensure-engines.sh depends on it")
    assert "--output" in _cli_help("build-engine")


# --- the engine cache script ----------------------------------------------------------------------------------


def _fake_gpu_tools(bin_dir: Path, build_log: Path, build_seconds: float = 0) -> dict[str, str]:
    """Test doubles for what cannot run here: nvidia-smi (a GPU), tensorrt, and `paca build-engine` (TensorRT).

    They only let the cache logic of ensure-engines.sh run; they verify nothing about TensorRT itself. The
    fake build writes its plan in two steps (`build_seconds` apart), like a slow build, and logs its
    arguments and the caches it was given.
    """
    bin_dir.mkdir()
    scripts = {
        "nvidia-smi": 'echo "NVIDIA H100 80GB HBM3, 9.0"',
        "paca": textwrap.dedent(f"""\
            if [ "$1" = version ]; then echo 0.1.0; exit 0; fi
            [ "$1" = build-engine ] || exit 2
            echo "$2 $5 $6 $7 $8 $PACA_CACHE $TRITON_CACHE_DIR" >> {build_log}
            printf 'plan-' > "$4"
            sleep {build_seconds}
            printf 'of-%s' "$(basename "$2")" >> "$4"
            printf '{{"gpu": "H100", "onnx_sha256": "%s"}}' "$(sha256sum "$2" | cut -d' ' -f1)" > "$4.json"
            """),
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    package = bin_dir / "pysite" / "tensorrt"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('__version__ = "10.13.3.9"\n')
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(bin_dir / "pysite") + os.pathsep + str(Path(yaml.__file__).parents[1]),
        "PYTHON": sys.executable,
    }


ENSURE_ENGINES = REPO_ROOT / "deploy" / "scripts" / "ensure-engines.sh"


def _onnx_dir(tmp_path: Path) -> Path:
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for name in ("demo-digits-classifier", "demo-digits-detector", "demo-digits-segmenter"):
        (onnx_dir / f"{name}.onnx").write_bytes(b"onnx " + name.encode())
    return onnx_dir


def _cache_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The engine volume, the engine links and the GPU overlay's model repository (its max batch sizes)."""
    env = {key: value for key, value in env.items() if key not in ("PACA_CACHE", "TRITON_CACHE_DIR")}
    return env | {"PACA_ENGINE_CACHE": str(tmp_path / "cache"), "PACA_ENGINE_DIR": str(tmp_path / "engines"),
                  "PACA_REPOSITORY": str(K8S / "overlays" / "gpu" / "repository.yaml")}


def test_ensure_engines_builds_once_per_gpu_key_and_batch_size_and_links(tmp_path: Path) -> None:
    onnx_dir = _onnx_dir(tmp_path)
    build_log = tmp_path / "builds.txt"
    env = _cache_env(_fake_gpu_tools(tmp_path / "bin", build_log), tmp_path)

    for _ in range(2):  # the second start finds everything cached
        result = run_tool("bash", ENSURE_ENGINES, onnx_dir, env=env)
        assert result.returncode == 0, result.stderr
    key_dir = tmp_path / "cache" / "nvidia-h100-80gb-hbm3-sm90-trt10.13.3.9-paca0.1.0"
    builds = [line.split() for line in build_log.read_text().splitlines()]
    served = {m["name"]: m["max_batch_size"] for m in
              yaml.safe_load((K8S / "overlays" / "gpu" / "repository.yaml").read_text())["models"]}
    assert sorted(Path(b[0]).name for b in builds) == ["demo-digits-classifier.onnx", "demo-digits-segmenter.onnx"]
    for onnx, *args, timing_cache, triton_cache in builds:
        name = Path(onnx).stem
        # Finding 14: each engine for the batch size its model is served with, not a fixed 32.
        assert args == ["--max-batch", str(served[name]), "--opt-batch", str(min(8, served[name]))]
        # Finding 4: caches on the engine volume, whatever HOME is.
        assert timing_cache.startswith(str(tmp_path / "cache")) and triton_cache.startswith(str(tmp_path / "cache"))
        link = tmp_path / "engines" / f"{name}.plan"
        assert link.is_symlink() and link.resolve().parent == key_dir
        assert link.resolve().name.startswith(f"{name}.b{served[name]}.")
        assert link.read_bytes() == f"plan-of-{name}.onnx".encode()
        assert (tmp_path / "engines" / f"{name}.plan.json").resolve() == Path(str(link.resolve()) + ".json")
    assert not list(key_dir.glob(".*"))  # no temporary files left behind
    assert not (tmp_path / "engines" / "demo-digits-detector.plan").exists()

    # A re-exported model (same versions, new weights) gets a new engine; the other stays cached.
    (onnx_dir / "demo-digits-segmenter.onnx").write_bytes(b"onnx, retrained")
    assert run_tool("bash", ENSURE_ENGINES, onnx_dir, env=env).returncode == 0
    rebuilt = build_log.read_text().splitlines()[len(builds):]
    assert [Path(line.split()[0]).name for line in rebuilt] == ["demo-digits-segmenter.onnx"]

    # Other build options (fp16) are a different engine: both models build again, and link to the new plans.
    fp32_plan = (tmp_path / "engines" / "demo-digits-classifier.plan").resolve()
    assert run_tool("bash", ENSURE_ENGINES, onnx_dir, env=env | {"PACA_BUILD_ARGS": "--precision fp16"}).returncode == 0
    rebuilt = build_log.read_text().splitlines()[len(builds) + 1:]
    assert sorted(Path(line.split()[0]).name for line in rebuilt) == ["demo-digits-classifier.onnx",
                                                                     "demo-digits-segmenter.onnx"]
    fp16_plan = (tmp_path / "engines" / "demo-digits-classifier.plan").resolve()
    assert fp16_plan != fp32_plan and fp32_plan.exists()


def _pid_namespace_prefix() -> list[str]:
    """Run each replica as PID 1, like an init container, where this machine allows it."""
    probe = subprocess.run(["unshare", "--pid", "--fork", "bash", "-c", "echo $$"], capture_output=True, text=True,
                           timeout=30) if shutil.which("unshare") else None
    return ["unshare", "--pid", "--fork"] if probe is not None and probe.stdout.strip() == "1" else []


def test_ensure_engines_replicas_sharing_the_volume_never_collide(tmp_path: Path) -> None:
    """Finding 6: two replicas (both PID 1 where possible) building the same engines at the same time."""
    assert "$$" not in ENSURE_ENGINES.read_text()
    onnx_dir = _onnx_dir(tmp_path)
    env = _cache_env(_fake_gpu_tools(tmp_path / "bin", tmp_path / "builds.txt", build_seconds=0.5), tmp_path)
    prefix = _pid_namespace_prefix()
    replicas = [subprocess.Popen([*prefix, "bash", str(ENSURE_ENGINES), str(onnx_dir)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for replica in replicas:
        _, stderr = replica.communicate(timeout=120)
        assert replica.returncode == 0, stderr
    key_dir = next((tmp_path / "cache").glob("nvidia-*"))
    for name in ("demo-digits-classifier", "demo-digits-segmenter"):
        assert (tmp_path / "engines" / f"{name}.plan").read_bytes() == f"plan-of-{name}.onnx".encode()
        assert json.loads((tmp_path / "engines" / f"{name}.plan.json").read_text())["gpu"] == "H100"
    assert not list(key_dir.glob(".*"))


def test_ensure_engines_fails_on_a_missing_onnx(tmp_path: Path) -> None:
    env = _cache_env(_fake_gpu_tools(tmp_path / "bin", tmp_path / "builds.txt"), tmp_path)
    result = run_tool("bash", ENSURE_ENGINES, tmp_path, "no-such-model", env=env)
    assert result.returncode != 0 and "missing" in result.stderr


# --- perf_analyzer installer ----------------------------------------------------------------------------------


def test_perf_analyzer_installer_fails_soft_without_the_tools_venv(tmp_path: Path) -> None:
    result = run_tool("bash", REPO_ROOT / "scripts" / "install-perf-analyzer.sh", tmp_path / "no-venv")
    assert result.returncode == 0
    assert "WARNING" in result.stderr and "not installed" in result.stderr


def test_perf_analyzer_wrapper_runs() -> None:
    wrapper = REPO_ROOT / "tools" / "bin" / "perf_analyzer"
    if not wrapper.exists():
        pytest.skip("perf_analyzer not installed (make tools)")
    result = run_tool(wrapper, "--version")
    assert result.returncode == 0 and "Perf Analyzer Version 2.47.0" in result.stdout + result.stderr


# --- Makefile -----------------------------------------------------------------------------------------------


def test_make_run_passes_host_port_and_grpc_port() -> None:
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    result = run_tool("make", "-n", "run", "HOST=127.0.0.2", "PORT=8123", "GRPC_PORT=8124", cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    serve = next(line for line in result.stdout.splitlines() if "paca serve" in line)
    assert serve.split()[-6:] == ["--host", "127.0.0.2", "--port", "8123", "--grpc-port", "8124"]
    report = run_tool("make", "-n", "loadtest-report", "PORT=8123", "GRPC_PORT=8124", cwd=REPO_ROOT)
    assert "--url http://127.0.0.1:8123 --grpc-target 127.0.0.1:8124" in report.stdout
