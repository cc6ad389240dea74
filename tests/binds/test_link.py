"""CarrierLink against a scriptable in-memory SMSC: windows, throttling, faults, stop.

Deterministic: iosim pumps and one task.Clock, no sockets and no sleeps.
"""

from __future__ import annotations

import pytest
import structlog
from smpplib import consts

from bridge.smpp.config import LinkPolicy
from bridge.smpp.state import BindState
from bridge.smpp.status import NO_RESPONSE, UNENCODABLE
from bridge.smpp.types import StopReport
from tests.binds.fakes import Harness, bind_config, fired, segments


class TestWindow:
    def test_window_caps_in_flight(self) -> None:
        """With the SMSC holding answers, exactly `window` submits are outstanding."""
        h = Harness.build(bind_config(window=7))
        h.smsc.answer = lambda pdu: None
        h.start()
        h.link.enqueue(segments(1, 50))
        h.settle()
        assert len(h.smsc.received) == 7
        assert h.link.snapshot()[0].in_flight == 7
        proto, pdu = h.smsc.held.pop(0)
        proto.answer_submit(pdu, 0)
        h.settle()
        assert len(h.smsc.received) == 8  # one answer frees one slot, refilled at once

    @pytest.mark.parametrize("windows", [(1, 10, 50)])
    def test_bigger_window_more_in_flight(self, windows: tuple[int, ...]) -> None:
        """In-flight peaks follow the window: 1 < 10 < 50 under the same load."""
        peaks = []
        for window in windows:
            h = Harness.build(bind_config(window=window))
            h.smsc.answer = lambda pdu: None
            h.start()
            h.link.enqueue(segments(1, 200))
            h.settle()
            for _ in range(3):  # answer in rounds, as a slow SMSC would
                held, h.smsc.held = h.smsc.held, []
                for proto, pdu in held:
                    proto.answer_submit(pdu, 0)
                h.settle()
            peaks.append(h.link.snapshot()[0].in_flight_peak)
        assert peaks == list(windows)

    def test_outcomes_come_in_batches(self) -> None:
        """Answers that arrive in one chunk reach the pipeline as one list."""
        h = Harness.build(bind_config(window=20))
        h.smsc.answer = lambda pdu: None
        h.start()
        h.link.enqueue(segments(1, 20))
        h.settle()
        for proto, pdu in h.smsc.held:
            proto.answer_submit(pdu, 0)
        h.settle()
        assert h.batches == [20]
        assert h.accepted_ids() == list(range(1, 21))
        assert all(o.message_id for o in h.outcomes)

    def test_room_is_a_few_windows(self) -> None:
        """room() asks for queue_windows x the submitting binds' windows, 0 when stopped."""
        h = Harness.build(bind_config(window=10), bind_config(window=5, bind_type="transmitter"),
                          bind_config(window=99, bind_type="receiver"), policy=LinkPolicy(queue_windows=3))
        assert h.link.room() == 0
        h.link.start()
        assert h.link.room() == 45
        h.link.enqueue(segments(1, 40))
        assert h.link.room() == 5
        h.settle()
        assert h.link.room() == 45


