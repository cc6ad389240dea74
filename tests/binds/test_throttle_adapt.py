"""Adapting a bind's rate to an SMSC's TPS limit (AIMD).

Deterministic tests first: the controller alone, then a bind on a Clock against a fake
SMSC that throttles with the simulator's own token bucket (``carriers.sim.limits``),
so "15 TPS" means exactly what it means against ``smsc-sim``. Then the real simulator
over loopback, measuring the accepted rate and the order of every message's parts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from smpplib import consts

from bridge.smpp.adaptive import AdaptiveRate
from bridge.smpp.queue import SegmentQueue
from bridge.smpp.ratelimit import TokenBucket
from bridge.smpp.types import OutboundSegment
from carriers.sim.limits import TokenBucket as SmscBucket
from tests.binds.fakes import Harness, bind_config, segments
from tests.binds.simharness import LinkRun, mainland, spin_for
from tests.sim.simproc import SimProcess

SMSC_TPS = 15


class TestAdaptiveRate:
    def test_decrease_once_per_round(self) -> None:
        """Throttles of segments already on the wire at the last decrease do not decrease again."""
        rate = AdaptiveRate(100.0, floor=1.0)
        rate.accepted(100, 0.5)
        assert rate.throttled(sent_at=1.0, now=1.1)
        assert rate.rate == pytest.approx(70.0)
        assert not rate.throttled(sent_at=1.05, now=1.12)  # sent before the decrease at 1.1
        assert rate.throttled(sent_at=1.2, now=1.3)
        assert rate.rate == pytest.approx(49.0)

    def test_decrease_to_what_was_accepted(self) -> None:
        """Configured at 800/s against an SMSC that took 15 in the last second: one round lands at 15."""
        rate = AdaptiveRate(800.0, floor=1.0)
        for i in range(15):
            rate.accepted(1, 10.0 + i / 15)
        assert rate.throttled(sent_at=10.95, now=10.99)
        assert rate.rate == pytest.approx(15.0)

    def test_additive_increase_bounded_by_ceiling(self) -> None:
        """A second of acceptances raises the rate by about 10 % of the last peak, never past the ceiling."""
        rate = AdaptiveRate(20.0, floor=1.0)
        rate.accepted(20, -0.5)
        rate.throttled(sent_at=0.0, now=0.0)
        assert rate.rate == pytest.approx(14.0)
        for i in range(14):
            rate.accepted(1, 1.0 + i / 14)
        assert rate.rate == pytest.approx(16.0, abs=0.2)  # about +0.1 * 20 over one second of acceptances
        for i in range(200):
            rate.accepted(1, 3.0 + i / 16)
        assert rate.rate == 20.0

    def test_floor(self) -> None:
        """The rate never drops below the floor; at the floor a throttle reports no decrease."""
        rate = AdaptiveRate(4.0, floor=1.0)
        t = 0.0
        while rate.throttled(sent_at=t, now=t + 0.01):
            t += 1.0
        assert rate.rate == 1.0 and rate.at_floor

    def test_slow_start_after_a_blind_throttle(self) -> None:
        """Throttled before anything was accepted: from the floor the rate doubles per second's worth."""
        rate = AdaptiveRate(100.0, floor=1.0)
        assert rate.throttled(sent_at=0.0, now=0.0)
        assert rate.rate == pytest.approx(70.0)  # no acceptance measured: only the factor applies
        rate = AdaptiveRate(None, floor=1.0)
        assert rate.throttled(sent_at=0.0, now=0.0)
        assert rate.rate == 1.0
        rate.accepted(1, 1.0)
        rate.accepted(2, 2.0)
        assert rate.rate == 4.0
        rate.accepted(4, 3.0)
        assert rate.rate == 8.0
        assert rate.throttled(sent_at=3.5, now=3.6)
        assert rate.rate == 4.0  # what was accepted in the last second
        rate.accepted(1, 4.0)
        assert rate.rate == pytest.approx(4.25)  # additive from here: +1/s over 4 acceptances

    def test_unlimited_until_throttled(self) -> None:
        """Without a configured tps there is no rate until the first throttle, which starts from the accepted rate."""
        rate = AdaptiveRate(None, floor=1.0)
        assert rate.rate is None
        rate.accepted(40, 5.0)
        rate.accepted(10, 5.5)
        assert rate.throttled(sent_at=5.6, now=5.7)
        assert rate.rate == pytest.approx(50.0)  # accepted in the last second

    def test_bucket_rate_change_keeps_tokens_drain_drops_them(self) -> None:
        bucket = TokenBucket(10.0, 5, now=0.0)
        bucket.set_rate(20.0, 2, now=0.0)
        assert bucket.available(0.0) == 2.0
        bucket.drain(0.0)
        assert bucket.take(1, 0.0) == 0
        assert bucket.delay_for(1, 0.0) == pytest.approx(0.05)


