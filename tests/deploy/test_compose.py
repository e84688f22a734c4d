"""Static checks of the production deployment: docker-compose.yml and deploy/.

The stack itself cannot be started in CI (no image registry); these tests validate the files
with the real tools where they are installed (`docker-compose` from Debian's package of that
name, `promtool` from Debian's `prometheus`) and check the properties the deployment relies on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "aintandem.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DYNAMIC_CONFIG = DEPLOY / "temporal" / "dynamicconfig" / "development.yaml"

SERVICES = {
    "postgres",
    "temporal",
    "temporal-ui",
    "migrate",
    "api",
    "worker",
    "prometheus",
    "grafana",
}
APP_SERVICES = ("api", "worker", "migrate")

DASHBOARD_METRICS = (
    "aintandem_sandbox_sandboxes",
    "aintandem_delivery_messages_total",
    "aintandem_delivery_latency_seconds",
    "aintandem_collaboration_collaborations",
    "aintandem_api_http_requests_total",
    "aintandem_api_http_request_duration_seconds",
    "aintandem_api_websocket_connections",
    "aintandem_api_events_published_total",
    "aintandem_api_rate_limit_rejections_total",
    "aintandem_llm_calls_total",
    "aintandem_llm_tokens_total",
    "aintandem_llm_call_duration_seconds",
    "temporal_workflow_task_execution_latency",
)
HISTOGRAMS = (
    "aintandem_delivery_latency_seconds",
    "aintandem_api_http_request_duration_seconds",
    "aintandem_llm_call_duration_seconds",
    "temporal_workflow_task_execution_latency",
)

COMPOSE_TIMEOUT = 60


def _compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINTANDEM_")}
    env.update(extra)
    return env


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(
            "the `docker-compose` binary is not installed "
            "(Debian: apt-get install -y docker-compose); the setup script installs it"
        )
    return binary


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML is needed to inspect the deployment files")


def _load_yaml(path: Path) -> Any:
    return _yaml().safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE)


def _volume_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            sources.append(str(volume.get("source", "")))
        else:
            sources.append(str(volume).split(":", 1)[0])
    return sources


def _exprs(panels: list[dict[str, Any]]) -> list[str]:
    found = []
    for panel in panels:
        found += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
        found += _exprs(panel.get("panels", []))  # panels nested in collapsed rows
    return found


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("`promtool` is not installed (Debian package `prometheus`)")
    return binary


# --- the real tools -------------------------------------------------------------------------


def test_compose_config_validates() -> None:
    result = subprocess.run(
        [_docker_compose(), "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        env=_compose_env(AINTANDEM_JWT_SECRET="test-only-secret"),
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_jwt_secret(tmp_path: Path) -> None:
    # An empty --env-file: a developer's .env must not supply the secret behind our back.
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    result = subprocess.run(
        [_docker_compose(), "--env-file", str(empty_env), "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        env=_compose_env(),
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT,
    )
    assert result.returncode != 0
    assert "AINTANDEM_JWT_SECRET" in result.stderr


def test_prometheus_config_passes_promtool() -> None:
    result = subprocess.run(
        [_promtool(), "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = _promtool()
    yaml = _yaml()
    exprs = _exprs(json.loads(DASHBOARD.read_text())["panels"])
    # Grafana substitutes $__rate_interval before querying; promtool parses plain PromQL.
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": e.replace("$__rate_interval", "5m")}
        for i, e in enumerate(exprs)
    ]
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)],
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the compose file -----------------------------------------------------------------------


def test_compose_has_every_service_and_named_volume() -> None:
    compose = _compose()
    assert str(compose["version"]) == "2.4"
    assert set(compose["services"]) >= SERVICES
    assert {"postgres-data", "prometheus-data", "grafana-data"} <= set(compose["volumes"])


def test_app_services_share_one_build_and_image() -> None:
    services = _compose()["services"]
    builds = [services[name]["build"] for name in APP_SERVICES]
    assert all(b == builds[0] for b in builds)
    assert builds[0]["dockerfile"] == "deploy/Dockerfile"
    assert len({services[name]["image"] for name in APP_SERVICES}) == 1
    commands = {name: services[name]["command"] for name in APP_SERVICES}
    assert commands == {"api": ["api"], "worker": ["worker"], "migrate": ["migrate"]}


def test_api_and_worker_wait_for_migrations_and_temporal() -> None:
    services = _compose()["services"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["temporal"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["temporal"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_no_service_is_privileged() -> None:
    for name, service in _compose()["services"].items():
        assert not service.get("privileged", False), name
        assert "SYS_ADMIN" not in service.get("cap_add", []), name


def test_only_the_worker_mounts_the_docker_socket() -> None:
    mounting = {
        name
        for name, service in _compose()["services"].items()
        if any("docker.sock" in source for source in _volume_sources(service))
    }
    assert mounting == {"worker"}


def test_worker_can_be_scaled_out() -> None:
    worker = _compose()["services"]["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    env = worker["environment"]
    assert env["AINTANDEM_WORKER_METRICS_HOST"] == "0.0.0.0"
    assert str(env["AINTANDEM_WORKER_METRICS_PORT"]) == "9464"
    assert "container_name" not in _compose()["services"]["api"]


def test_jwt_secret_is_required_and_has_no_default() -> None:
    api_env = _compose()["services"]["api"]["environment"]
    assert re.fullmatch(r"\$\{AINTANDEM_JWT_SECRET:\?[^}]*\}", api_env["AINTANDEM_JWT_SECRET"])
    # Nowhere a `${AINTANDEM_JWT_SECRET:-...}` / `${AINTANDEM_JWT_SECRET-...}` fallback.
    assert not re.search(r"\$\{AINTANDEM_JWT_SECRET:?-", COMPOSE.read_text())


def test_app_services_point_at_compose_postgres_and_temporal() -> None:
    services = _compose()["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["AINTANDEM_DATABASE_URL"].startswith("postgresql+psycopg://aintandem:")
        assert env["AINTANDEM_DATABASE_URL"].endswith("@postgres:5432/aintandem")
        assert env["AINTANDEM_TEMPORAL_ADDRESS"] == "temporal:7233"


def test_bind_mounted_files_exist() -> None:
    for name, service in _compose()["services"].items():
        for source in _volume_sources(service):
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
    assert (DEPLOY / "Dockerfile").is_file()
    assert os.access(DEPLOY / "postgres" / "initdb" / "10-aintandem.sh", os.R_OK)


# --- Temporal, Prometheus and Grafana configuration ------------------------------------------


def test_temporal_dynamic_config_is_well_formed() -> None:
    config = _load_yaml(DYNAMIC_CONFIG)
    assert config
    for key, values in config.items():
        assert isinstance(values, list) and values, key
        for entry in values:
            assert set(entry) == {"value", "constraints"}, key
    assert config["frontend.enableUpdateWorkflowExecution"][0]["value"] is True


def test_prometheus_scrapes_every_api_and_worker_replica() -> None:
    config = _load_yaml(PROMETHEUS_YML)
    targets = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            path = job.get("metrics_path", "/metrics")
            targets |= {(name, sd["port"], path) for name in sd["names"]}
    assert ("api", 8000, "/metrics") in targets
    assert ("worker", 9464, "/metrics") in targets


def test_grafana_provisions_the_prometheus_datasource() -> None:
    datasources = _load_yaml(DATASOURCES)["datasources"]
    prometheus = [d for d in datasources if d["type"] == "prometheus"]
    assert prometheus and prometheus[0]["url"] == "http://prometheus:9090"


def test_dashboard_covers_every_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = _exprs(dashboard["panels"])
    assert exprs
    missing = [m for m in DASHBOARD_METRICS if not any(m in e for e in exprs)]
    assert not missing, f"no panel queries {missing}"
    for histogram in HISTOGRAMS:
        quantiles = [e for e in exprs if "histogram_quantile" in e]
        assert any(f"{histogram}_bucket" in e for e in quantiles), histogram
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    provisioned = {d["uid"] for d in _load_yaml(DATASOURCES)["datasources"]}
    assert uids <= provisioned