class TestThrottling:
    def test_throttle_pauses_and_everything_goes_once_in_order(self) -> None:
        """ESME_RTHROTTLED pauses the bind; each segment is accepted exactly once, in order."""
        h = Harness.build(bind_config(window=10, throttle_initial_s=0.5, throttle_max_s=4.0))
        per_second: dict[int, int] = {}

        def tps_limit(pdu) -> int:
            sec = int(h.clock.seconds())
            per_second[sec] = per_second.get(sec, 0) + 1
            return consts.SMPP_ESME_RTHROTTLED if per_second[sec] > 15 else 0

        h.smsc.answer = tps_limit
        h.start()
        h.link.enqueue(segments(1, 60))
        h.advance(10.0)
        assert sorted(h.smsc.accepted_ids()) == list(range(1, 61))
        assert h.smsc.accepted_ids() == list(range(1, 61))  # order kept
        assert h.accepted_ids() == list(range(1, 61))
        status = h.link.snapshot()[0]
        assert status.throttled > 0 and status.submitted == 60
        assert not any(o.final_failure for o in h.outcomes)
        assert not any(o.segment.possible_duplicate for o in h.outcomes)

    def test_no_submit_while_paused(self) -> None:
        """Throttled from the first submit: the rate drops to its floor (1/s) and nothing is sent
        between tokens; throttled again at the floor, the bind also pauses."""
        h = Harness.build(bind_config(window=5, throttle_initial_s=0.5, throttle_max_s=4.0))
        sent_at: list[float] = []

        def answer(pdu) -> int:
            sent_at.append(h.clock.seconds())
            return consts.SMPP_ESME_RTHROTTLED if h.clock.seconds() < 1.4 else 0

        h.smsc.answer = answer
        h.start()
        h.link.enqueue(segments(1, 5))
        h.advance(8.0, step=0.01)
        starts = sorted(set(round(t, 2) for t in sent_at))
        assert starts[:3] == [0.0, 1.0, 2.0]  # one token a second after the drop; paused 0.5 s at 1.0
        assert h.accepted_ids() == [1, 2, 3, 4, 5]

    def test_msgqful_also_pauses(self) -> None:
        """ESME_RMSGQFUL is throttling too, not a failure."""
        h = Harness.build(bind_config(window=3))
        h.smsc.answer = lambda pdu: consts.SMPP_ESME_RMSGQFUL if h.clock.seconds() < 0.3 else 0
        h.start()
        h.link.enqueue(segments(1, 6))
        h.advance(3.0)
        assert h.accepted_ids() == list(range(1, 7))


class TestErrors:
    def test_transient_error_retried_then_final(self) -> None:
        """RSYSERR is retried max_transient_retries times, then a final failure keeping the status."""
        h = Harness.build(bind_config(), policy=LinkPolicy(max_transient_retries=2))
        h.smsc.answer = lambda pdu: consts.SMPP_ESME_RSYSERR if pdu.get("short_message") == b"2" else 0
        h.start()
        h.link.enqueue(segments(1, 3))
        h.settle()
        assert [p.get("short_message") for p in h.smsc.received].count(b"2") == 3
        (failed,) = [o for o in h.outcomes if o.final_failure]
        assert (failed.segment.segment_id, failed.command_status) == (2, consts.SMPP_ESME_RSYSERR)
        assert h.accepted_ids() == [1, 3]

    def test_transient_error_then_success(self) -> None:
        """A segment that fails once and then passes is accepted, not duplicated."""
        h = Harness.build(bind_config())
        tries: dict[bytes, int] = {}

        def answer(pdu) -> int:
            key = pdu.get("short_message")
            tries[key] = tries.get(key, 0) + 1
            return consts.SMPP_ESME_RSYSERR if tries[key] == 1 else 0

        h.smsc.answer = answer
        h.start()
        h.link.enqueue(segments(1, 4))
        h.settle()
        assert sorted(h.accepted_ids()) == [1, 2, 3, 4]
        assert len(h.outcomes) == 4

    def test_permanent_error_is_final_with_status(self) -> None:
        """ESME_RINVDSTADR ends the segment at once with the status kept for the report."""
        h = Harness.build(bind_config())
        h.smsc.answer = lambda pdu: consts.SMPP_ESME_RINVDSTADR
        h.start()
        h.link.enqueue(segments(1, 2))
        h.settle()
        assert len(h.smsc.received) == 2
        assert [(o.command_status, o.final_failure) for o in h.outcomes] == [(consts.SMPP_ESME_RINVDSTADR, True)] * 2

    def test_unencodable_segment_fails_alone(self) -> None:
        """A segment that cannot be written as submit_sm fails as UNENCODABLE; the rest go."""
        import dataclasses

        h = Harness.build(bind_config())
        h.start()
        bad = dataclasses.replace(segments(2, 1)[0], data_coding=300)
        h.link.enqueue([segments(1, 1)[0], bad, segments(3, 1)[0]])
        h.settle()
        assert h.accepted_ids() == [1, 3]
        (failed,) = [o for o in h.outcomes if o.final_failure]
        assert (failed.segment.segment_id, failed.command_status) == (2, UNENCODABLE)
        assert h.link.snapshot()[0].in_flight == 0

    def test_outcome_callback_failure_does_not_break_the_link(self) -> None:
        """A pipeline bug in on_outcomes is logged; the bind keeps working."""
        h = Harness.build(bind_config(window=1))
        calls = []

        def broken(batch) -> None:
            calls.append(batch)
            raise RuntimeError("pipeline bug")

        h.link._on_outcomes = broken
        h.start()
        with structlog.testing.capture_logs() as logs:
            h.link.enqueue(segments(1, 3))
            h.settle()
        assert len(calls) == 3
        assert any(e["event"] == "link.on_outcomes_failed" for e in logs)


