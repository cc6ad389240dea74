"""Carrier links against the real SMSC simulator (``smsc-sim run``) over loopback.

Each test asserts what the simulator saw through its control API (``GET /submits``,
``GET /stats``), not only what the bridge believes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from smpplib import consts

from bridge.smpp.codec import Pdu
from bridge.smpp.config import LinkPolicy
from carriers.profiles import CARRIER_IDS, canonical_message_id, load_profiles
from tests.binds.simharness import (
    LinkRun,
    accepted_texts,
    counts,
    spin_for,
    spin_result,
    spin_until,
    write_config,
)
from tests.sim.simproc import SimProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(name="sim", scope="module")
def _sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    tmp = tmp_path_factory.mktemp("sim")
    proc = SimProcess(write_config(tmp), tmp / "sim.log")
    yield proc
    proc.stop()


@pytest.fixture(name="links")
def _links(sim: SimProcess) -> Iterator[list[LinkRun]]:
    """Fresh simulator state per test; every link opened is stopped afterwards."""
    assert sim.api("POST", "/reset")[0] == 200
    opened: list[LinkRun] = []
    yield opened
    for run in opened:
        run.stop(0.5)


def _open(sim: SimProcess, links: list[LinkRun], carrier: str, *binds: dict, **kw) -> LinkRun:
    run = LinkRun.open(sim.ports, carrier, *binds, **kw)
    links.append(run)
    return run


def _fault(sim: SimProcess, carrier: str, mode: str, **params: object) -> dict:
    status, body = sim.api("POST", "/faults", {"carrier": carrier, "mode": mode, **params})
    assert status == 200, body
    return body


def _submits(sim: SimProcess, carrier: str) -> dict:
    return sim.api("GET", f"/submits?carrier={carrier}")[1]


class TestAllCarriers:
    def test_binds_to_all_five_and_submits(self, sim: SimProcess, links: list[LinkRun]) -> None:
        """One link per simulated carrier binds and gets its submits accepted with ids."""
        runs = {cid: _open(sim, links, cid).start() for cid in CARRIER_IDS}
        for run in runs.values():
            run.link.enqueue(run.segments(1, 5))
        for run in runs.values():
            run.wait_accepted(5)
        for cid, run in runs.items():
            seen = _submits(sim, cid)["submits"]
            assert [s["text"] for s in seen if s["status"] == 0] == [f"m{i}" for i in range(1, 6)]
            assert [o.message_id for o in run.outcomes] == [s["message_id"] for s in seen]
            assert run.link.snapshot()[0].state == "bound"


class TestWindow:
    def test_throughput_rises_with_window(self, sim: SimProcess, links: list[LinkRun]) -> None:
        """With a 20 ms SMSC, windows 1 < 10 < 50 give rising in-flight peaks and rates.

        Rates are measured on the simulator's clock (arrival times in /submits) and
        only compared with each other.
        """
        _fault(sim, "cmcc", "slow", latency_ms=20)
        peaks, rates = [], []
        for window, count in ((1, 25), (10, 150), (50, 500)):
            sim.api("POST", "/reset")
            _fault(sim, "cmcc", "slow", latency_ms=20)
            run = _open(sim, links, "cmcc", {"window": window}).start()
            run.link.enqueue(run.segments(1, count))
            run.wait_accepted(count, timeout=20)
            times = [s["time"] for s in _submits(sim, "cmcc")["submits"] if s["status"] == 0]
            assert len(times) == count
            rates.append((count - 1) / (times[-1] - times[0]))
            peaks.append(run.link.snapshot()[0].in_flight_peak)
            run.stop(0.5)
        assert peaks == [1, 10, 50]
        assert rates[0] < rates[1] < rates[2], rates


class TestConnectionFaults:
    def test_drop_with_n_in_flight_resends_all_in_order(self, sim: SimProcess, links: list[LinkRun]) -> None:
        """SMSC drops with 20 unanswered: all 20 resent first, in order; none lost or doubled."""
        run = _open(sim, links, "ctcc", {"window": 20, "response_timeout_s": 30.0}).start()
        _fault(sim, "ctcc", "no_response")
        run.link.enqueue(run.segments(1, 50))
        spin_until(lambda: run.link.snapshot()[0].in_flight == 20, what="20 in flight")
        spin_until(lambda: len(_submits(sim, "ctcc")["submits"]) == 20, what="SMSC saw 20")
        _fault(sim, "ctcc", "none")
        assert _fault(sim, "ctcc", "drop")["dropped"] == 1
        run.wait_accepted(50)
        submits = _submits(sim, "ctcc")["submits"]
        assert [s["text"] for s in submits[:20]] == [f"m{i}" for i in range(1, 21)]
        assert [s["status"] for s in submits[:20]] == [None] * 20
        assert accepted_texts({"submits": submits}, "ctcc") == [f"m{i}" for i in range(1, 51)]
        assert sorted(run.accepted_ids()) == list(range(1, 51))
        assert {o.segment.segment_id for o in run.outcomes if o.segment.possible_duplicate} == set(range(1, 21))
        assert run.link.snapshot()[0].reconnects == 1

    def test_no_response_times_out_reconnects_and_resends(self, sim: SimProcess, links: list[LinkRun]) -> None:
        """SMSC stops answering: response timeout, reconnect, resend; each accepted once."""
        run = _open(sim, links, "cbn", {"window": 10, "response_timeout_s": 0.3}).start()
        _fault(sim, "cbn", "no_response")
        run.link.enqueue(run.segments(1, 10))
        spin_until(lambda: run.link.snapshot()[0].reconnects >= 1, what="timeout and reconnect")
        _fault(sim, "cbn", "none")
        run.wait_accepted(10)
        assert counts(accepted_texts(_submits(sim, "cbn"), "cbn")) == {f"m{i}": 1 for i in range(1, 11)}
        assert all(o.segment.possible_duplicate for o in run.outcomes)
        assert not any(o.final_failure for o in run.outcomes)
        stats = sim.stats("cbn")
        assert stats["unanswered"] >= 10 and stats["connections"] >= 2

    def test_smsc_unbind_is_answered_and_bind_returns(self, sim: SimProcess, links: list[LinkRun]) -> None:
        """The SMSC's unbind gets unbind_resp; the bind reconnects and keeps submitting."""
        run = _open(sim, links, "cucc").start()
        assert _fault(sim, "cucc", "unbind")["unbound"] == 1
        spin_until(lambda: run.link.snapshot()[0].reconnects == 1
                   and run.link.snapshot()[0].state == "bound", what="rebound")
        run.link.enqueue(run.segments(1, 3))
        run.wait_accepted(3)
        stats = sim.stats("cucc")
        assert stats["bind_attempts"] == 2 and stats["accepted"] == 3

    def test_nack_fault_is_retried_then_final(self, sim: SimProcess, links: list[LinkRun]) -> None:
        """generic_nack answers are retried a bounded number of times, then a final failure."""
        run = _open(sim, links, "intl", {"window": 5}, policy=LinkPolicy(max_transient_retries=2)).start()
        _fault(sim, "intl", "nack")
        run.link.enqueue(run.segments(1, 3))
        spin_until(lambda: len(run.outcomes) == 3, what="3 outcomes")
        assert all(o.final_failure and o.command_status == consts.SMPP_ESME_RSYSERR for o in run.outcomes)
        assert len(_submits(sim, "intl")["submits"]) == 9  # 1 + 2 retries each
        assert run.link.snapshot()[0].state == "bound"


