"""Checks of deploy/ (container images, Kubernetes manifests) against the server they deploy.

Static: every YAML document under deploy/ parses; the kustomizations are consistent (every
resource and patch exists, every YAML file is used, every patch hits one object); the rendered
overlays validate against the Kubernetes schemas (core kinds) and the Inference Extension's v1
API (InferencePool); every flag they pass exists in `r2serve serve --help`; ports agree; probe
and shutdown timings fit the server's loading and draining; the Dockerfiles' build commands are
the README's, and build-cpu-image.sh runs exactly the CPU Dockerfile's build lines.

Against a running server (the end-to-end fixture): every HTTP path the manifests and images name
is a route it serves, and the metrics the endpoint picker and the autoscaler read are exported,
as gauges, under the names the Inference Extension's model server protocol documents.
"""
import copy
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
KUBE = DEPLOY / "kubernetes"
OVERLAYS = {"gpu": KUBE / "overlays" / "gpu", "cpu": KUBE / "overlays" / "cpu"}
KUBERNETES_VERSION = "1.31.0"  # oldest Kubernetes the manifests are checked against

# The model server protocol of the Gateway API Inference Extension (site docs/proposals/
# 003-model-server-protocol, as of release v1.3.1): the metrics its endpoint picker reads, the
# picker's flag naming each, the vLLM name r2serve exports, and the Prometheus type.
PROTOCOL_METRICS = {
    "TotalQueuedRequests": ("--total-queued-requests-metric", "vllm:num_requests_waiting", "gauge"),
    "TotalRunningRequests": ("--total-running-requests-metric", "vllm:num_requests_running", "gauge"),
    "KVCacheUtilization": ("--kv-cache-usage-percentage-metric", "vllm:kv_cache_usage_perc", "gauge"),
}
# Protocol metrics r2serve does not export; the picker must be told to skip them (empty name).
PROTOCOL_METRICS_OFF = ("--lora-info-metric", "--cache-info-metric")

# The endpoint picker's flags in release v1.3.1 (pkg/epp/server/options.go), zap's logging flags
# aside; its image tag in base/epp.yaml is that release.
EPP_RELEASE = "v1.3.1"
EPP_FLAGS = set("""
cache-info-metric cert-path config-file config-text disable-endpoint-subset-filter
enable-cert-reload enable-pprof endpoint-selector endpoint-target-ports grpc-health-port grpc-port
ha-enable-leader-election health-checking kv-cache-usage-percentage-metric lora-info-metric
metrics-endpoint-auth metrics-port metrics-staleness-threshold
model-server-metrics-https-insecure-skip-verify model-server-metrics-path model-server-metrics-port
model-server-metrics-scheme pool-group pool-name pool-namespace refresh-metrics-interval
refresh-prometheus-metrics-interval secure-serving total-queued-requests-metric
total-running-requests-metric tracing v""".split())

# InferencePool, inference.networking.k8s.io/v1 (api/v1/inferencepool_types.go at v1.3.1).
INFERENCE_POOL_SPEC_FIELDS = {"selector", "targetPorts", "appProtocol", "endpointPickerRef"}
ENDPOINT_PICKER_REF_FIELDS = {"group", "kind", "name", "port", "failureMode"}


# ---- YAML and a small kustomize ----------------------------------------------------------------

def yaml_docs(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def group_version(api_version):
    group, _, version = api_version.rpartition("/")
    return group, version


def matches_target(doc, target):
    group, version = group_version(doc["apiVersion"])
    return (target.get("group", group) == group and target.get("version", version) == version
            and target.get("kind", doc["kind"]) == doc["kind"]
            and target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"])


def json_pointer(path):
    assert path.startswith("/"), f"JSON pointer {path!r} must start with /"
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_json_patch(doc, ops, where):
    """RFC 6902 add/replace/remove, enough for the overlays; anything else fails loudly."""
    for op in ops:
        *parents, last = json_pointer(op["path"])
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        kind = op["op"]
        if kind == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), op["value"])
        elif kind == "add":
            node[last] = op["value"]
        elif kind == "replace":
            index = int(last) if isinstance(node, list) else last
            node[index]  # must exist
            node[index] = op["value"]
        elif kind == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            pytest.fail(f"{where}: patch op {kind!r} is not understood by this checker")


