"""CarrierLink in cluster mode: binds open and close one by one as slots are won and lost."""

from __future__ import annotations

from bridge.smpp.state import BindState
from bridge.smpp.types import StopReport
from tests.binds.fakes import Harness, bind_config, fired, segments


class TestLeasedLink:
    def test_starts_with_no_bind_and_no_room(self) -> None:
        """A leased link opens nothing by itself, so the pipeline gives it nothing to send."""
        h = Harness.build(bind_config(), bind_config(), leased=True)
        h.start()
        assert h.smsc.live == [] and h.link.room() == 0 and h.link.snapshot() == []

    def test_open_bind_connects_that_bind_only(self) -> None:
        """Opening slot 2 binds cmcc-2; room is that bind's share of the queue."""
        h = Harness.build(bind_config(window=5), bind_config(window=5), leased=True)
        h.start()
        h.link.open_bind(2)
        h.settle()
        assert [b.bind_id for b in h.link.snapshot()] == ["cmcc-2"]
        assert h.link.snapshot()[0].state == BindState.BOUND.value
        assert h.link.room() == h.link.policy.queue_windows * 5
        h.link.enqueue(segments(1, 3))
        h.settle()
        assert sorted(h.accepted_ids()) == [1, 2, 3]

    def test_closing_the_last_bind_hands_back_the_queue(self) -> None:
        """With no bind left, what the link still queued is reported for requeueing."""
        h = Harness.build(bind_config(window=1), leased=True)
        h.smsc.answer = lambda pdu: None   # the SMSC holds its answers
        h.start()
        h.link.open_bind(1)
        h.settle()
        h.link.enqueue(segments(1, 3))
        h.settle()
        d = h.link.close_bind(1, 0.0, abort=True)
        h.settle()
        report = fired(d)
        assert isinstance(report, StopReport)
        assert sorted(report.unfinished) == [1, 2, 3] and report.maybe_sent == (1,)
        assert h.link.room() == 0

    def test_closing_one_of_two_keeps_the_queue(self) -> None:
        """Another bind is still open: nothing to hand back; it sends the rest."""
        h = Harness.build(bind_config(), bind_config(), leased=True)
        h.start()
        h.link.open_bind(1)
        h.link.open_bind(2)
        h.settle()
        d = h.link.close_bind(1, 1.0)
        h.advance(1.0)
        assert fired(d) is None
        h.link.enqueue(segments(1, 4))
        h.settle()
        assert sorted(h.accepted_ids()) == [1, 2, 3, 4]
        assert [b.bind_id for b in h.link.snapshot()] == ["cmcc-2"]

    def test_a_closed_bind_can_be_opened_again(self) -> None:
        """A slot lost and later won again binds again."""
        h = Harness.build(bind_config(), leased=True)
        h.start()
        h.link.open_bind(1)
        h.settle()
        d = h.link.close_bind(1, 0.0, abort=True)
        h.settle()
        fired(d)
        h.link.open_bind(1)
        h.settle()
        assert h.link.snapshot()[0].state == BindState.BOUND.value
