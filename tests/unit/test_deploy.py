"""The deployment files: Grafana dashboard against a real daemon's /metrics, the Prometheus
scrape example, the systemd unit and the real-SMSC example config (through the real CLI)."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import load_config
from tests.e2e.conftest import _e2e_backend, _make_bridge, _receiver  # noqa: F401 (fixtures)
from tests.e2e.harness import Bridge, Receiver, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "smpp-bridge-dashboard.json"
EXAMPLE = ROOT / "config" / "example-real-smsc.toml"
UNIT = ROOT / "deploy" / "systemd" / "smpp-bridge.service"
EXAMPLE_ENV = {
    "SMPP_BRIDGE_OPERATOR_TOKEN": "op-secret", "SMPP_BRIDGE_CMCC_PASSWORD": "cmcc-pw",
    "SMPP_BRIDGE_CUCC_PASSWORD": "cucc-pw", "SMPP_BRIDGE_SHOP_TOKEN": "shop-secret",
}
TARGET_LABELS = {"instance", "job"}   # added by Prometheus at scrape time
METRIC_RE = re.compile(r"\bsmpp_bridge_[a-z0-9_]+\b")


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def _labels_used(expr: str) -> set[str]:
    used = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used |= {name.strip() for name in group.split(",") if name.strip()}
    for selector in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", selector))
    used |= set(re.findall(r"label_values\([^,]+,\s*(\w+)\)", expr))
    return used


class TestDashboard:
    def test_every_query_uses_metrics_and_labels_the_daemon_exposes(
            self, make_bridge: Callable[..., Bridge], receiver: Receiver) -> None:
        """Scrape a real daemon that sent a message: every metric and label of the dashboard exists."""
        bridge = make_bridge()
        mid = bridge.send(["+8613812348001"])["result"][0]["smsMsgId"]
        wait_for(lambda: receiver.reports_for(mid), what="the report")

        def scraped_after_ack() -> str | None:
            # The receiver has the report before the bridge has read its answer: scrape
            # until the bridge has recorded the acknowledgement too.
            status, text = bridge.request("GET", f"{bridge.api}/metrics", token=None)
            assert status == 200
            acked = sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                        if s.name == "smpp_bridge_push_ack_seconds_count")
            return text if acked >= 1 else None
        text = wait_for(scraped_after_ack, what="the push's acknowledgement in /metrics")
        labels: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
        queries = dashboard_queries()
        assert len(queries) >= 20
        for expr in queries:
            names = set(METRIC_RE.findall(expr))
            assert names, f"query uses no smpp-bridge metric: {expr}"
            missing = names - set(labels)
            assert not missing, f"not exposed by the daemon: {sorted(missing)} in {expr}"
            known = set().union(*(labels[n] for n in names)) | TARGET_LABELS
            assert _labels_used(expr) <= known, f"unknown labels {_labels_used(expr) - known} in {expr}"
        used = {n for q in queries for n in METRIC_RE.findall(q)}
        for histogram in ("intake_to_submit", "submit_response", "submit_to_receipt", "push_ack"):
            name = f"smpp_bridge_{histogram}_seconds_count"
            assert f"smpp_bridge_{histogram}_seconds_bucket" in used
            observed = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
            assert sum(observed) >= 1, f"{name}: nothing observed after a delivered message"

    def test_panels_have_unique_ids_and_a_datasource_variable(self) -> None:
        dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids))
        assert any(v["type"] == "datasource" and v["name"] == "datasource" for v in dash["templating"]["list"])


class TestPrometheusExample:
    def test_scrapes_the_metrics_path_of_the_default_api_port(self) -> None:
        text = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
        assert "metrics_path: /metrics" in text
        assert '"127.0.0.1:8470"' in text


class TestSystemdUnit:
    def test_restart_graceful_stop_and_dedicated_user(self) -> None:
        """Restarts on failure, stops with SIGTERM within a bound, runs as its own user."""
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read_string(UNIT.read_text(encoding="utf-8"))
        svc = unit["Service"]
        assert svc["Restart"] == "on-failure"
        assert svc["KillSignal"] == "SIGTERM"
        assert 10 <= int(svc["TimeoutStopSec"]) <= 120
        assert svc["User"] == "smpp-bridge"
        assert " run --config /etc/smpp-bridge/bridge.toml" in svc["ExecStart"]
        assert unit["Install"]["WantedBy"] == "multi-user.target"


def _check_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMPP_BRIDGE_")}
    return subprocess.run([sys.executable, "-m", "bridge.cli", "check-config", "--config", str(EXAMPLE)],
                          capture_output=True, text=True, env={**clean, **env}, cwd=ROOT, timeout=60)


class TestExampleRealSmscConfig:
    def test_check_config_passes_with_the_secrets_in_the_environment(self) -> None:
        """`smpp-bridge check-config` accepts the example once its environment variables are set."""
        done = _check_config(EXAMPLE_ENV)
        assert done.returncode == 0, done.stderr
        assert "ok (2 carriers, 1 apps" in done.stdout

    def test_without_the_environment_it_names_the_missing_variable(self) -> None:
        done = _check_config({})
        assert done.returncode == 2
        assert "SMPP_BRIDGE_OPERATOR_TOKEN is not set" in done.stderr

    def test_it_describes_a_real_deployment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Simulator off, TLS to one carrier, transmitter+receiver pairs to another, secrets from env, JSON logs."""
        for name, value in EXAMPLE_ENV.items():
            monkeypatch.setenv(name, value)
        cfg = load_config(EXAMPLE)
        assert cfg.simulator.embedded is False
        assert cfg.logging.format == "json"
        assert cfg.api.operator_token == "op-secret"
        assert cfg.carriers["cmcc"].tls and cfg.carriers["cmcc"].password == "cmcc-pw"
        cucc = {b.type: b.count for b in cfg.carriers["cucc"].binds}
        assert cucc == {"transmitter": 2, "receiver": 2}
        assert cfg.apps["shop"].token == "shop-secret"
        text = EXAMPLE.read_text(encoding="utf-8")
        assert "postgresql://" in text and "password =" not in text and 'token = "' not in text