def split_image(image):
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, None
    return name, tag


def containers(doc):
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def render(directory):
    """Renders a kustomization the way `kustomize build` does, for the fields deploy/ uses."""
    kfile = directory / "kustomization.yaml"
    assert kfile.exists(), f"{directory} has no kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    supported = {"apiVersion", "kind", "resources", "patches", "images"}
    assert set(k) <= supported, (
        f"{kfile}: fields {sorted(set(k) - supported)} are not understood by this checker")
    assert k["kind"] == "Kustomization"
    docs = []
    for resource in k.get("resources", []):
        path = (directory / resource).resolve()
        assert path.exists(), f"{kfile}: resource {resource} does not exist"
        docs += render(path) if path.is_dir() else yaml_docs(path)
    for patch in k.get("patches", []):
        path = directory / patch["path"]
        assert path.exists(), f"{kfile}: patch {patch['path']} does not exist"
        ops = yaml.safe_load(path.read_text())
        assert isinstance(ops, list), f"{path}: only JSON 6902 patches (a list of ops) are used"
        hits = [doc for doc in docs if matches_target(doc, patch["target"])]
        assert len(hits) == 1, f"{kfile}: patch target {patch['target']} matches {len(hits)} objects"
        apply_json_patch(hits[0], ops, path)
    for image in k.get("images", []):
        used = False
        for doc in docs:
            for container in containers(doc):
                name, tag = split_image(container["image"])
                if name == image["name"]:
                    used = True
                    new_tag = image.get("newTag", tag)
                    container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")
        assert used, f"{kfile}: image {image['name']} is used by no container"
    return docs


def by_kind(docs, kind, name=None):
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert hits, f"no {kind} {name or ''}"
    return hits


def one(docs, kind, name):
    hits = by_kind(docs, kind, name)
    assert len(hits) == 1, f"{len(hits)} {kind} named {name}"
    return hits[0]


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def overlay(request):
    return request.param, render(OVERLAYS[request.param])


def server_container(docs):
    deployment = one(docs, "Deployment", "r2serve")
    (container,) = [c for c in containers(deployment) if c["name"] == "r2serve"]
    return deployment, container


def flag_args(args, where):
    """[(flag, value)] from --name=value / --name value / --name arguments."""
    out = []
    i = 0
    while i < len(args):
        arg = args[i]
        assert arg.startswith("--"), f"{where}: argument {arg!r} is not a --flag"
        name, eq, value = arg[2:].partition("=")
        if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 1
        out.append((name.replace("_", "-"), value if (eq or value) else None))
        i += 1
    return out


def flag_value(args, flag, where):
    values = [v for f, v in flag_args(args, where) if f == flag]
    assert len(values) == 1, f"{where}: --{flag} appears {len(values)} times"
    return values[0]


def seconds(text):
    return float(text)


# ---- the server's own description of itself -----------------------------------------------------

@pytest.fixture(scope="module")
def serve_help(binary):
    result = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def serve_flags(serve_help):
    flags = set(re.findall(r"^  --([a-z0-9-]+) \(default", serve_help, re.M))
    assert {"model", "port", "host", "shutdown-timeout"} <= flags, serve_help
    return flags


@pytest.fixture(scope="module")
def documented_routes(serve_help):
    """The route list `serve --help` prints above its flags."""
    header = serve_help.split("\n  --", 1)[0]
    routes = set(re.findall(r"(?<![\w/])(/[a-z0-9_/-]*[a-z0-9])", header))
    assert {"/health", "/metrics", "/v1/chat/completions"} <= routes, header
    return routes


@pytest.fixture(scope="module")
def deploy_server(start_server):
    """A server started with the CPU overlay's flags (model, address and KV budget replaced)."""
    _, container = server_container(render(OVERLAYS["cpu"]))
    replaced = {"model", "served-model-name", "host", "port", "kv-cache-memory", "grpc-port"}
    extra = [f"--{f}={v}" for f, v in flag_args(container["args"], "cpu overlay")
             if f not in replaced]
    return start_server(*extra, "--kv-cache-memory=256M")