class TestConnectionFaults:
    def test_drop_with_n_in_flight_resends_all_in_order(self) -> None:
        """SMSC drops with N in flight: after reconnect all N go again first, in order, marked."""
        h = Harness.build(bind_config(window=10, reconnect_initial_s=0.5))
        h.smsc.answer = lambda pdu: None
        h.start()
        h.link.enqueue(segments(1, 25))
        h.settle()
        assert len(h.smsc.received) == 10
        h.smsc.connections[0].transport.loseConnection()
        h.smsc.answer = lambda pdu: 0
        h.settle()
        assert h.link.binds[0].state is BindState.WAITING
        h.advance(2.0)
        resent = [int(p.get("short_message")) for p in h.smsc.received[10:20]]
        assert resent == list(range(1, 11))
        assert h.accepted_ids() == list(range(1, 26))
        assert {o.segment.segment_id for o in h.outcomes if o.segment.possible_duplicate} == set(range(1, 11))
        assert h.link.snapshot()[0].reconnects == 1

    def test_response_timeout_reconnects_and_resends(self) -> None:
        """SMSC stops answering: timeout, reconnect, resend; nothing lost or doubled."""
        h = Harness.build(bind_config(window=5, response_timeout_s=2.0, reconnect_initial_s=0.5))
        h.smsc.answer = lambda pdu: None
        h.start()
        h.link.enqueue(segments(1, 8))
        h.advance(2.1)
        assert len(h.smsc.connections) == 1 and h.smsc.connections[0].gone
        h.smsc.answer = lambda pdu: 0
        h.advance(3.0)
        assert len(h.smsc.connections) == 2
        assert h.accepted_ids() == list(range(1, 9))
        assert "no submit_sm_resp" in (h.link.snapshot()[0].last_error or "")

    def test_segment_that_never_gets_an_answer_is_given_up(self) -> None:
        """A poison segment times out max_timeouts+1 times, then fails with NO_RESPONSE."""
        h = Harness.build(bind_config(window=1, response_timeout_s=1.0, reconnect_initial_s=0.1,
                                      reconnect_max_s=0.2),
                          policy=LinkPolicy(max_timeouts=2))
        h.smsc.answer = lambda pdu: None if pdu.get("short_message") == b"1" else 0
        h.start()
        h.link.enqueue(segments(1, 3))
        h.advance(10.0)
        assert [(o.segment.segment_id, o.command_status, o.final_failure) for o in h.outcomes] == [
            (1, NO_RESPONSE, True), (2, 0, False), (3, 0, False)]

    def test_smsc_unbind_then_rebind(self) -> None:
        """The SMSC's unbind is answered; the bind comes back after backoff."""
        h = Harness.build(bind_config(reconnect_initial_s=0.5))
        h.start()
        h.smsc.connections[0].request("unbind")
        h.settle()
        assert h.link.binds[0].state is BindState.WAITING
        h.advance(2.0)
        assert h.link.binds[0].state is BindState.BOUND
        assert len(h.smsc.bind_attempts) == 2

    def test_connect_refused_backs_off(self) -> None:
        """A refused TCP connect is retried with growing delays, capped."""
        h = Harness.build(bind_config(reconnect_initial_s=1.0, reconnect_max_s=8.0))
        h.endpoint.refuse = True
        h.start()
        h.advance(60.0, step=0.5)
        attempts = h.endpoint.attempts
        assert 8 <= attempts <= 12  # 1, 2, 4, 8, 8, 8 ... plus jitter
        h.endpoint.refuse = False
        h.advance(10.0, step=0.5)
        assert h.link.binds[0].state is BindState.BOUND

    def test_flapping_smsc_is_not_hammered(self) -> None:
        """Binds that are dropped right after success still see the delay grow."""
        h = Harness.build(bind_config(reconnect_initial_s=1.0, reconnect_max_s=16.0, stable_after_s=30.0))
        h.start()
        for _ in range(30):
            for conn in h.smsc.live:
                conn.transport.loseConnection()
            h.advance(2.0, step=0.5)
        assert len(h.smsc.bind_attempts) <= 10  # 60 s of flapping


