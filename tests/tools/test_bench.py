"""The benchmark runs end to end in tiny mode; its figures are printed, never asserted.

The machine running the suite is shared and small, so only completeness is checked:
the run ends by itself, every message got its status report, the JSON has its keys.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pgserver import PgServer
from tools import bench

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tools" / "bench.py"


def _run(tmp_path: Path, *extra: str) -> dict[str, object]:
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--json-out", str(out), *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    print(proc.stdout)           # the figures, for whoever runs pytest -s
    print(proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert not Path(results["workdir"]).exists()      # the temporary store is gone
    return results


@pytest.mark.timeout(300)
def test_tiny_throughput_run_completes_with_every_report(tmp_path: Path) -> None:
    results = _run(tmp_path)
    assert results["complete"] is True
    tp = results["throughput"]
    assert tp["messages"] == 500
    assert tp["reports_acked"] == 500 and tp["reports_missing"] == 0
    assert tp["request_errors"] == 0
    assert tp["segments_submitted"] > tp["messages"]      # some are multi-segment
    assert set(tp) >= {"intake_rate", "submit_rate", "end_to_end_rate", "statuses"}
    assert set(results["latency"]) >= {"p50_ms", "p99_ms", "offered_rate", "matched"}
    assert results["latency"]["matched"] == 100
    assert set(results["cpu"]) >= {"bridge_s", "bridge_s_per_message", "simulator_s", "load_generator_s"}
    assert set(results["codec_ceiling"]) >= {"rate", "window", "messages"}
    assert results["codec_ceiling"]["accepted"] == results["codec_ceiling"]["messages"] > 0
    assert results["bridge_peak_rss_mb"] > 0
    assert results["exit_codes"] == {"bridge": 0, "sim": 0, "receiver": 0}


@pytest.mark.timeout(300)
def test_tiny_memory_run_queues_behind_a_refusing_carrier(tmp_path: Path) -> None:
    results = _run(tmp_path, "--mode", "memory")
    mem = results["memory"]
    assert results["complete"] is True
    assert mem["queued"] == 2000
    assert mem["submitted_to_stopped_carrier"] == 0
    assert sum(mem["backlog"].values()) == 2000               # every segment is in the store
    assert mem["peak_rss_mb"] > 0 and mem["samples"]


def test_module_entry_point_prints_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "tools.bench", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "--messages" in proc.stdout and "--mode" in proc.stdout


def test_numbers_are_distinct_and_avoid_the_simulators_failing_suffixes() -> None:
    pool = bench.NumberPool()
    numbers = [pool.take("cmcc") for _ in range(12_000)]
    assert len(set(numbers)) == len(numbers)
    assert not [n for n in numbers if n[-4:] in bench.AVOID_SUFFIXES]
    assert all(len(n) == len("+8613800000001") for n in numbers)


def test_mixed_workload_has_batches_of_1_to_100_and_the_exact_message_count() -> None:
    requests = bench.mixed_workload(5_000, bench.NumberPool(), random.Random(1), "http://127.0.0.1:1/r", 0.2)
    sizes = [len(r.numbers) for r in requests]
    assert sum(sizes) == 5_000 and max(sizes) <= 100 and min(sizes) >= 1
    long_share = sum(s for r, s in zip(requests, sizes, strict=True) if r.long) / 5_000
    assert 0.1 < long_share < 0.3


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 0.5) == 50.0
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile([3.0], 0.99) == 3.0


@pytest.mark.timeout(300)
def test_tiny_retention_run_prunes_the_old_records(tmp_path: Path) -> None:
    results = _run(tmp_path, "--mode", "retention")
    assert results["complete"] is True
    assert results["prunable"] == 500
    assert results["latency"]["matched"] == 100
    assert results["all_pruned_after_s"] > 0                  # waited for the pruner to finish them


@pytest.mark.timeout(300)
def test_tiny_run_with_two_workers_on_postgresql(tmp_path: Path, pg_server: PgServer) -> None:
    """A cluster of two workers behind one port: every report arrives; CPU counts both workers."""
    results = _run(tmp_path, "--workers", "2", "--store-url", pg_server.new_database(), "--concurrency", "8")
    assert results["complete"] is True
    assert results["throughput"]["reports_missing"] == 0
    assert results["cpu"]["machine_busy_pct"] > 0 and results["cpu"]["database_s"] >= 0