# ---- YAML and kustomize structure ------------------------------------------------------------------

def test_every_yaml_document_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 10, files
    for path in files:
        docs = yaml_docs(path)
        assert docs, f"{path} holds no YAML document"
        for doc in docs:
            assert isinstance(doc, (dict, list)), f"{path}: a document is a {type(doc).__name__}"
            if isinstance(doc, dict) and "apiVersion" in doc and doc.get("kind") != "Kustomization":
                assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without a name"
    # YAML embedded in a ConfigMap is YAML too.
    for doc in yaml_docs(KUBE / "base" / "epp.yaml"):
        for key, text in (doc.get("data") or {}).items():
            if key.endswith(".yaml"):
                assert isinstance(yaml.safe_load(text), dict), f"ConfigMap data {key}"


def test_kustomizations_use_every_file_and_nothing_missing():
    for directory in [KUBE / "base", *OVERLAYS.values()]:
        k = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used = {(directory / r).resolve() for r in k.get("resources", [])}
        used |= {(directory / p["path"]).resolve() for p in k.get("patches", [])}
        for path in used:
            assert path.exists(), f"{directory}: {path} does not exist"
        for path in directory.glob("*.yaml"):
            if path.name != "kustomization.yaml":
                assert path.resolve() in used, f"{path} is not used by its kustomization.yaml"
    for directory in OVERLAYS.values():
        k = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert (directory / "../../base").resolve() in {(directory / r).resolve()
                                                        for r in k["resources"]}


