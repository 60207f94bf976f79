"""Where the deploy checks find helm, promtool, docker-compose and prometheus.

`make deploy-tools` builds helm and promtool from the Go module proxy into
~/.cache/loopwise/bin (LOOPWISE_TOOLS_BIN). `make test` sets LOOPWISE_DEPLOY_TOOLS=required,
so there a missing tool fails the test; elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "loopwise"
ALERTS = CHART / "files" / "prometheus" / "loopwise-alerts.yaml"
DASHBOARD = CHART / "files" / "grafana" / "loopwise-dashboard.json"
TOOLS_BIN = Path(os.environ.get("LOOPWISE_TOOLS_BIN", Path.home() / ".cache/loopwise/bin"))
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.25.0", "1.33.0")


def required() -> bool:
    return os.environ.get("LOOPWISE_DEPLOY_TOOLS", "") == "required"


def tool(name: str, *, how: str) -> str:
    """Path of a tool: $LOOPWISE_TOOLS_BIN first (pinned builds), then PATH."""
    cached = TOOLS_BIN / name
    found = str(cached) if cached.is_file() and os.access(cached, os.X_OK) else shutil.which(name)
    if found is None:
        message = f"{name} not found in {TOOLS_BIN} or on PATH ({how})"
        if required():
            pytest.fail(message)
        pytest.skip(message)
    return found


def helm() -> str:
    return tool("helm", how="make deploy-tools")


def promtool() -> str:
    return tool("promtool", how="make deploy-tools")


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command in the repository root; on failure show its output."""
    result = subprocess.run(
        list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result