class TestCredentials:
    def test_wrong_password_backs_off_slowly_and_alerts(self) -> None:
        """Bad credentials: an alert, growing delays, a bounded number of bind attempts."""
        h = Harness.build(bind_config(credentials_retry_s=10.0, reconnect_max_s=60.0), password="other")
        with structlog.testing.capture_logs() as logs:
            h.start()
            h.advance(300.0, step=1.0)
        times = [t for t, _ in h.smsc.bind_attempts]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert 4 <= len(times) <= 8
        assert all(g >= 10.0 for g in gaps)
        assert gaps[1] > gaps[0] and gaps[2] > gaps[1]
        alerts = [e for e in logs if e["event"] == "bind.credentials_rejected"]
        assert alerts and all(e["alert"] is True and e["log_level"] == "error" for e in alerts)
        assert "pw" not in repr(logs).replace("password", "")
        assert h.link.snapshot()[0].last_error == "bind refused: ESME_RINVPASWD"

    def test_fixed_password_recovers(self) -> None:
        """Once the SMSC accepts the credentials the bind comes up on the next attempt."""
        h = Harness.build(bind_config(credentials_retry_s=10.0), password="other")
        h.start()
        h.advance(5.0, step=1.0)
        h.smsc.password = "pw"
        h.advance(20.0, step=1.0)
        assert h.link.binds[0].state is BindState.BOUND


class TestRateLimit:
    def test_tps_caps_submits_per_second(self) -> None:
        """tps=50, burst=5: two seconds never see more than 105 submits."""
        h = Harness.build(bind_config(window=50, tps=50, burst=5))
        h.start()
        h.link.enqueue(segments(1, 500))
        h.advance(2.0, step=0.01)
        assert 95 <= len(h.smsc.received) <= 105
        assert h.smsc.accepted_ids() == list(range(1, len(h.smsc.received) + 1))


class TestBindTypes:
    def test_receiver_never_submits_and_receives(self) -> None:
        """Submits go to the transmitter; deliver_sm on the receiver reaches on_deliver."""
        h = Harness.build(bind_config(bind_type="transmitter"), bind_config(bind_type="receiver"))
        h.start()
        tx, rx = h.smsc.connections
        h.link.enqueue(segments(1, 30))
        h.settle()
        assert len(h.smsc.received) == 30
        assert rx.outstanding == 0 and tx.outstanding == 0
        rx.send_deliver()
        h.settle()
        (carrier, bind_id, pdu) = h.delivered[0]
        assert (carrier, bind_id, pdu.get("esm_class")) == ("cmcc", "cmcc-2", 4)
        assert h.smsc.deliver_answers == [0]

    def test_deliver_answered_after_durable_record(self) -> None:
        """The SMSC gets deliver_sm_resp only when on_deliver's Deferred fires; errors ask for redelivery."""
        h = Harness.build(bind_config())
        h.auto_deliver = False
        h.start()
        h.smsc.connections[0].send_deliver()
        h.smsc.connections[0].send_deliver()
        h.settle()
        assert h.smsc.deliver_answers == []
        h.deliver_results[0].callback(0)
        h.deliver_results[1].errback(OSError("disk"))
        h.settle()
        assert h.smsc.deliver_answers == [0, consts.SMPP_ESME_RX_T_APPN]
        assert h.link.snapshot()[0].received == 2

    def test_down_bind_hands_its_segments_to_the_other(self) -> None:
        """Two transmitters share the queue; when one drops, the other sends its segments."""
        h = Harness.build(bind_config(window=5, reconnect_initial_s=30.0),
                          bind_config(window=5, reconnect_initial_s=30.0))
        h.smsc.answer = lambda pdu: None
        h.start()
        h.link.enqueue(segments(1, 10))
        h.settle()
        a, b = h.smsc.connections
        assert a.outstanding == 5 and b.outstanding == 5
        h.smsc.answer = lambda pdu: 0
        for proto, pdu in [x for x in h.smsc.held if x[0] is b]:
            proto.answer_submit(pdu, 0)
        a.transport.loseConnection()
        h.settle()
        assert sorted(h.accepted_ids()) == list(range(1, 11))
        assert {o.bind_id for o in h.outcomes} == {"cmcc-2"}


