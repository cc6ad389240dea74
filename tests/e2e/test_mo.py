"""Uplink (MO) replies end to end: simulator POST /mo -> daemon -> uplink receiver."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Backend
from tests.e2e.harness import CHANNEL, CHANNEL2, OPERATOR_TOKEN, Bridge, Receiver, wait_for


def _mo(bridge: Bridge, text: str, source: str = "8613812345678", to: str = CHANNEL, carrier: str = "cmcc",
        **extra: object) -> None:
    status, answer = bridge.sim("POST", "/mo", {"carrier": carrier, "from": source, "to": to, "text": text, **extra})
    assert status == 200, answer


def _uplinks(receiver: Receiver, source: str) -> list[dict]:
    return [b for b in receiver.acked("/uplink") if b["from"] == source]


def _report(receiver: Receiver, message_id: str) -> dict:
    return wait_for(lambda: receiver.reports_for(message_id), what="report")[0]


def _blacklisted(bridge: Bridge, channel: str, number: str) -> bool:
    status, _ = bridge.request("GET", f"{bridge.api}/v1/blacklist/{channel}/{number}", token=OPERATOR_TOKEN)
    return status == 200



@pytest.fixture(name="e2e_backend")
def _both_backends(store_backend: Backend) -> Backend:
    """Every test here runs on SQLite and on a real PostgreSQL."""
    return store_backend

class TestUnsubscribe:
    def test_t_reply_blacklists_then_delete_restores(self, bridge: Bridge, receiver: Receiver) -> None:
        """A "T" reply blocks that channel only, until an operator removes the entry."""
        number = "+8613812340100"
        _mo(bridge, "T", source=number[1:])
        push = wait_for(lambda: _uplinks(receiver, number), what="uplink push")[0]
        assert push["body"] == "T" and push["to"] == CHANNEL and push["smsMsgId"]
        wait_for(lambda: _blacklisted(bridge, CHANNEL, number), what="blacklist entry")

        blocked = bridge.send([number])["result"][0]["smsMsgId"]
        report = _report(receiver, blocked)
        assert report["status"] == "REJECTD" and report["orgCode"] == "SC:0016"
        other = bridge.send([number], sender=CHANNEL2, params=["654321"])["result"][0]["smsMsgId"]
        assert _report(receiver, other)["status"] == "DELIVRD"
        texts = [s["text"] for s in bridge.submits("cmcc") if s["destination_addr"] == number[1:]]
        assert texts == ["[Shop]Your code is 654321."]

        status, _ = bridge.request("DELETE", f"{bridge.api}/v1/blacklist/{CHANNEL}/{number}", token=OPERATOR_TOKEN)
        assert status == 200
        again = bridge.send([number], params=["111222"])["result"][0]["smsMsgId"]
        assert _report(receiver, again)["status"] == "DELIVRD"

    def test_delete_needs_operator_token(self, bridge: Bridge) -> None:
        """Blacklist removal is an operator action: an application token gets 401."""
        status, _ = bridge.request("DELETE", f"{bridge.api}/v1/blacklist/{CHANNEL}/+8613812340199")
        assert status == 401

    @pytest.mark.parametrize(("index", "text", "unsubscribes"), [(i, *case) for i, case in enumerate([
        ("t", True), (" R ", True), ("ＴＤ", True), ("退订", True), ("0000", True), ("n", True),
        ("TT", False), ("T please", False), ("0001", False),
    ])])
    def test_keyword_variants(self, bridge: Bridge, receiver: Receiver, index: int, text: str,
                              unsubscribes: bool) -> None:
        """Only whole unsubscribe keywords (case, width and blanks folded) blacklist the sender."""
        number = f"+86138123402{index:02d}"
        _mo(bridge, text, source=number[1:])
        push = wait_for(lambda: _uplinks(receiver, number), what="uplink push")[0]
        assert push["body"] == text
        assert _blacklisted(bridge, CHANNEL, number) is unsubscribes


class TestReassembly:
    @pytest.mark.parametrize("concat", ["udh8", "udh16", "sar"])
    def test_long_ucs2_mo_out_of_order(self, bridge: Bridge, receiver: Receiver, concat: str) -> None:
        """A 3-part UCS-2 reply delivered 3,1,2 arrives as one push with the exact text."""
        number = {"udh8": "+8613812340301", "udh16": "+8613812340302", "sar": "+8613812340303"}[concat]
        text = "您好，请问这个订单什么时候发货？😀" * 9
        _mo(bridge, text, source=number[1:], concat=concat, order=[3, 1, 2])
        pushes = wait_for(lambda: _uplinks(receiver, number), what="assembled uplink")
        assert len(pushes) == 1 and pushes[0]["body"] == text


class TestDelivery:
    def test_uplink_receiver_down_then_up(self, bridge: Bridge, receiver: Receiver) -> None:
        """An uplink push that fails while the receiver is down is retried until acknowledged."""
        receiver.status = 500
        number = "+8613812340400"
        _mo(bridge, "hello there", source=number[1:])
        wait_for(lambda: any(p.path == "/uplink" for p in receiver.pushes), what="failed attempt")
        receiver.status = 200
        pushes = wait_for(lambda: _uplinks(receiver, number), what="acked uplink")
        assert len(pushes) == 1 and pushes[0]["body"] == "hello there"

    def test_unknown_channel_is_stored_not_lost(self, bridge: Bridge, receiver: Receiver) -> None:
        """An MO to a number that is no channel is stored and counted, and pushed nowhere."""
        _mo(bridge, "who is this", source="8613812340500", to="10699999")

        def stored() -> int:
            return bridge.db_count("SELECT COUNT(*) FROM mo WHERE channel IS NULL AND destination = '10699999'")

        assert wait_for(stored, what="stored MO") == 1
        metrics = bridge.request("GET", f"{bridge.api}/metrics", token=None)[1]
        assert "smpp_bridge_mo_total 1.0" in metrics
        assert not _uplinks(receiver, "+8613812340500")

    def test_restart_between_parts(self, make_bridge: Callable[..., Bridge], receiver: Receiver) -> None:
        """Parts stored before a restart are joined with the part that comes after it."""
        bridge = make_bridge(external_sim=True)
        number = "+8613812340600"
        text = "退货申请已经提交，请尽快处理，谢谢！" * 8
        _mo(bridge, text, source=number[1:], order=[2, 3], ref=77)
        wait_for(lambda: _parts_stored(bridge) == 2, what="two parts stored")
        bridge.stop()
        bridge.start()
        _mo(bridge, text, source=number[1:], order=[1], ref=77)
        pushes = wait_for(lambda: _uplinks(receiver, number), what="assembled uplink")
        assert len(pushes) == 1 and pushes[0]["body"] == text


def _parts_stored(bridge: Bridge) -> int:
    return bridge.db_count("SELECT COUNT(*) FROM mo_parts")
