"""``tools/bench.py --plot``: latency quantiles from the bridge's histograms, and the PNG."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tools.benchplot import interval_quantile, latency_fields, parse_histograms, write_plot

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _exposition(observations: list[tuple[str, float]]) -> str:
    registry = CollectorRegistry()
    h = Histogram("smpp_bridge_submit_response_seconds", "x", ["bind_id"], buckets=(0.01, 0.1, 1.0),
                  registry=registry)
    for bind_id, value in observations:
        h.labels(bind_id).observe(value)
    return generate_latest(registry).decode()


class TestQuantiles:
    def test_histograms_are_summed_over_labels(self) -> None:
        b = parse_histograms(_exposition([("a", 0.005), ("b", 0.05), ("b", 5.0)]))
        h = b["smpp_bridge_submit_response_seconds"]
        assert h.le == (0.01, 0.1, 1.0) and h.cumulative == (1, 2, 2) and h.count == 3

    def test_quantile_of_the_interval_only(self) -> None:
        """Observations before the previous snapshot do not count; within a bucket it interpolates."""
        prev = parse_histograms(_exposition([("a", 0.005)] * 100))["smpp_bridge_submit_response_seconds"]
        cur = parse_histograms(_exposition([("a", 0.005)] * 100 + [("a", 0.5)] * 10))[
            "smpp_bridge_submit_response_seconds"]
        assert interval_quantile(prev, cur, 0.5) == pytest.approx(0.1 + 0.9 * 0.5)
        assert interval_quantile(cur, cur, 0.5) is None          # nothing new
        assert interval_quantile(None, cur, 0.5) == pytest.approx(0.01 * 55 / 100)

    def test_timeline_fields(self) -> None:
        cur = parse_histograms(_exposition([("a", 0.05)]))
        row = latency_fields({}, cur)
        assert row["intake_p50_ms"] is None
        assert 10 <= row["resp_p95_ms"] <= 100


class TestPlot:
    def test_writes_a_png_from_a_timeline(self, tmp_path: Path) -> None:
        rows = [{"t": i * 0.5, "accepted": 100 * i, "submitted": 90 * i, "reports": 80 * i,
                 "intake_p50_ms": None if i == 0 else 5.0 + i, "intake_p95_ms": math.nan,
                 "resp_p50_ms": 2.0, "resp_p95_ms": 4.0} for i in range(20)]
        out = tmp_path / "t.png"
        write_plot(rows, out, "test")
        assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000


@pytest.mark.timeout(300)
def test_tiny_bench_with_plot(tmp_path: Path) -> None:
    """A small real run writes the PNG, and its timeline carries the bridge's latency quantiles."""
    out, results = tmp_path / "bench.png", tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench.py"), "--tiny", "--plot", str(out),
                           "--json-out", str(results)], cwd=tmp_path, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes()[:8] == PNG_MAGIC
    timeline = json.loads(results.read_text())["timeline"]
    assert any(row.get("resp_p50_ms") for row in timeline)
    assert any(row.get("intake_p95_ms") for row in timeline)


def test_plot_is_refused_in_memory_mode(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench.py"), "--mode", "memory", "--plot", "x.png"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--plot" in proc.stderr
