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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

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


class Latencies:
    """Every latency histogram of one process, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        reg = self.registry
        self._intake = Histogram("smpp_bridge_intake_to_submit_seconds",
                                 "API acceptance until the accepted submit_sm was sent",
                                 ["carrier"], buckets=INTAKE_BUCKETS, registry=reg)
        self._response = Histogram("smpp_bridge_submit_response_seconds",
                                   "submit_sm until its submit_sm_resp, per bind",
                                   ["carrier", "bind_id"], buckets=RESPONSE_BUCKETS, registry=reg)
        self._receipt = Histogram("smpp_bridge_submit_to_receipt_seconds",
                                  "submit_sm_resp until the final delivery receipt",
                                  ["carrier"], buckets=RECEIPT_BUCKETS, registry=reg)
        self._push = Histogram("smpp_bridge_push_ack_seconds",
                               "Push queued until the receiver acknowledged it",
                               ["kind"], buckets=PUSH_BUCKETS, registry=reg)
        self._submitted: dict[int, tuple[str, float]] = {}
        # Each labelled child, once: prometheus_client's labels() takes a lock and
        # checks the label values on every call, several times per message.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, histogram: Histogram, *labels: str) -> Any:
        key = (histogram, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = histogram.labels(*labels)
        return child

    def submit_answers(self, carrier: str, bind_id: str, answers: Iterable[Any], now: float) -> None:
        """A batch of submit_sm answers (``SubmitAnswer``) on one bind."""
        response = self._child(self._response, carrier, bind_id)
        intake = self._child(self._intake, carrier)
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
            self._child(self._receipt, known[0]).observe(max(0.0, now - known[1]))

    def push_acked(self, kind: str, queued_at: float, now: float) -> None:
        self._child(self._push, kind).observe(max(0.0, now - queued_at))


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
