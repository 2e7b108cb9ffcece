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
        for dependency in service.get("depends_on", []):
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


def test_the_task_dials_the_compose_services_not_the_files_localhost() -> None:
    from stad.influx_task.config import load_config

    task = _compose()["services"]["task"]
    environment = {k: str(v) for k, v in task["environment"].items()}
    config_file = next(v.split(":")[0] for v in task["volumes"] if v.endswith("/etc/stad/jobs.toml:ro"))
    config = load_config(ROOT / config_file, environ=environment)
    assert config.connection.url == environment["INFLUX_URL"] != "http://localhost:8086"
    assert config.server.target == environment["STAD_SERVER"] != "localhost:50051"
    assert config.connection.token == environment["INFLUX_TOKEN"]
    assert config.connection.org == environment["INFLUX_ORG"]
