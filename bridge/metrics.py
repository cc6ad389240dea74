"""Prometheus metrics, read from the components at scrape time.

The components keep plain integer counters and this collector turns them into metric
families when ``/metrics`` is read; the latency histograms (:mod:`bridge.latency`) are
the only prometheus objects observed on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from bridge.latency import LATENCY, Latencies

__all__ = ["MetricsSources", "StoreWork", "render_metrics"]


@dataclass(frozen=True, slots=True)
class StoreWork:
    """What the store has done so far: group commits, seconds in them, SQL statements."""

    commits: int
    commit_seconds: float
    statements: int


@dataclass
class MetricsSources:
    accepted: Callable[[], int]
    submitted: Callable[[], int]
    submit_failed: Callable[[], int]
    finalised: Callable[[], dict[str, int]]
    receipts: Callable[[], dict[str, int]]
    mo: Callable[[], int]
    pushes: Callable[[], dict[str, int]]
    binds: Callable[[], list[Any]]
    store_work: Callable[[], StoreWork]
    backlog: Callable[[], dict[str, int]]


class _Collector:
    def __init__(self, src: MetricsSources) -> None:
        self._src = src

    def collect(self) -> Iterator[Any]:
        s = self._src
        yield CounterMetricFamily("smpp_bridge_messages_accepted", "Recipient messages accepted", value=s.accepted())
        yield CounterMetricFamily("smpp_bridge_segments_submitted", "Segments accepted by an SMSC", value=s.submitted())
        yield CounterMetricFamily("smpp_bridge_segments_failed", "Segments refused for good", value=s.submit_failed())
        fin = CounterMetricFamily("smpp_bridge_messages_final", "Messages finalised by status", labels=["status"])
        for status, n in sorted(s.finalised().items()):
            fin.add_metric([status], n)
        yield fin
        rc = CounterMetricFamily("smpp_bridge_receipts", "Receipts by matching outcome", labels=["outcome"])
        for outcome, n in sorted(s.receipts().items()):
            rc.add_metric([outcome], n)
        yield rc
        yield CounterMetricFamily("smpp_bridge_mo", "MO deliver_sm received", value=s.mo())
        pu = GaugeMetricFamily("smpp_bridge_outbox", "Outbox rows waiting (pending) or given up (dead), by kind", labels=["kind", "state"])
        for key, n in sorted(s.pushes().items()):
            kind, _, state = key.partition(":")
            pu.add_metric([kind, state], n)
        yield pu
        work = s.store_work()
        yield CounterMetricFamily("smpp_bridge_store_commits", "Group commits", value=work.commits)
        yield CounterMetricFamily("smpp_bridge_store_commit_seconds", "Time spent committing",
                                  value=work.commit_seconds)
        yield CounterMetricFamily("smpp_bridge_store_statements", "SQL statements executed", value=work.statements)
        bl = GaugeMetricFamily("smpp_bridge_backlog", "Segments by state", labels=["state"])
        for state, n in sorted(s.backlog().items()):
            bl.add_metric([state], n)
        yield bl
        labels = ["carrier", "bind_id", "bind_type"]
        up = GaugeMetricFamily("smpp_bridge_bind_up", "1 when the bind is bound", labels=labels)
        inflight = GaugeMetricFamily("smpp_bridge_bind_in_flight", "Submits awaiting a response", labels=labels)
        sub = CounterMetricFamily("smpp_bridge_bind_submitted", "Submits accepted on this bind", labels=labels)
        thr = CounterMetricFamily("smpp_bridge_bind_throttled", "Throttling answers", labels=labels)
        err = CounterMetricFamily("smpp_bridge_bind_errors", "Errors on this bind", labels=labels)
        rec = CounterMetricFamily("smpp_bridge_bind_reconnects", "Reconnects of this bind", labels=labels)
        for b in s.binds():
            key = [b.carrier, b.bind_id, b.bind_type]
            up.add_metric(key, 1 if b.state.lower().startswith("bound") else 0)
            inflight.add_metric(key, b.in_flight)
            sub.add_metric(key, b.submitted)
            thr.add_metric(key, b.throttled)
            err.add_metric(key, b.errors)
            rec.add_metric(key, b.reconnects)
        yield from (up, inflight, sub, thr, err, rec)
        yield from _per_carrier(s.binds())


def _per_carrier(binds: list[Any]) -> Iterator[Any]:
    """Throttling answers and errors summed over each carrier's binds."""
    throttled: dict[str, int] = {}
    errors: dict[str, int] = {}
    for b in binds:
        throttled[b.carrier] = throttled.get(b.carrier, 0) + b.throttled
        errors[b.carrier] = errors.get(b.carrier, 0) + b.errors
    thr = CounterMetricFamily("smpp_bridge_carrier_throttled", "Throttling answers per carrier", labels=["carrier"])
    err = CounterMetricFamily("smpp_bridge_carrier_errors", "Bind errors per carrier", labels=["carrier"])
    for carrier in sorted(throttled):
        thr.add_metric([carrier], throttled[carrier])
        err.add_metric([carrier], errors[carrier])
    yield from (thr, err)


def render_metrics(src: MetricsSources, latencies: Latencies = LATENCY) -> Callable[[], bytes]:
    """The scrape-time counters followed by the latency histograms."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(src))
    return lambda: generate_latest(registry) + generate_latest(latencies.registry)