class TestThrottling:
    def test_throttled_bind_pauses_and_sends_each_exactly_once(self, sim: SimProcess,
                                                               links: list[LinkRun]) -> None:
        """cucc allows 100 TPS: RTHROTTLED pauses the bind, yet every segment is accepted once."""
        run = _open(sim, links, "cucc", {"window": 50, "throttle_initial_s": 0.05,
                                         "throttle_max_s": 0.4}).start()
        with structlog.testing.capture_logs() as logs:
            run.link.enqueue(run.segments(1, 250))
            run.wait_accepted(250, timeout=30)
        seen = counts(accepted_texts(_submits(sim, "cucc"), "cucc"))
        assert seen == {f"m{i}": 1 for i in range(1, 251)}
        stats = sim.stats("cucc")
        status = run.link.snapshot()[0]
        assert stats["accepted"] == 250
        assert stats["throttled"] > 0
        assert status.throttled == stats["throttled"]
        assert not any(o.final_failure for o in run.outcomes)
        assert any(e["event"] == "bind.throttled" for e in logs)


class TestCredentials:
    def test_wrong_password_backs_off_without_hot_loop(self, sim: SimProcess, links: list[LinkRun]) -> None:
        """RINVPASWD: an alert, growing delays, a handful of bind attempts in 2.5 s, not hundreds."""
        run = _open(sim, links, "intl", {"password": "wrong", "credentials_retry_s": 0.2,
                                         "reconnect_max_s": 1.0})
        with structlog.testing.capture_logs() as logs:
            run.link.start()
            spin_for(2.5)
        delays = [e["delay_s"] for e in logs if e["event"] == "bind.reconnect_scheduled"]
        assert delays[1] > delays[0] and delays[2] > delays[1]
        stats = sim.stats("intl")
        assert 3 <= stats["bind_attempts"] <= 6  # 0, ~0.25, ~0.7, ~1.5, ~2.5 s
        assert stats["bind_failures"] == stats["bind_attempts"]
        assert any(e["event"] == "bind.credentials_rejected" and e.get("alert") for e in logs)
        status = run.link.snapshot()[0]
        assert status.state in ("waiting", "connecting", "binding")
        assert status.last_error == "bind refused: ESME_RINVPASWD"


