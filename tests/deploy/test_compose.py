"""docker-compose.yml, .env, the Prometheus and Grafana provisioning and the Dockerfile.

The compose file is checked against the Compose Specification's schema and by Debian's
docker-compose (`config`, which resolves .env); no image registry is reachable here, so
`make compose-up-local` (not part of `make test`) is what builds and starts it for real.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
import yaml

from tests.deploy.tools import ALERTS, DASHBOARD, ROOT, promtool, required, run

COMPOSE = ROOT / "docker-compose.yml"
# Run as a pinned uv tool (`uv tool run --from`), not installed as a dev dependency.
CHECK_JSONSCHEMA = "check-jsonschema==0.39.0"
SERVICES = {
    "transcription",
    "sentiment",
    "compliance-scoring",
    "review-router",
    "review-console",
    "audit-writer",
    "feedback-exporter",
}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def env_file() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines()
             if line.strip() and not line.startswith("#"))  # fmt: skip
    return {k: v for k, v in pairs}


def test_compose_file_matches_the_compose_specification() -> None:
    result = run(
        "uv", "tool", "run", "--from", CHECK_JSONSCHEMA, "check-jsonschema",
        "--builtin-schema", "vendor.compose-spec", str(COMPOSE), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_resolves_the_file_with_its_env() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "docker-compose not installed (Debian package docker-compose)"
        if required():
            pytest.fail(message)
        pytest.skip(message)
    out = run(binary, "config").stdout
    resolved = yaml.safe_load(out)
    assert set(resolved["services"]) >= SERVICES
    assert resolved["services"]["sentiment"]["image"] == "loopwise/sentiment:0.1.0"
    assert "${" not in out


def test_every_variable_comes_from_env() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)\}", COMPOSE.read_text()))
    assert used <= set(env_file()), used - set(env_file())
    assert env_file()["COMPOSE_PROJECT_NAME"] == "loopwise"


def test_services_wait_for_kafka_topics_and_their_database() -> None:
    services = compose()["services"]
    assert {"kafka", "postgres", "topics-init", "prometheus", "grafana"} | SERVICES == set(services)
    assert services["topics-init"]["entrypoint"] == ["loopwise"]
    assert services["topics-init"]["command"] == ["topics", "apply"]
    for name in SERVICES:
        svc = services[name]
        deps = svc["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy", name
        assert deps["topics-init"]["condition"] == "service_completed_successfully", name
        assert "/healthz" in " ".join(svc["healthcheck"]["test"]), name
        assert svc["build"] == {"context": ".", "args": {"SERVICE": name}}, name
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert (ROOT / "services" / name / "pyproject.toml").exists(), name
    for name in ("audit-writer", "review-console"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    console = services["review-console"]
    published = console["ports"][0]
    target = published["target"] if isinstance(published, dict) else published.split(":")[-1]
    assert console["environment"]["LOOPWISE_CONSOLE_HTTP_PORT"] == str(target)
    assert console["environment"]["LOOPWISE_CONSOLE_HTTP_HOST"] == "0.0.0.0"
    for name in ("kafka", "postgres", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name


def test_prometheus_scrapes_every_service_and_loads_the_alerts() -> None:
    config_path = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    assert "SUCCESS" in run(promtool(), "check", "config", str(config_path)).stdout
    config = yaml.safe_load(config_path.read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    for name in SERVICES:
        assert jobs[f"loopwise-{name}"] == [f"{name}:8080"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    rules_dir = next(m for m in mounts if m.endswith(":/etc/prometheus/rules:ro"))
    assert (ROOT / rules_dir.split(":")[0]).resolve() == ALERTS.parent.resolve()
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {
        m.split(":")[1]: ROOT / m.split(":")[0] for m in grafana["volumes"] if m.startswith("./")
    }
    provisioning = mounts["/etc/grafana/provisioning"]
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "loopwise.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert (mounts[path] / DASHBOARD.name).resolve() == DASHBOARD.resolve()


def test_dockerfile_is_multi_stage_non_root_and_pinned() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", text, re.M)
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "uv sync --frozen --no-dev" in text
    assert "COPY shared shared" in text  # the build context is the repository root
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".git", ".venv", "var", "tests", "**/tests"} <= set(ignored)
    assert not {"shared", "services", "deploy", "uv.lock"} & set(ignored)
