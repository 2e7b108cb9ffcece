"""docker-compose.yml and deploy/ cannot be started here (no Docker): check what can be checked.

Every file they name exists, every module they run imports, and the Grafana
dashboard uses only the provisioned datasource. (The dashboard's queries run
against a real influxd in tests/influx/test_task.py.)
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def _python_modules(command: list[str]) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command[:-1]) if word == "-m"]


def test_compose_services_build_from_files_that_exist() -> None:
    services = _compose()["services"]
    assert {"influxdb", "server", "task", "grafana"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = ROOT / build["context"]
            assert (context / build["dockerfile"]).is_file(), name
        assert "image" in service or build is not None, name


def test_compose_bind_mounts_and_commands_point_at_real_things() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
        for module in _python_modules(service.get("command", [])):
            assert importlib.util.find_spec(module) is not None, f"{name}: python -m {module}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_dockerfile_copies_only_paths_that_exist() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+)$", dockerfile, flags=re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _target = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source


def test_dashboard_uses_the_provisioned_datasource() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "influxdb.yml").read_text())
    uids = {source["uid"] for source in datasources["datasources"]}
    providers = yaml.safe_load((provisioning / "dashboards" / "stad.yml").read_text())["providers"]
    mounted = {v.split(":")[1] for v in _compose()["services"]["grafana"]["volumes"]}
    assert all(p["options"]["path"] in mounted for p in providers)

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "stad.json").read_text())
    used = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict) and "uid" in node["datasource"]:
                used.add(node["datasource"]["uid"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(dashboard)
    assert used, "the dashboard names no datasource"
    assert used <= uids


@pytest.mark.parametrize("path", ["jobs.example.toml"])
def test_example_jobs_file_loads(path: str) -> None:
    from stad.influx_task.config import load_config

    config = load_config(ROOT / path)
    assert config.pipelines


_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def _dotenv() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _interpolated(value: str, env: dict[str, str]) -> str:
    """Compose's ${X}, ${X:-default} and ${X:?error} against `env`; a missing required one fails."""

    def one(match: re.Match[str]) -> str:
        name, rest = match.group(1), match.group(2)
        if name in env:
            return env[name]
        assert "?" not in match.group(0), f"${{{name}}} is required and .env.example lacks it"
        return rest or ""

    return _VARIABLE.sub(one, value)


def test_secrets_come_from_the_env_file_and_every_required_one_is_in_the_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = {m.group(1) for m in _VARIABLE.finditer(text) if "?" in m.group(0)}
    assert {"INFLUX_TOKEN", "INFLUX_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    assert required <= set(_dotenv())
    assert "stad-dev-token" not in text and "change-me" not in text  # no secret in the compose file
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_services_start_when_what_they_need_is_healthy() -> None:
    services = _compose()["services"]
    needed = {d for service in services.values() for d in service.get("depends_on", {})}
    for name in needed | {"task", "grafana", "server-gpu", "influxdb3"}:
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1, name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert "profiles" not in services[dependency], f"{name} needs {dependency}, which is optional"
    for name in ("feeder", "task"):
        assert set(services[name]["depends_on"]) == {"influxdb", "server"}


def test_metrics_are_on_and_published() -> None:
    services = _compose()["services"]
    for name, port in (("task", "9108"), ("server", "9090")):
        command = services[name]["command"]
        assert command[command.index("--metrics-port") + 1] == port
        assert f"{port}:{port}" in services[name]["ports"]
    assert "9108/healthz" in " ".join(services["task"]["healthcheck"]["test"])


def test_profiles_for_a_gpu_and_for_influxdb3() -> None:
    services = _compose()["services"]
    gpu = services["server-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert "cu" in gpu["build"]["args"]["TORCH_INDEX"].rsplit("/", 1)[-1]
    assert "ARG TORCH_INDEX" in (ROOT / "deploy" / "Dockerfile").read_text()
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["command"][gpu["command"].index("--device") + 1] == "cuda"
    v3 = services["influxdb3"]
    assert v3["profiles"] == ["influxdb3"] and v3["image"].startswith("influxdb:3")
    assert any(port.endswith(":8181") for port in v3["ports"])
    assert "profiles" not in services["server"] and "profiles" not in services["influxdb"]


def test_the_feeder_runs_a_pipeline_of_the_mounted_file() -> None:
    from stad.influx_task.config import load_config

    feeder = _compose()["services"]["feeder"]
    command = feeder["command"]
    mounted = next(v.split(":")[0] for v in feeder["volumes"] if "/etc/stad/jobs.toml" in v)
    pipeline = load_config(ROOT / mounted, environ={}).pipeline(command[command.index("--pipeline") + 1])
    assert pipeline.group_by, "the feeder tags its series with the pipeline's first group_by tag"


def test_the_task_dials_the_compose_services_not_the_files_localhost() -> None:
    from stad.influx_task.config import load_config

    task = _compose()["services"]["task"]
    environment = {k: _interpolated(str(v), _dotenv()) for k, v in task["environment"].items()}
    config_file = next(v.split(":")[0] for v in task["volumes"] if v.endswith("/etc/stad/jobs.toml:ro"))
    config = load_config(ROOT / config_file, environ=environment)
    assert config.connection.url == environment["INFLUX_URL"] == "http://influxdb:8086"
    assert config.server.target == environment["STAD_SERVER"] == "server:50051"
    assert config.connection.token == _dotenv()["INFLUX_TOKEN"]
    assert config.connection.org == environment["INFLUX_ORG"]
    with_gpu = {**_dotenv(), "STAD_SERVER": "server-gpu:50051", "INFLUX_URL": "http://influxdb3:8181"}
    moved = {k: _interpolated(str(v), with_gpu) for k, v in task["environment"].items()}
    config = load_config(ROOT / config_file, environ=moved)
    assert (config.server.target, config.connection.url) == ("server-gpu:50051", "http://influxdb3:8181")
