"""Small pieces of the bind layer: state table, token bucket, backoff, queue, statuses, config."""

from __future__ import annotations

import random

import pytest
import structlog
from smpplib import consts

from bridge.smpp.backoff import ReconnectBackoff, ThrottleBackoff
from bridge.smpp.config import BindConfig
from bridge.smpp.pdus import address_fields, submit_fields
from bridge.smpp.queue import SegmentQueue
from bridge.smpp.ratelimit import TokenBucket
from bridge.smpp.state import TRANSITIONS, BindEvent, BindState, BindStateMachine, IllegalTransition
from bridge.smpp.status import (
    BindVerdict,
    SubmitVerdict,
    classify_bind,
    classify_submit,
    status_name,
)
from bridge.smpp.types import OutboundSegment
from tests.binds.fakes import bind_config, segments


class TestStateMachine:
    def test_legal_path_and_timestamps(self) -> None:
        """A bind's normal life walks the table and records when each state began."""
        now = [0.0]
        sm = BindStateMachine(lambda: now[0], structlog.get_logger())
        for t, event in enumerate([BindEvent.START, BindEvent.CONNECTED, BindEvent.BOUND,
                                   BindEvent.STOP, BindEvent.DRAINED, BindEvent.LOST], start=1):
            now[0] = float(t)
            sm.fire(event)
        assert sm.state is BindState.STOPPED
        assert sm.since == 6.0

    def test_illegal_move_raises(self) -> None:
        """An event the table does not allow is a bug and says so."""
        sm = BindStateMachine(lambda: 0.0, structlog.get_logger())
        with pytest.raises(IllegalTransition, match="bound in state idle"):
            sm.fire(BindEvent.BOUND)

    def test_every_state_can_reach_stopped(self) -> None:
        """No state is a trap: stop (plus connection loss) always ends in STOPPED."""
        for state in BindState:
            seen, frontier = {state}, [state]
            while frontier:
                s = frontier.pop()
                for (src, _event), dst in TRANSITIONS.items():
                    if src is s and dst not in seen:
                        seen.add(dst)
                        frontier.append(dst)
            assert BindState.STOPPED in seen, state

    def test_state_change_is_logged(self) -> None:
        """Each move emits bind.state_changed with old and new state."""
        with structlog.testing.capture_logs() as logs:
            sm = BindStateMachine(lambda: 0.0, structlog.get_logger())
            sm.fire(BindEvent.START)
        assert logs == [{"event": "bind.state_changed", "old": "idle", "new": "connecting",
                         "trigger": "start", "log_level": "info"}]


class TestTokenBucket:
    def test_burst_then_rate(self) -> None:
        """A full bucket grants its burst at once, then tokens come at the rate."""
        bucket = TokenBucket(rate=100, capacity=10, now=0.0)
        assert bucket.take(50, 0.0) == 10
        assert bucket.take(50, 0.0) == 0
        assert bucket.delay_for(1, 0.0) == pytest.approx(0.01)
        assert bucket.take(50, 0.05) == 5
        assert bucket.take(50, 10.0) == 10  # never more than capacity saved up

    def test_counts_segments(self) -> None:
        """Over one simulated second the grants never exceed rate + burst."""
        bucket = TokenBucket(rate=200, capacity=5, now=0.0)
        granted = sum(bucket.take(1000, t / 1000) for t in range(1001))
        assert 200 <= granted <= 205