def test_overlays_render_unique_objects(overlay):
    name, docs = overlay
    keys = [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{name}: duplicate objects"
    for kind in ["Deployment", "Service", "PodMonitor", "HorizontalPodAutoscaler", "InferencePool",
                 "HTTPRoute", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"]:
        by_kind(docs, kind)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_render_agrees_with_kubectl_kustomize(overlay):
    name, docs = overlay
    result = subprocess.run(["kubectl", "kustomize", str(OVERLAYS[name])], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    theirs = [d for d in yaml.safe_load_all(result.stdout) if d]
    key = lambda d: (d["apiVersion"], d["kind"], d["metadata"]["name"])
    assert sorted(theirs, key=key) == sorted(docs, key=key)


def test_core_objects_validate_against_kubernetes_schemas(overlay):
    name, docs = overlay
    checked = 0
    for doc in docs:
        try:
            kubernetes_validate.validate(copy.deepcopy(doc), KUBERNETES_VERSION, strict=True)
            checked += 1
        except kubernetes_validate.SchemaNotFoundError:
            assert doc["kind"] in {"PodMonitor", "InferencePool", "HTTPRoute"}, doc["kind"]
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {e.message} at "
                        f"{'/'.join(map(str, e.path))}")
    assert checked >= 9


def test_schema_check_catches_a_misspelt_field():
    deployment = one(render(OVERLAYS["cpu"]), "Deployment", "r2serve")
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# ---- the model server Deployment --------------------------------------------------------------------

def test_server_flags_exist(overlay, serve_flags):
    name, docs = overlay
    _, container = server_container(docs)
    assert container["command"] == ["r2serve", "serve"]
    flags = [flag for flag, _ in flag_args(container["args"], f"{name} overlay")]
    for flag in flags:
        assert flag in serve_flags, f"{name} overlay passes --{flag}, which `r2serve serve` lacks"
    repeated = {f for f in flags if flags.count(f) > 1} - {"api-key"}  # only --api-key repeats
    assert not repeated, f"{name} overlay passes {sorted(repeated)} more than once"


def test_flag_check_catches_an_unknown_flag(serve_flags):
    assert all(f in serve_flags for f, _ in flag_args(["--port=1", "--model", "/m"], "t"))
    assert not all(f in serve_flags for f, _ in flag_args(["--no-such-flag=1"], "t"))


def test_ports_agree(overlay):
    name, docs = overlay
    deployment, container = server_container(docs)
    port = int(flag_value(container["args"], "port", name))
    grpc_port = int(flag_value(container["args"], "grpc-port", name))
    assert flag_value(container["args"], "host", name) == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port, "grpc": grpc_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", port), probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    service = one(docs, "Service", "r2serve")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http", "grpc"]
    for service_port in service["spec"]["ports"]:
        assert service_port["port"] == ports[service_port["targetPort"]]
    monitor = one(docs, "PodMonitor", "r2serve")
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["http"]
    pool = one(docs, "InferencePool", "r2serve")
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == [port]


def test_probes_survive_loading_and_draining(overlay):
    name, docs = overlay
    deployment, container = server_container(docs)
    pod = deployment["spec"]["template"]["spec"]
    shutdown = seconds(flag_value(container["args"], "shutdown-timeout", name))
    prestop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    prestop_s = seconds(prestop[1])
    startup = container["startupProbe"]
    # A 671B checkpoint loads for many minutes: allow at least 20 minutes before giving up.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60
    # The drain answers /health 503 for up to shutdown + 5 s (server/cmd_serve.cc Drain):
    # liveness must not kill a draining server.
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > shutdown + 5
    # Readiness drops a draining or faulted pod within seconds.
    ready = container["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 10
    # Grace period: preStop, the drain, 5 s for connections to write, a little margin, not more.
    grace = pod["terminationGracePeriodSeconds"]
    needed = prestop_s + shutdown + 5
    assert needed < grace <= needed + 15, (grace, needed)
    epp = one(docs, "Deployment", "r2serve-epp")
    assert epp["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= grace


def test_model_volume_is_read_only_at_the_image_path(overlay):
    name, docs = overlay
    deployment, container = server_container(docs)
    model = flag_value(container["args"], "model", name)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == model]
    assert mount["readOnly"] is True
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    for dockerfile in ("Dockerfile", "Dockerfile.cpu"):
        runtime = runtime_stage(dockerfile)
        assert flag_value(runtime["CMD"], "model", dockerfile) == model
        (user,) = runtime["USER"]
        assert user == f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}", dockerfile


def test_gpu_overlay_requests_gpus_and_tolerates_their_taint():
    docs = render(OVERLAYS["gpu"])
    _, container = server_container(docs)
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] >= 1
    pod = one(docs, "Deployment", "r2serve")["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"]
    assert container["image"].endswith("-cuda13")
    assert flag_value(container["args"], "device", "gpu overlay") == "cuda"


def test_cpu_overlay_threads_match_cores():
    _, container = server_container(render(OVERLAYS["cpu"]))
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["OMP_NUM_THREADS"]) == int(container["resources"]["requests"]["cpu"])
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert container["image"].endswith("-cpu")
    assert flag_value(container["args"], "device", "cpu overlay") == "cpu"


# ---- autoscaler, endpoint picker, InferencePool, route -------------------------------------------