def _run_against_limit(tps: float | None, window: int, seconds: float) -> tuple[Harness, list[float]]:
    """A bind with ``tps``/``window`` feeding an SMSC that accepts SMSC_TPS; times of acceptances."""
    h = Harness.build(bind_config(window=window, tps=tps, throttle_initial_s=0.1, throttle_max_s=5.0))
    limit = SmscBucket(SMSC_TPS, h.clock)
    accepted_at: list[float] = []

    def answer(pdu) -> int:
        if limit.take():
            accepted_at.append(h.clock.seconds())
            return 0
        return consts.SMPP_ESME_RTHROTTLED

    h.smsc.answer = answer
    h.start()
    h.link.enqueue(segments(1, int(SMSC_TPS * seconds * 2)))
    h.advance(seconds, step=0.005)
    return h, accepted_at


class TestAgainstTpsLimit:
    @pytest.mark.parametrize(("tps", "window"), [(None, 10), (50.0, 10), (800.0, 10), (None, 50)])
    def test_reaches_80_percent_of_the_limit_in_order(self, tps: float | None, window: int) -> None:
        """Against 15 TPS the accepted rate after warm-up is >= 80 % of 15, and the SMSC sees ids in order."""
        h, accepted_at = _run_against_limit(tps, window, 30.0)
        steady = [t for t in accepted_at if 5.0 <= t < 30.0]
        rate = len(steady) / 25.0
        assert rate >= 0.8 * SMSC_TPS, f"accepted {rate:.1f}/s against {SMSC_TPS}/s"
        ids = h.smsc.accepted_ids()
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # order kept, nothing twice
        assert h.accepted_ids() == ids
        status = h.link.snapshot()[0]
        assert status.throttled > 0
        # throttled answers are a small share of what was sent, not one in two
        assert status.throttled < 0.25 * len(ids)


def _parts(msg_count: int, parts: int, first_id: int = 1, udh: bool = False) -> list[OutboundSegment]:
    """Long messages to one number: SAR TLVs, or a concatenation UDH (8-bit reference)."""
    out = []
    for msg in range(msg_count):
        for part in range(1, parts + 1):
            sid = first_id + msg * parts + part - 1
            if udh:
                body, esm, sar = bytes([5, 0, 3, msg, parts, part]) + str(sid).encode(), 0x40, None
            else:
                body, esm, sar = str(sid).encode(), 0, (msg, parts, part)
            out.append(OutboundSegment(sid, "cmcc", "1069", "+8613800138000", body, 0, esm, sar=sar))
    return out


