"""Latency histograms of the pipeline's stages, observed where each stage ends.

The components call one method per event; this module owns the prometheus objects.
Global state, like prometheus_client's own default registry: one set per process,
:data:`LATENCY`, rendered by :mod:`bridge.metrics` next to the scrape-time counters.

- ``intake_to_submit``: accepted by the API (the time in the ``smsMsgId``) until the
  submit_sm that the SMSC accepted went out; includes time held by sending hours.
- ``submit_response``: submit_sm until its submit_sm_resp (or generic_nack), per bind.
- ``submit_to_receipt``: submit_sm_resp stored until the final receipt was applied.
  Submit times are remembered in memory (bounded), so segments submitted before a
  restart, or by another cluster node, are not observed.
- ``push_ack``: a status report or uplink queued until the receiver acknowledged it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

__all__ = ["LATENCY", "HistogramSnapshot", "Latencies", "accepted_at", "snapshot"]

INTAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 43200)
RESPONSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RECEIPT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400, 259200)
PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)
SUBMITTED_MEMORY = 200_000   # segments awaiting a receipt whose submit time is remembered


def accepted_at(message_id: str) -> float:
    """The acceptance time a ``smsMsgId`` carries (its first 11 hex digits are epoch ms)."""
    try:
        return int(message_id[:11], 16) / 1000
    except ValueError:
        return 0.0


class _Series:
    """One label set's counts: per bucket (the last is +Inf), their sum and total."""

    __slots__ = ("bounds", "counts", "total_s")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total_s = 0.0

    def observe(self, amount: float) -> None:
        # A bucket counts amounts up to and including its bound, as in Prometheus.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total_s += amount


class _Histogram:
    """A latency histogram by label values, exposed to a registry as a collector.

    prometheus_client's Histogram takes a lock twice and scans its buckets in Python on
    every observation (four per message); these are observed on the reactor thread only
    and scraped there too, so a list of counts and a bisect do.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._series: dict[tuple[str, ...], _Series] = {}

    def labels(self, *values: str) -> _Series:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = _Series(self.bounds)
        return series

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for values, series in self._series.items():
            family.add_metric(list(values), list(zip(les, accumulate(series.counts), strict=True)),
                              series.total_s)
        yield family


class Latencies:
    """Every latency histogram of one process, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._intake = _Histogram("smpp_bridge_intake_to_submit_seconds",
                                  "API acceptance until the accepted submit_sm was sent",
                                  ["carrier"], INTAKE_BUCKETS)
        self._response = _Histogram("smpp_bridge_submit_response_seconds",
                                    "submit_sm until its submit_sm_resp, per bind",
                                    ["carrier", "bind_id"], RESPONSE_BUCKETS)
        self._receipt = _Histogram("smpp_bridge_submit_to_receipt_seconds",
                                   "submit_sm_resp until the final delivery receipt",
                                   ["carrier"], RECEIPT_BUCKETS)
        self._push = _Histogram("smpp_bridge_push_ack_seconds",
                                "Push queued until the receiver acknowledged it",
                                ["kind"], PUSH_BUCKETS)
        for histogram in (self._intake, self._response, self._receipt, self._push):
            self.registry.register(histogram)
        self._submitted: dict[int, tuple[str, float]] = {}

    def submit_answers(self, carrier: str, bind_id: str, answers: Iterable[Any], now: float) -> None:
        """A batch of submit_sm answers (``SubmitAnswer``) on one bind."""
        response = self._response.labels(carrier, bind_id)
        intake = self._intake.labels(carrier)
        for answer in answers:
            response.observe(max(0.0, now - answer.sent_at))
            accepted = getattr(answer.entry.segment, "accepted_at", 0.0)
            if answer.status == 0 and not answer.nacked and accepted > 0:
                intake.observe(max(0.0, answer.sent_at - accepted))

    def submitted(self, carrier: str, segment_id: int, now: float) -> None:
        """A segment the SMSC accepted: remember when, for its receipt."""
        memory = self._submitted
        if len(memory) >= SUBMITTED_MEMORY:
            del memory[next(iter(memory))]
        memory[segment_id] = (carrier, now)

    def receipt(self, segment_id: int, now: float) -> None:
        """The final receipt of a segment was applied."""
        known = self._submitted.pop(segment_id, None)
        if known is not None:
            self._receipt.labels(known[0]).observe(max(0.0, now - known[1]))

    def push_acked(self, kind: str, queued_at: float, now: float) -> None:
        self._push.labels(kind).observe(max(0.0, now - queued_at))


LATENCY = Latencies()


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """One histogram summed over its labels: cumulative counts per upper bound ``le``."""

    le: tuple[float, ...]
    cumulative: tuple[float, ...]
    total_s: float
    count: float


def snapshot(latencies: Latencies = LATENCY) -> dict[str, HistogramSnapshot]:
    """Every histogram of ``latencies`` by name, labels summed (for the console's charts)."""
    out: dict[str, HistogramSnapshot] = {}
    for family in latencies.registry.collect():
        buckets: dict[float, float] = {}
        total = count = 0.0
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
        bounds = tuple(sorted(b for b in buckets if b != float("inf")))
        out[family.name] = HistogramSnapshot(bounds, tuple(buckets[b] for b in bounds), total, count)
    return out