class TestBackoff:
    def test_reconnect_delay_grows_and_caps(self) -> None:
        """Each consecutive failure waits longer, up to the cap plus jitter."""
        backoff = ReconnectBackoff(1.0, 30.0, 60.0, random.Random(1))
        delays = [backoff.next_delay() for _ in range(10)]
        assert all(b > a for a, b in zip(delays[:4], delays[1:5], strict=True))
        assert max(delays) <= 30.0 + 0.5
        assert delays[0] >= 1.0

    def test_credentials_are_slower(self) -> None:
        """Bad credentials start from the slow curve."""
        backoff = ReconnectBackoff(1.0, 30.0, 60.0, random.Random(1))
        assert backoff.next_delay(credentials=True) >= 60.0
        backoff.reset()
        assert backoff.next_delay() < 2.0

    def test_throttle_pause_doubles(self) -> None:
        """Throttle pauses double per episode, capped, and start over on reset."""
        pauses = ThrottleBackoff(0.1, 1.0)
        assert [pauses.next_pause() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
        pauses.reset()
        assert pauses.next_pause() == 0.1


class TestQueue:
    def test_returned_entries_go_first_in_enqueue_order(self) -> None:
        """Whatever order entries come back in, the oldest is sent next."""
        queue = SegmentQueue()
        queue.push(segments(1, 10))
        first = queue.take(6)
        queue.put_back([first[4], first[1], first[3]])
        assert [e.segment.segment_id for e in queue.take(5)] == [2, 4, 5, 7, 8]
        assert len(queue) == 2

    def test_possible_duplicate_marking(self) -> None:
        """Marking replaces the frozen segment with a possible_duplicate copy."""
        queue = SegmentQueue()
        queue.push(segments(1, 1))
        (entry,) = queue.take(1)
        entry.mark_possible_duplicate()
        assert entry.segment.possible_duplicate and entry.maybe_sent


class TestStatus:
    @pytest.mark.parametrize(("status", "nacked", "verdict"), [
        (0, False, SubmitVerdict.ACCEPTED),
        (consts.SMPP_ESME_RTHROTTLED, False, SubmitVerdict.THROTTLED),
        (consts.SMPP_ESME_RMSGQFUL, False, SubmitVerdict.THROTTLED),
        (consts.SMPP_ESME_RSYSERR, False, SubmitVerdict.TRANSIENT),
        (0, True, SubmitVerdict.TRANSIENT),
        (consts.SMPP_ESME_RINVDSTADR, False, SubmitVerdict.PERMANENT),
        (consts.SMPP_ESME_RINVSRCADR, False, SubmitVerdict.PERMANENT),
        (0x0401, False, SubmitVerdict.PERMANENT),
    ])
    def test_submit_verdicts(self, status: int, nacked: bool, verdict: SubmitVerdict) -> None:
        """One table decides retry, pause or final failure."""
        assert classify_submit(status, nacked=nacked) is verdict

    def test_bind_verdicts(self) -> None:
        """Bad credentials are told apart from other bind refusals."""
        assert classify_bind(consts.SMPP_ESME_RINVPASWD) is BindVerdict.CREDENTIALS
        assert classify_bind(consts.SMPP_ESME_RINVSYSID) is BindVerdict.CREDENTIALS
        assert classify_bind(consts.SMPP_ESME_RALYBND) is BindVerdict.TRANSIENT
        assert status_name(consts.SMPP_ESME_RTHROTTLED) == "ESME_RTHROTTLED"
        assert status_name(0x0401) == "0x00000401"


class TestConfig:
    def test_password_hidden(self) -> None:
        """The password never appears in a repr (and so never in a log)."""
        cfg = bind_config(password="s3cret")
        assert "s3cret" not in repr(cfg)

    @pytest.mark.parametrize(("field", "value"), [
        ("bind_type", "both"), ("window", 0), ("tps", 0), ("port", 0), ("response_timeout_s", 0),
    ])
    def test_invalid_values(self, field: str, value: object) -> None:
        """Nonsense is refused when the config is built, naming the field."""
        with pytest.raises(ValueError, match=field):
            bind_config(**{field: value})

    def test_for_profile(self) -> None:
        """A carrier profile supplies port and credentials."""
        from carriers.profiles import load_profiles

        profiles, _ = load_profiles()
        cfg = BindConfig.for_profile(profiles["cbn"], port=12345, window=50)
        assert (cfg.carrier, cfg.port, cfg.system_id, cfg.window) == ("cbn", 12345, "cbn", 50)
        assert cfg.submits and cfg.receives
        assert not BindConfig.for_profile(profiles["cbn"], bind_type="receiver").submits


class TestPdus:
    def test_addresses(self) -> None:
        """E.164 goes out as TON/NPI 1/1 without '+'; channel numbers as digits; names as alphanumeric."""
        assert address_fields("+8613800138000") == (1, 1, "8613800138000")
        assert address_fields("106900001") == (0, 1, "106900001")
        assert address_fields("Brand") == (5, 0, "Brand")

    def test_sar_and_long_payload(self) -> None:
        """SAR triples become TLVs; bodies over 254 octets go to message_payload."""
        seg = OutboundSegment(1, "cbn", "1069", "+8619200000000", b"x" * 300, 8, 0, sar=(9, 2, 1))
        fields = submit_fields(seg)
        assert fields["message_payload"] == b"x" * 300 and fields["short_message"] == b""
        assert (fields["sar_msg_ref_num"], fields["sar_total_segments"], fields["sar_segment_seqnum"]) == (9, 2, 1)


class TestEndpoints:
    def test_endpoint_per_host_kind(self) -> None:
        """IP literals skip the resolver; names use HostnameEndpoint; tls wraps either."""
        from twisted.internet.endpoints import (
            HostnameEndpoint,
            TCP4ClientEndpoint,
            TCP6ClientEndpoint,
        )
        from twisted.internet.testing import MemoryReactorClock

        from bridge.smpp.link import tcp_endpoint

        reactor = MemoryReactorClock()
        assert isinstance(tcp_endpoint(reactor, bind_config(host="127.0.0.1")), TCP4ClientEndpoint)
        assert isinstance(tcp_endpoint(reactor, bind_config(host="::1")), TCP6ClientEndpoint)
        assert isinstance(tcp_endpoint(reactor, bind_config(host="smsc.example")), HostnameEndpoint)
        wrapped = tcp_endpoint(reactor, bind_config(host="smsc.example", tls=True))
        assert type(wrapped).__name__ == "_WrapperEndpoint"
