"""Latency histograms and per-carrier counters in the Prometheus exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from bridge.ids import new_message_id
from bridge.latency import SUBMITTED_MEMORY, Latencies, accepted_at, snapshot
from bridge.metrics import MetricsSources, StoreWork, render_metrics
from bridge.smpp.queue import QueueEntry
from bridge.smpp.session import SubmitAnswer
from bridge.smpp.types import BindStatus, OutboundSegment


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text.decode()) for s in fam.samples}


def _answer(status: int, sent_at: float, accepted: float, nacked: bool = False) -> SubmitAnswer:
    seg = OutboundSegment(1, "cmcc", "1069", "+8613800138000", b"x", 0, 0, accepted_at=accepted)
    return SubmitAnswer(QueueEntry(1, seg), status, "abc" if status == 0 else None, nacked, sent_at)


def _bind(carrier: str, bind_id: str, throttled: int, errors: int) -> BindStatus:
    return BindStatus(bind_id, carrier, "transceiver", "BOUND_TRX", 0.0, 10, 0, 0, 0, 5, throttled, errors,
                      None, 0, 0, None)


def _sources(binds: list[BindStatus]) -> MetricsSources:
    return MetricsSources(
        accepted=lambda: 3, submitted=lambda: 3, submit_failed=lambda: 0, finalised=dict, receipts=dict,
        mo=lambda: 0, pushes=dict, binds=lambda: binds, store_work=lambda: StoreWork(1, 0.01, 7), backlog=dict)


class TestLatencies:
    def test_submit_answers_observe_response_per_bind_and_intake_for_accepted(self) -> None:
        """Every answer times the response on its bind; only accepted submits time intake->submit."""
        lat = Latencies()
        lat.submit_answers("cmcc", "cmcc-1", [_answer(0, 100.0, 99.0), _answer(0x58, 100.0, 99.0),
                                              _answer(0, 100.2, 0.0)], now=100.5)
        s = _samples(render_metrics(_sources([]), lat)())
        resp = ("smpp_bridge_submit_response_seconds_count", (("bind_id", "cmcc-1"), ("carrier", "cmcc")))
        assert s[resp] == 3
        intake = ("smpp_bridge_intake_to_submit_seconds_count", (("carrier", "cmcc"),))
        assert s[intake] == 1
        assert s[("smpp_bridge_intake_to_submit_seconds_sum", (("carrier", "cmcc"),))] == 1.0
        le = ("smpp_bridge_submit_response_seconds_bucket", (("bind_id", "cmcc-1"), ("carrier", "cmcc"), ("le", "0.25")))
        assert s[le] == 0 and s[(le[0], le[1][:2] + (("le", "0.5"),))] == 3

    def test_receipt_is_timed_from_the_remembered_submit(self) -> None:
        """submit->receipt uses the submit time kept in memory; an unknown segment is not observed."""
        lat = Latencies()
        lat.submitted("ctcc", 7, 10.0)
        lat.receipt(7, 14.0)
        lat.receipt(7, 20.0)       # a duplicate receipt: already forgotten
        lat.receipt(8, 20.0)       # submitted before a restart
        snap = snapshot(lat)["smpp_bridge_submit_to_receipt_seconds"]
        assert snap.count == 1 and snap.total_s == 4.0

    def test_submit_memory_is_bounded(self) -> None:
        """The oldest remembered submit is dropped first once the bound is reached."""
        lat = Latencies()
        for i in range(SUBMITTED_MEMORY + 1):
            lat.submitted("cmcc", i, 1.0)
        lat.receipt(0, 2.0)
        lat.receipt(SUBMITTED_MEMORY, 3.0)
        assert snapshot(lat)["smpp_bridge_submit_to_receipt_seconds"].total_s == 2.0

    def test_push_ack_by_kind(self) -> None:
        lat = Latencies()
        lat.push_acked("report", 5.0, 5.25)
        lat.push_acked("uplink", 5.0, 7.0)
        s = _samples(render_metrics(_sources([]), lat)())
        assert s[("smpp_bridge_push_ack_seconds_sum", (("kind", "report"),))] == 0.25
        assert s[("smpp_bridge_push_ack_seconds_count", (("kind", "uplink"),))] == 1

    def test_buckets_are_cumulative_and_include_their_bound(self) -> None:
        """An amount equal to a bound counts in that bucket; one past every bound only in +Inf."""
        lat = Latencies()
        for queued_at, now in ((0.0, 0.005), (0.0, 0.0051), (0.0, 1e9)):
            lat.push_acked("report", queued_at, now)
        s = _samples(render_metrics(_sources([]), lat)())

        def le(bound: str) -> float:
            return s[("smpp_bridge_push_ack_seconds_bucket", (("kind", "report"), ("le", bound)))]
        assert (le("0.005"), le("0.01"), le("86400.0"), le("+Inf")) == (1, 2, 2, 3)
        assert s[("smpp_bridge_push_ack_seconds_count", (("kind", "report"),))] == 3

    def test_accepted_at_reads_the_message_id(self) -> None:
        """A smsMsgId carries its acceptance time to the millisecond."""
        assert abs(accepted_at(new_message_id(1764000000.123)) - 1764000000.123) < 0.001
        assert accepted_at("not-an-id") == 0.0


class TestPerCarrier:
    def test_throttling_and_errors_are_summed_per_carrier(self) -> None:
        """Counters of a carrier's binds add up; each carrier has its own series."""
        binds = [_bind("cmcc", "cmcc-1", 2, 1), _bind("cmcc", "cmcc-2", 3, 0), _bind("cbn", "cbn-1", 0, 4)]
        s = _samples(render_metrics(_sources(binds), Latencies())())
        assert s[("smpp_bridge_carrier_throttled_total", (("carrier", "cmcc"),))] == 5
        assert s[("smpp_bridge_carrier_errors_total", (("carrier", "cmcc"),))] == 1
        assert s[("smpp_bridge_carrier_errors_total", (("carrier", "cbn"),))] == 4
        assert s[("smpp_bridge_carrier_throttled_total", (("carrier", "cbn"),))] == 0


def test_store_work_is_exported() -> None:
    s = _samples(render_metrics(_sources([]), Latencies())())
    assert s[("smpp_bridge_store_commits_total", ())] == 1
    assert s[("smpp_bridge_store_statements_total", ())] == 7