def test_hpa_reads_the_adapter_metric():
    docs = render(KUBE / "base")
    hpa = one(docs, "HorizontalPodAutoscaler", "r2serve")
    target = hpa["spec"]["scaleTargetRef"]
    one(docs, target["kind"], target["name"])
    (metric,) = hpa["spec"]["metrics"]
    rules = yaml.safe_load((KUBE / "prometheus-adapter" / "values.yaml").read_text())["rules"]
    (rule,) = [r for r in rules["custom"] if r["name"]["as"] == metric["pods"]["metric"]["name"]]
    series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"]).group(1)
    assert series == PROTOCOL_METRICS["TotalQueuedRequests"][1]
    assert re.fullmatch(rule["name"]["matches"], series)
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_endpoint_picker_reads_the_protocol_metrics():
    docs = render(KUBE / "base")
    epp = one(docs, "Deployment", "r2serve-epp")
    (container,) = containers(epp)
    assert container["image"].endswith(f"/epp:{EPP_RELEASE}")
    for arg in container["args"]:
        assert arg.startswith("--") and arg[2:].split("=", 1)[0] in EPP_FLAGS, arg
    args = dict(a.split("=", 1) for a in container["args"])
    for flag, metric, _ in PROTOCOL_METRICS.values():
        assert args[flag] == metric, flag
    for flag in PROTOCOL_METRICS_OFF:
        assert args[flag] == "", flag
    assert args["--pool-name"] == "r2serve"
    assert args["--model-server-metrics-scheme"] == "http"
    config_path = Path(args["--config-file"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in epp["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    config_map = one(docs, "ConfigMap", volume["configMap"]["name"])
    config = yaml.safe_load(config_map["data"][config_path.name])
    assert config["kind"] == "EndpointPickerConfig"
    (profile,) = config["schedulingProfiles"]
    refs = {p["pluginRef"] for p in profile["plugins"]}
    assert {"queue-scorer", "kv-cache-utilization-scorer"} <= refs
    assert refs <= {p.get("name", p["type"]) for p in config["plugins"]}
    # The picker's own ports: Service targets named container ports; the pool points at ext-proc.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = one(docs, "Service", "r2serve-epp")
    for port in service["spec"]["ports"]:
        assert ports[port["targetPort"]] == port["port"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc-health"]
    pool = one(docs, "InferencePool", "r2serve")
    ref = pool["spec"]["endpointPickerRef"]
    assert ref["name"] == service["metadata"]["name"]
    assert ref["port"]["number"] == ports["grpc"]


def test_inference_pool_follows_the_v1_api():
    docs = render(KUBE / "base")
    pool = one(docs, "InferencePool", "r2serve")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    spec = pool["spec"]
    assert set(spec) <= INFERENCE_POOL_SPEC_FIELDS
    assert {"selector", "targetPorts", "endpointPickerRef"} <= set(spec)
    assert set(spec["selector"]) == {"matchLabels"}
    numbers = [p["number"] for p in spec["targetPorts"]]
    assert 1 <= len(numbers) <= 8 and len(set(numbers)) == len(numbers)
    assert all(1 <= n <= 65535 for n in numbers)
    ref = spec["endpointPickerRef"]
    assert set(ref) <= ENDPOINT_PICKER_REF_FIELDS and ref["name"]
    assert ref.get("kind", "Service") != "Service" or "port" in ref
    assert ref.get("failureMode", "FailClose") in {"FailOpen", "FailClose"}
    deployment = one(docs, "Deployment", "r2serve")
    assert spec["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    route = one(docs, "HTTPRoute", "r2serve")
    backends = [b for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
    assert backends == [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                         "name": "r2serve"}]


# ---- Dockerfiles and the no-Docker build script -----------------------------------------------------

def dockerfile_stages(name):
    """{stage: {"FROM": base, "RUN": [...], other instruction: args}} in order."""
    stages, current, pending = {}, None, ""
    for line in (DOCKER / name).read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not pending and not stripped):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        instruction, _, args = (pending + stripped).partition(" ")
        pending = ""
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            current = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages[current] = {"FROM": words[0], "RUN": []}
        elif instruction == "ARG" and current is None:
            continue
        elif instruction == "RUN":
            stages[current]["RUN"].append(args)
        elif instruction in ("CMD", "ENTRYPOINT"):
            stages[current][instruction] = yaml.safe_load(args)  # JSON form
        else:
            stages[current].setdefault(instruction, []).append(args)
    return stages


def runtime_stage(name):
    return dockerfile_stages(name)["runtime"]


def readme_commands():
    """Shell commands the README shows: code-block lines and inline `scripts/...` spans."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            commands += [c.strip() for c in line.split("&&") if c.strip()]
    commands += re.findall(r"`(scripts/[a-z]+)`", text)
    return commands


def normalize_build_command(command):
    """Drops what only limits parallelism or targets: -j N, --target T, output redirection."""
    words = shlex.split(command)
    out = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("-j", "--target", "--parallel"):
            skip = True
        elif word.startswith(">") or word.startswith("-j"):
            break
        else:
            out.append(word)
    return " ".join(out)


BUILD_STEPS = ["scripts/setup", "cmake --preset release", "cmake --build build/release"]


def test_build_stages_run_the_readme_commands():
    readme = readme_commands()
    presets = {p["name"]: p for p in
               json.loads((ROOT / "CMakePresets.json").read_text())["configurePresets"]}
    assert presets["base"]["binaryDir"] == "${sourceDir}/build/${presetName}"
    assert "release" in presets
    cpu = dockerfile_stages("Dockerfile.cpu")
    cuda = dockerfile_stages("Dockerfile")
    assert cpu["build"]["RUN"] == cuda["build"]["RUN"]
    runs = cpu["build"]["RUN"]
    build = [normalize_build_command(r) for r in runs if r.startswith(("scripts/", "cmake "))]
    assert build == BUILD_STEPS
    for command in build:
        assert command in readme, f"the image builds with `{command}`, which README.md lacks"
    assert readme.index("cmake --preset release") < readme.index("cmake --build build/release")
    # What is installed is what that build made: build/<preset>/server/r2serve.
    installs = [r for r in runs if r.startswith("install ")]
    assert installs == ['install -D -m 0755 build/release/server/r2serve "$R2_PREFIX/bin/r2serve"']
    assert cpu["build"]["ENV"] == ["R2_PREFIX=/opt/r2serve"] == cuda["build"]["ENV"]
    assert cpu["build"]["COPY"] == [". ."] and cpu["build"]["WORKDIR"] == ["/src"]


def test_build_check_catches_a_foreign_command():
    assert normalize_build_command('cmake --build build/release -j "$(nproc)" --target r2serve') \
        == "cmake --build build/release"
    assert normalize_build_command("cmake --preset release-cpu") not in readme_commands()


def test_cpu_script_runs_the_dockerfile_lines():
    script = (DOCKER / "build-cpu-image.sh").read_text()
    body = re.search(r"^# >>> Dockerfile.cpu build stage\n(.*?)^# <<< Dockerfile.cpu build stage",
                     script, re.S | re.M)
    assert body, "build-cpu-image.sh lost its markers"
    lines = [line.strip() for line in body.group(1).splitlines() if line.strip()]
    assert lines == dockerfile_stages("Dockerfile.cpu")["build"]["RUN"]
    assert "R2_PREFIX" in script and "export R2_PREFIX" in script
    for tool in sorted(DOCKER.glob("*.sh")):
        assert tool.stat().st_mode & 0o111, f"{tool} is not executable"
        subprocess.run(["bash", "-n", str(tool)], check=True)


def test_images_bases_user_and_healthcheck(serve_flags):
    cpu, cuda = dockerfile_stages("Dockerfile.cpu"), dockerfile_stages("Dockerfile")
    assert cpu["build"]["FROM"] == "debian:12" and cpu["runtime"]["FROM"] == "debian:12-slim"
    assert cuda["build"]["FROM"] == "cuda-devel" and cuda["runtime"]["FROM"] == "cuda-runtime"
    assert cuda["cuda-devel"]["FROM"] == "debian:12"
    assert cuda["cuda-runtime"]["FROM"] == "debian:12-slim"
    assert "cuda-minimal-build-13-0" in cuda["cuda-devel"]["RUN"][0]  # nvcc, CUDA 13 (DESIGN.md)
    assert "cuda-cudart-13-0" in cuda["cuda-runtime"]["RUN"][0]
    for name, stages in (("Dockerfile.cpu", cpu), ("Dockerfile", cuda)):
        runtime = stages["runtime"]
        (user,) = runtime["USER"]
        assert user.split(":")[0] not in ("0", "root"), f"{name} runs as root"
        assert runtime["ENTRYPOINT"] == ["r2serve", "serve"]
        port = int(flag_value(runtime["CMD"], "port", name))
        assert flag_value(runtime["CMD"], "host", name) == "0.0.0.0"
        assert runtime["EXPOSE"] == [str(port)]
        for flag, _ in flag_args(runtime["CMD"], name):
            assert flag in serve_flags, f"{name} CMD passes --{flag}, which `r2serve serve` lacks"
        (health,) = runtime["HEALTHCHECK"]
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", health)
        assert url and int(url.group(1)) == port and url.group(2) == "/health", health
        assert runtime["COPY"] == ["--from=build /opt/r2serve /opt/r2serve"]
    assert flag_value(cuda["runtime"]["CMD"], "device", "Dockerfile") == "cuda"


def test_deploy_readme_names_what_the_overlays_use():
    readme = (DEPLOY / "README.md").read_text()
    for directory in OVERLAYS.values():
        for image in yaml.safe_load((directory / "kustomization.yaml").read_text())["images"]:
            assert f"{image['name']}:{image['newTag']}" in readme
    assert "/model" in readme and "untested" in readme.lower()
    assert "vllm:num_requests_waiting" in readme and "vllm:kv_cache_usage_perc" in readme


# ---- against a running server ---------------------------------------------------------------------

def named_paths():
    """(where, path, is_prefix) for every HTTP path the manifests and images name."""
    out = []
    for name, directory in OVERLAYS.items():
        docs = render(directory)
        deployment, container = server_container(docs)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            out.append((f"{name} {probe}", container[probe]["httpGet"]["path"], False))
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        out.append((f"{name} scrape annotation", annotations["prometheus.io/path"], False))
        for endpoint in one(docs, "PodMonitor", "r2serve")["spec"]["podMetricsEndpoints"]:
            out.append((f"{name} PodMonitor", endpoint["path"], False))
        (epp,) = containers(one(docs, "Deployment", "r2serve-epp"))
        args = dict(a.split("=", 1) for a in epp["args"])
        out.append((f"{name} endpoint picker", args["--model-server-metrics-path"], False))
        for rule in one(docs, "HTTPRoute", "r2serve")["spec"]["rules"]:
            for match in rule["matches"]:
                assert match["path"]["type"] in ("PathPrefix", "Exact")
                out.append((f"{name} HTTPRoute", match["path"]["value"],
                            match["path"]["type"] == "PathPrefix"))
    for dockerfile in ("Dockerfile", "Dockerfile.cpu"):
        (health,) = runtime_stage(dockerfile)["HEALTHCHECK"]
        path = re.search(r"http://[^/\s]+(/\S*)", health).group(1)
        out.append((f"{dockerfile} HEALTHCHECK", path, False))
    return out


def test_named_paths_are_served_routes(deploy_server, documented_routes):
    def served(path):
        return httpx.get(deploy_server.base_url + path, timeout=10).status_code != 404

    assert not served("/no-such-route"), "the server answers unknown paths: the check is void"
    for route in documented_routes:
        assert served(route), f"`serve --help` lists {route}, which the server does not serve"
    for where, path, is_prefix in named_paths():
        if is_prefix:
            assert any(r == path or r.startswith(path.rstrip("/") + "/")
                       for r in documented_routes), f"{where}: no route under {path}"
        else:
            assert path in documented_routes, f"{where}: {path} is not a route"
            assert served(path), f"{where}: the server answers 404 for {path}"


def test_health_is_public_for_the_probes(deploy_server):
    response = httpx.get(deploy_server.base_url + "/health", timeout=10)
    assert response.status_code == 200


def test_server_exports_the_metrics_the_picker_and_autoscaler_read(deploy_server):
    response = httpx.get(deploy_server.base_url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    # A strict parse of the whole exposition: the picker rejects a malformed scrape.
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for protocol_name, (_, metric, kind) in PROTOCOL_METRICS.items():
        assert metric in families, f"{protocol_name}: {metric} is not exported"
        family = families[metric]
        # The picker reads a gauge's value; an untyped or counter sample would be misread.
        assert family.type == kind, f"{metric} is a {family.type}, the protocol wants a {kind}"
        assert len(family.samples) == 1, family.samples
        value = family.samples[0].value
        assert value >= 0
        if protocol_name == "KVCacheUtilization":
            assert value <= 1, "KV-cache usage is a fraction, 0..1"
        else:
            assert value == int(value)
    rules = yaml.safe_load((KUBE / "prometheus-adapter" / "values.yaml").read_text())["rules"]
    for rule in rules["custom"]:
        series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"]).group(1)
        assert families[series].type == "gauge", series
