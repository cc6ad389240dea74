"""``tools/bench.py --plot``: throughput and latency over a benchmark run, as a PNG.

Latency over time comes from the bridge's own histograms in ``/metrics``
(``smpp_bridge_intake_to_submit_seconds``, ``smpp_bridge_submit_response_seconds``): each
timeline sample keeps the quantiles of what was observed since the previous sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Buckets", "interval_quantile", "latency_fields", "parse_histograms", "write_plot"]

HISTOGRAMS = {"intake": "smpp_bridge_intake_to_submit_seconds", "resp": "smpp_bridge_submit_response_seconds"}


@dataclass(frozen=True, slots=True)
class Buckets:
    """One histogram summed over its labels: cumulative counts per finite upper bound."""

    le: tuple[float, ...]
    cumulative: tuple[float, ...]
    count: float


def parse_histograms(metrics_text: str) -> dict[str, Buckets]:
    """The histograms of a Prometheus text exposition, by family name."""
    out: dict[str, Buckets] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.type != "histogram":
            continue
        per_le: dict[float, float] = {}
        count = 0.0
        for s in family.samples:
            if s.name.endswith("_bucket") and s.labels["le"] != "+Inf":
                le = float(s.labels["le"])
                per_le[le] = per_le.get(le, 0.0) + s.value
            elif s.name.endswith("_count"):
                count += s.value
        bounds = tuple(sorted(per_le))
        out[family.name] = Buckets(bounds, tuple(per_le[b] for b in bounds), count)
    return out


def interval_quantile(prev: Buckets | None, cur: Buckets | None, q: float) -> float | None:
    """Quantile ``q`` of the observations between two snapshots (linear within a bucket)."""
    if cur is None:
        return None
    before = dict(zip(prev.le, prev.cumulative, strict=True)) if prev else {}
    total = cur.count - (prev.count if prev else 0.0)
    if total <= 0:
        return None
    want, below, lower = q * total, 0.0, 0.0
    for le, cum in zip(cur.le, cur.cumulative, strict=True):
        n = cum - before.get(le, 0.0)
        if n >= want:
            return lower + (le - lower) * (want - below) / max(n - below, 1e-12)
        below, lower = n, le
    return cur.le[-1] if cur.le else None


def latency_fields(prev: dict[str, Buckets], cur: dict[str, Buckets]) -> dict[str, float | None]:
    """Timeline columns: p50/p95 in ms of each histogram over the last interval (None if none)."""
    row: dict[str, float | None] = {}
    for short, name in HISTOGRAMS.items():
        for q in (0.5, 0.95):
            v = interval_quantile(prev.get(name), cur.get(name), q)
            row[f"{short}_p{round(q * 100)}_ms"] = round(1000 * v, 3) if v is not None else None
    return row


def write_plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Two panels sharing the time axis: rates from counter deltas, latency quantiles (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5), constrained_layout=True)
    for key, label, color in (("accepted", "accepted msg/s", "#1f5fa8"), ("submitted", "submitted seg/s", "#1f8a4c"),
                              ("reports", "reports acked/s", "#8e44ad")):
        top.plot(t[1:], _rates(t, [r[key] for r in rows]), label=label, color=color, linewidth=1.4)
    top.set_ylabel("per second")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="upper right")
    for key, label, color, style in (("intake_p50_ms", "intake→submit_sm p50", "#1f5fa8", "-"),
                                     ("intake_p95_ms", "intake→submit_sm p95", "#1f5fa8", "--"),
                                     ("resp_p50_ms", "submit_sm→resp p50", "#b7791f", "-"),
                                     ("resp_p95_ms", "submit_sm→resp p95", "#b7791f", "--")):
        values = [math.nan if r.get(key) is None else r[key] for r in rows]
        bottom.plot(t, values, style, label=label, color=color, linewidth=1.2)
    bottom.set_yscale("log")
    bottom.set_ylabel("latency, ms (log)")
    bottom.set_xlabel("seconds since the throughput phase started")
    bottom.grid(alpha=0.3, which="both")
    bottom.legend(loc="upper right")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rates(t: Sequence[float], values: Sequence[float]) -> list[float]:
    return [max(0.0, (values[i] - values[i - 1]) / max(t[i] - t[i - 1], 1e-6)) for i in range(1, len(t))]