class TestReceipts:
    def test_receiver_down_receipts_not_lost(self, sim: SimProcess, links: list[LinkRun]) -> None:
        """Receipts wait at the SMSC while the receiver is down and all arrive once it is back."""
        run = _open(sim, links, "cmcc", {"bind_type": "transmitter"}, {"bind_type": "receiver"}).start()
        receiver = run.link.binds[1]
        spin_result(receiver.stop(1.0), what="receiver stopped")
        run.link.enqueue(run.segments(1, 20))
        run.wait_accepted(20)
        spin_until(lambda: sim.stats("cmcc")["receipts_pending"] == 20, what="20 receipts pending")
        assert run.delivered == []
        receiver.start()
        spin_until(lambda: len(run.delivered) == 20, what="20 receipts delivered")
        spin_until(lambda: sim.stats("cmcc")["receipts_acked"] == 20, what="SMSC saw 20 acks")
        assert _receipted(run) == _submitted(run)

    def test_failed_recording_is_redelivered(self, sim: SimProcess, links: list[LinkRun]) -> None:
        """If the bridge cannot record a receipt it answers an error and the SMSC redelivers."""
        run = _open(sim, links, "ctcc", {"bind_type": "transceiver"}).start()
        failed: set[str] = set()

        def fail_first_time(pdu: Pdu) -> bool:
            key = pdu.get("receipted_message_id")
            if key in failed:
                return False
            failed.add(key)
            return True

        run.fail_deliveries = fail_first_time
        run.link.enqueue(run.segments(1, 10))
        run.wait_accepted(10)
        spin_until(lambda: len(run.delivered) == 10, what="10 receipts recorded")
        assert _receipted(run) == _submitted(run)
        spin_until(lambda: sim.stats("ctcc")["receipts_acked"] == 10, what="SMSC saw 10 acks")
        assert sim.stats("ctcc")["deliveries"]["receipt"]["errors"] == 10
        assert run.deliver_attempts == 20


class TestMalformedFromSmsc:
    def test_garbage_from_the_smsc_is_nacked_and_bind_survives(self, tmp_path: Path) -> None:
        """Unknown and truncated PDUs from the real simulator's session get generic_nack; the bind stays."""
        import struct

        from carriers.sim.config import load_config
        from carriers.sim.service import start_simulator
        running = start_simulator(load_config(write_config(tmp_path)))
        run = LinkRun.open(dict(running.ports), "cmcc")
        try:
            run.start()
            (session,) = running.simulator.carriers["cmcc"].sessions
            nacks: list[tuple[int, int]] = []
            session.handlers["generic_nack"] = lambda pdu: nacks.append((pdu.sequence, pdu.status))
            body = b"\x00\x01\x01"  # deliver_sm cut off inside source_addr
            session.transport.write(struct.pack(">LLLL", 16, 0x00000999, 0, 0x1234)
                                    + struct.pack(">LLLL", 16 + len(body), 0x00000005, 0, 0x1235) + body)
            spin_until(lambda: len(nacks) == 2, what="two generic_nacks at the SMSC")
            assert nacks[0] == (0x1234, consts.SMPP_ESME_RINVCMDID)
            assert nacks[1][0] == 0x1235 and nacks[1][1] != 0
            run.link.enqueue(run.segments(1, 5))
            run.wait_accepted(5)
            status = run.link.snapshot()[0]
            assert (status.state, status.reconnects, status.errors) == ("bound", 0, 2)
            assert running.simulator.carriers["cmcc"].counters.accepted == 5
        finally:
            spin_result(run.link.stop(0.5), what="link stop")
            spin_result(running.stop(1.0), what="simulator stop")


def _receipted(run: LinkRun) -> set[str]:
    profile = load_profiles()[0][run.carrier]
    return {canonical_message_id(profile.receipt_id_dialect, p.get("receipted_message_id"))
            for p in run.delivered}


def _submitted(run: LinkRun) -> set[str]:
    profile = load_profiles()[0][run.carrier]
    return {canonical_message_id(profile.message_id_dialect, o.message_id) for o in run.outcomes}