class TestStop:
    def test_stop_drains_then_unbinds(self) -> None:
        """stop() waits for in-flight answers, unbinds, and reports nothing unfinished."""
        h = Harness.build(bind_config(window=5))
        h.smsc.answer = lambda pdu: None
        h.start()
        h.link.enqueue(segments(1, 5))
        h.settle()
        d = h.link.stop(10.0)
        h.settle()
        assert h.link.binds[0].state is BindState.DRAINING
        for proto, pdu in h.smsc.held:
            proto.answer_submit(pdu, 0)
        h.settle()
        assert fired(d) == StopReport((), ())
        assert h.accepted_ids() == [1, 2, 3, 4, 5]
        assert h.link.binds[0].state is BindState.STOPPED

    def test_stop_is_bounded_and_reports_unfinished(self) -> None:
        """An SMSC that never answers cannot hold stop(): the report lists what to resend."""
        h = Harness.build(bind_config(window=3, response_timeout_s=60.0))
        h.smsc.answer = lambda pdu: None
        h.start()
        h.link.enqueue(segments(1, 6))
        h.settle()
        h.smsc.connections[0].handlers["unbind"] = lambda pdu: None  # no unbind_resp either
        d = h.link.stop(2.0)
        h.advance(1.9)
        assert not d.called
        h.advance(6.0)
        report = fired(d)
        assert report == StopReport((1, 2, 3, 4, 5, 6), (1, 2, 3))
        h.link.enqueue(segments(7, 1))
        assert h.link.room() == 0

    def test_stop_while_waiting_to_reconnect(self) -> None:
        """A bind in backoff stops at once; nothing reconnects afterwards."""
        h = Harness.build(bind_config())
        h.endpoint.refuse = True
        h.start()
        d = h.link.stop(5.0)
        assert fired(d) == StopReport()
        before = h.endpoint.attempts
        h.advance(100.0, step=5.0)
        assert h.endpoint.attempts == before


class TestLogging:
    def test_no_numbers_or_password_at_info(self) -> None:
        """Info-level events never carry the password, phone numbers or message text."""
        h = Harness.build(bind_config(password="Zq9x!k", window=2), password="Zq9x!k")
        h.smsc.answer = lambda pdu: consts.SMPP_ESME_RINVDSTADR
        with structlog.testing.capture_logs() as logs:
            h.start()
            h.link.enqueue(segments(1, 2))
            h.settle()
            h.smsc.connections[0].transport.loseConnection()
            h.advance(3.0)
        assert {"bind.state_changed", "submit.failed", "bind.connection_lost"} <= {e["event"] for e in logs}
        text = repr([e for e in logs if e["log_level"] != "debug"])
        assert "Zq9x!k" not in text
        assert "13800138000" not in text
        assert all({"carrier", "bind_id", "system_id", "bind_type"} <= e.keys()
                   for e in logs if e["event"].startswith("bind."))