class TestPartOrder:
    @pytest.mark.parametrize("udh", [False, True])
    def test_queue_holds_next_part_while_one_is_out(self, udh: bool) -> None:
        """One part of a message out at a time; other messages and single segments go ahead."""
        queue = SegmentQueue()
        queue.push(_parts(2, 3, udh=udh))
        queue.push(segments(100, 1))
        first = queue.take(10)
        assert [e.segment.segment_id for e in first] == [1, 4, 100]
        assert queue.take(10) == []
        assert queue.finished([first[0]])  # part 1 of message 0 accepted
        second = queue.take(10)
        assert [e.segment.segment_id for e in second] == [2]
        queue.put_back(second)  # throttled: it comes back first
        assert [e.segment.segment_id for e in queue.take(10)] == [2]
        assert len(queue) == 3 and sorted(e.segment.segment_id for e in queue.take_all()) == [3, 5, 6]

    def test_throttle_cannot_reorder_parts(self) -> None:
        """An SMSC throttling every other submit: each message's parts are still accepted 1, 2, 3, 4."""
        h = Harness.build(bind_config(window=10, tps=None))
        arrivals = iter(range(1_000_000))
        h.smsc.answer = lambda pdu: consts.SMPP_ESME_RTHROTTLED if next(arrivals) % 2 else 0
        h.start()
        h.link.enqueue(_parts(5, 4))
        h.advance(60.0, step=0.01)
        ids = h.smsc.accepted_ids()
        assert sorted(ids) == list(range(1, 21))
        for msg in range(5):
            mine = [i for i in ids if (i - 1) // 4 == msg]
            assert mine == sorted(mine), ids
        assert h.link.snapshot()[0].throttled > 0


# -- against the real simulator ------------------------------------------------------

SIM_TPS_CONFIG = f"""
[sim]
control_port = 0
receipt_delay_ms = [5, 20]
window = 200
max_binds = 8
[sim.carriers.cucc]
port = 0
tps = {SMSC_TPS}
"""

PARTS = 4


@pytest.fixture(name="sim", scope="module")
def _sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    tmp = tmp_path_factory.mktemp("sim-tps")
    config = tmp / "sim.toml"
    config.write_text(SIM_TPS_CONFIG, encoding="utf-8")
    proc = SimProcess(config, tmp / "sim.log")
    yield proc
    proc.stop()


def _long_messages(carrier: str, count: int) -> list[OutboundSegment]:
    """``count`` messages of PARTS SAR parts each; text ``m<msg>p<part>``, ids in send order."""
    out = []
    for msg in range(count):
        for part in range(1, PARTS + 1):
            out.append(OutboundSegment(
                segment_id=msg * PARTS + part, carrier=carrier, source_addr="10690001",
                destination_addr=mainland(carrier, msg), short_message=f"m{msg}p{part}".encode(),
                data_coding=0, esm_class=0, sar=(msg % 256, PARTS, part)))
    return out


class TestAgainstSimulator:
    @pytest.mark.timeout(90)
    @pytest.mark.parametrize("tps", [None, 800.0])
    def test_accepted_rate_and_part_order(self, sim: SimProcess, tps: float | None) -> None:
        """smsc-sim at 15 TPS: >= 80 % of it accepted over 6 s after warm-up; every message's parts in order."""
        assert sim.api("POST", "/reset")[0] == 200
        run = LinkRun.open(sim.ports, "cucc", {"window": 10, "tps": tps, "throttle_initial_s": 0.1,
                                               "throttle_max_s": 5.0}).start()
        try:
            run.link.enqueue(_long_messages("cucc", 60))
            spin_for(8.5)
        finally:
            run.stop(0.5)
        _, body = sim.api("GET", "/submits?carrier=cucc&limit=100000")
        accepted = [s for s in body["submits"] if s["status"] == 0]
        start = accepted[0]["time"]
        steady = [s for s in accepted if start + 2.0 <= s["time"] < start + 8.0]
        rate = len(steady) / 6.0
        print(f"tps={tps}: accepted {rate:.1f}/s against {SMSC_TPS}/s, "
              f"throttled {sim.stats('cucc')['throttled']}")
        assert rate >= 0.8 * SMSC_TPS, f"accepted {rate:.1f}/s against a limit of {SMSC_TPS}/s"
        texts = [s["text"] for s in accepted]
        assert len(texts) == len(set(texts))  # nothing accepted twice
        parts: dict[str, list[int]] = {}
        for text in texts:
            msg, part = text[1:].split("p")
            parts.setdefault(msg, []).append(int(part))
        assert all(seq == list(range(1, len(seq) + 1)) for seq in parts.values()), parts
