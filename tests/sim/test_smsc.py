"""The SMPP server, driven deterministically with task.Clock and StringTransport."""

from __future__ import annotations

import struct

import pytest
from smpplib import consts

from bridge.smpp.codec import encode
from bridge.textcodec import split_udh
from carriers.profiles import canonical_message_id
from carriers.sim.mo import MoError, MoRequest
from carriers.sim.smsc import NoReceiverError

from .helpers import FakeEsme, make_simulator

BASE = """
[sim]
receipt_delay_ms = [100, 100]
response_timeout_s = 10
retry_delay_s = 5
max_attempts = 3
enquire_link_s = 0
[sim.carriers.cmcc]
message_id_start = 1000
[sim.carriers.cbn]
tps = 5
window = 3
"""


@pytest.fixture(name="sim")
def _sim(tmp_path):
    return make_simulator(tmp_path, BASE)


def _receipts(pdus):
    return [p for p in pdus if p.command == "deliver_sm" and p.get("esm_class") & 0x04]


class TestBind:
    @pytest.mark.parametrize("kind", ["transmitter", "receiver", "transceiver"])
    def test_bind_ok(self, sim, kind):
        """Right credentials bind every type and the response names the SMSC."""
        esme = FakeEsme(sim[0], "cmcc")
        resp = esme.bind(kind)
        assert (resp.command, resp.status, resp.get("system_id")) == (f"bind_{kind}_resp", 0, "cmcc")
        assert sim[0].carriers["cmcc"].binds_by_type()[kind] == 1

    @pytest.mark.parametrize(("system_id", "password", "status"), [
        ("cmcc", "wrong", consts.SMPP_ESME_RINVPASWD),
        ("nobody", "cmcc-pw", consts.SMPP_ESME_RINVSYSID),
        ("cucc", "cucc-pw", consts.SMPP_ESME_RINVSYSID),
    ])
    def test_bad_credentials(self, sim, system_id, password, status):
        """A wrong password or system_id is refused with its own status and counted."""
        esme = FakeEsme(sim[0], "cmcc")
        assert esme.bind(system_id=system_id, password=password).status == status
        stats = sim[0].stats()["carriers"]["cmcc"]
        assert (stats["bind_attempts"], stats["bind_failures"]) == (1, 1)
        assert not esme.session.bound

    def test_second_bind_on_session(self, sim):
        """Binding an already bound session answers ESME_RALYBND and keeps the first bind."""
        esme = FakeEsme(sim[0], "cmcc")
        esme.bind("transmitter")
        assert esme.bind("receiver").status == consts.SMPP_ESME_RALYBND
        assert esme.session.state.value == "transmitter"

    def test_bind_limit(self, sim):
        """cbn allows two binds per account; the third is ESME_RBINDFAIL until one leaves."""
        s, _ = sim
        first, second, third = (FakeEsme(s, "cbn") for _ in range(3))
        assert first.bind().status == 0 and second.bind().status == 0
        assert third.bind().status == consts.SMPP_ESME_RBINDFAIL
        first.send("unbind")
        assert third.bind().status == 0

    def test_requests_before_bind(self, sim):
        """submit_sm before bind, or on a receiver bind, is ESME_RINVBNDSTS."""
        esme = FakeEsme(sim[0], "cmcc")
        esme.submit()
        assert esme.received()[0].status == consts.SMPP_ESME_RINVBNDSTS
        esme.bind("receiver")
        esme.submit()
        assert esme.received()[0].status == consts.SMPP_ESME_RINVBNDSTS

    def test_session_init_timeout(self, tmp_path):
        """A connection that never binds is closed after session_init_s."""
        s, clock = make_simulator(tmp_path, "[sim]\nsession_init_s = 5\n")
        esme = FakeEsme(s, "cmcc")
        clock.advance(4.9)
        assert not esme.closed
        clock.advance(0.2)
        assert esme.closed


class TestSubmit:
    def test_message_ids_per_dialect(self, tmp_path):
        """Each carrier answers with ids in its own dialect; receipts carry the same number."""
        s, clock = make_simulator(tmp_path, BASE + "\n".join(
            f"[sim.carriers.{c}]\nmessage_id_start = 4096" for c in ("cucc", "ctcc", "intl")))
        expected = {"cmcc": "1000", "cucc": "1000", "ctcc": "0000000000001000", "intl": "0000000000001000"}
        for cid, mid in expected.items():
            esme = FakeEsme(s, cid)
            esme.bind()
            esme.submit(to="+447700900123" if cid == "intl" else "13800138000")
            (resp,) = esme.received()
            assert resp.get("message_id") == mid, cid
        cbn = FakeEsme(s, "cbn")
        cbn.bind()
        cbn.submit(to="19212345678")
        mid = cbn.received()[0].get("message_id")
        assert len(mid) == 36 and mid.count("-") == 4

    def test_invalid_destination(self, sim):
        """Letters, IoT numbers and wrong lengths get ESME_RINVDSTADR; 86/+86 forms are fine."""
        esme = FakeEsme(sim[0], "cmcc")
        esme.bind()
        for bad in ("abc", "1380013800", "1440012345678", ""):
            esme.submit(to=bad)
            assert esme.received()[0].status == consts.SMPP_ESME_RINVDSTADR, bad
        for good in ("8613800138000", "+8613800138000"):
            esme.submit(to=good)
            assert esme.received()[0].status == 0, good
        assert sim[0].stats()["carriers"]["cmcc"]["invalid_destination"] == 4

    def test_tps_limit_counts_throttled(self, sim):
        """A burst of tps+k submits in one instant gets exactly k ESME_RTHROTTLED answers."""
        s, clock = sim
        esme = FakeEsme(s, "cbn")
        esme.bind()
        for _ in range(12):
            esme.submit(to="19212345678")
        statuses = [p.status for p in esme.received()]
        assert statuses.count(consts.SMPP_ESME_RTHROTTLED) == 7
        assert statuses[:5] == [0] * 5
        clock.advance(1.0)
        esme.submit(to="19212345678")
        assert esme.received()[0].status == 0
        assert s.stats()["carriers"]["cbn"]["throttled"] == 7

    def test_tps_limit_is_per_account(self, sim):
        """Two binds of one account share its TPS budget."""
        s, _ = sim
        a, b = FakeEsme(s, "cbn"), FakeEsme(s, "cbn")
        a.bind()
        b.bind()
        for _ in range(3):
            a.submit(to="19212345678")
            b.submit(to="19212345678")
        statuses = [p.status for p in a.received() + b.received()]
        assert statuses.count(0) == 5

    def test_window_limit_with_slow_answers(self, sim):
        """With answers delayed, the (window+1)th outstanding submit gets ESME_RMSGQFUL."""
        s, clock = sim
        s.apply_fault("cbn", "slow", latency_ms=1000)
        esme = FakeEsme(s, "cbn")
        esme.bind()
        for _ in range(4):
            esme.submit(to="19212345678")
        (full,) = esme.received()
        assert full.status == consts.SMPP_ESME_RMSGQFUL and full.sequence == 5
        clock.advance(1.0)
        answers = esme.received()
        assert [p.status for p in answers] == [0, 0, 0]
        esme.submit(to="19212345678")
        assert esme.received() == []
        assert s.stats()["carriers"]["cbn"]["window_full"] == 1

    def test_submits_log_decodes_ucs2_and_udh(self, sim):
        """The submit log shows coding, UDH fields and the decoded text of each segment."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        udh = bytes([5, 0, 3, 0x2A, 2, 1])
        esme.submit(text=udh + "你好".encode("utf-16-be"), data_coding=8, esm_class=0x40)
        esme.submit(text="世界".encode("utf-16-be"), data_coding=8, sar_msg_ref_num=7,
                    sar_total_segments=2, sar_segment_seqnum=2)
        first, second = (r.as_json() for r in s.submits.since(0))
        assert first["udh"] == {"ref": 0x2A, "total": 2, "seq": 1, "ref_bits": 8}
        assert (first["text"], first["data_coding"], first["esm_class"]) == ("你好", 8, 0x40)
        assert first["message_id"] == "1000" and first["status"] == 0
        assert second["sar"] == {"ref": 7, "total": 2, "seq": 2} and second["text"] == "世界"


class TestReceipts:
    def test_receipt_reaches_receiver_bind_of_same_account(self, sim):
        """A submit on a transmitter bind gets its receipt on the account's receiver bind."""
        s, clock = sim
        tx, rx = FakeEsme(s, "cmcc"), FakeEsme(s, "cmcc")
        tx.bind("transmitter")
        rx.bind("receiver")
        tx.submit(to="13800000000")
        mid = tx.received()[0].get("message_id")
        clock.advance(0.1)
        assert tx.received() == []
        (receipt,) = _receipts(rx.received())
        assert canonical_message_id("hex_upper", receipt.get("receipted_message_id")) == \
            canonical_message_id("decimal", mid)
        assert b"stat:UNDELIV" in receipt.get("short_message")

    def test_no_receipt_rule_and_registered_delivery(self, sim):
        """Suffix 1111 never gets a receipt; rd=0 none; rd=2 only failures."""
        s, clock = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        esme.submit(to="13800001111", registered_delivery=1)
        esme.submit(to="13800005555", registered_delivery=0)
        esme.submit(to="13800005555", registered_delivery=2)
        esme.submit(to="13800002222", registered_delivery=2)
        esme.received()
        clock.advance(1)
        receipts = _receipts(esme.received())
        assert len(receipts) == 1 and b"stat:REJECTD" in receipts[0].get("short_message")

    def test_one_receipt_per_segment(self, sim):
        """Each segment of a long message gets its own id and its own receipt."""
        s, clock = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        for seq in (1, 2, 3):
            esme.submit(text=bytes([5, 0, 3, 9, 3, seq]) + b"\x00A" * 10, data_coding=8, esm_class=0x40)
        ids = [p.get("message_id") for p in esme.received()]
        clock.advance(0.1)
        receipts = _receipts(esme.received())
        assert sorted(int(r.get("receipted_message_id"), 16) for r in receipts) == sorted(map(int, ids))
        assert len(set(ids)) == 3

    def test_redelivery_after_error_and_timeout(self, sim):
        """An error answer or silence sends the receipt again after the retry delay."""
        s, clock = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        esme.submit()
        esme.received()
        clock.advance(0.1)
        (first,) = _receipts(esme.received())
        esme.answer(first, consts.SMPP_ESME_RSYSERR)
        clock.advance(4.9)
        assert esme.received() == []
        clock.advance(0.1)
        (second,) = _receipts(esme.received())
        assert second.get("receipted_message_id") == first.get("receipted_message_id")
        assert second.sequence != first.sequence
        clock.advance(10)  # no answer: timeout, then retry after 2 * 5 s
        clock.advance(10)
        (third,) = _receipts(esme.received())
        esme.answer(third)
        stats = s.stats()["carriers"]["cmcc"]
        assert (stats["receipts_sent"], stats["receipts_acked"], stats["receipts_pending"]) == (3, 1, 0)
        assert stats["deliveries"]["receipt"]["errors"] == 1
        assert stats["deliveries"]["receipt"]["timeouts"] == 1

    def test_attempts_are_bounded(self, sim):
        """After max_attempts failed answers the receipt is given up and counted."""
        s, clock = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        esme.submit()
        esme.received()
        clock.advance(0.1)
        for _ in range(3):
            (receipt,) = _receipts(esme.received())
            esme.answer(receipt, consts.SMPP_ESME_RX_T_APPN)
            clock.advance(60)
        assert esme.received() == []
        stats = s.stats()["carriers"]["cmcc"]
        assert (stats["receipts_failed"], stats["receipts_pending"]) == (1, 0)

    def test_receipts_wait_for_a_receiver(self, sim):
        """Receipts made while no receiver is bound are queued and delivered on the next bind."""
        s, clock = sim
        tx = FakeEsme(s, "cmcc")
        tx.bind("transmitter")
        tx.submit()
        tx.submit()
        clock.advance(1)
        assert s.stats()["carriers"]["cmcc"]["receipts_pending"] == 2
        rx = FakeEsme(s, "cmcc")
        rx.bind("receiver")
        assert len(_receipts(rx.received())) == 2

    def test_receipts_in_flight_survive_a_lost_receiver(self, sim):
        """A receiver that disconnects before answering gets its receipts again on the next bind."""
        s, clock = sim
        rx = FakeEsme(s, "cmcc")
        rx.bind("transceiver")
        rx.submit()
        rx.received()
        clock.advance(0.1)
        assert len(_receipts(rx.received())) == 1
        rx.session.connectionLost(None)
        again = FakeEsme(s, "cmcc")
        again.bind("receiver")
        (receipt,) = _receipts(again.received())
        again.answer(receipt)
        assert s.stats()["carriers"]["cmcc"]["receipts_acked"] == 1


class TestSessionTraffic:
    def test_enquire_link_both_ways(self, tmp_path):
        """The server answers enquire_link and sends its own every enquire_link_s."""
        s, clock = make_simulator(tmp_path, "[sim]\nenquire_link_s = 30\n")
        esme = FakeEsme(s, "cmcc")
        seq = esme.send("enquire_link")
        assert [(p.command, p.sequence) for p in esme.received()] == [("enquire_link_resp", seq)]
        esme.bind()
        clock.advance(30)
        (probe,) = esme.received()
        assert probe.command == "enquire_link"
        esme.answer(probe)
        assert esme.received() == []

    def test_unbind_from_esme(self, sim):
        """unbind gets unbind_resp, the bind slot is freed and the connection closes."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        seq = esme.send("unbind")
        assert [(p.command, p.sequence, p.status) for p in esme.received()] == [("unbind_resp", seq, 0)]
        assert esme.closed
        assert s.carriers["cmcc"].binds_by_type()["transceiver"] == 0

    def test_unbind_from_smsc(self, sim):
        """The unbind action sends unbind and closes on the answer; no deliveries after it."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        assert s.apply_fault("cmcc", "unbind").unbound == 1
        (unbind,) = esme.received()
        assert unbind.command == "unbind"
        assert not esme.closed
        esme.answer(unbind)
        assert esme.closed

    def test_unbind_from_smsc_times_out(self, sim):
        """An ESME that never answers the unbind is disconnected after the response timeout."""
        s, clock = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        s.carriers["cmcc"].unbind_all()
        clock.advance(10)
        assert esme.closed


class TestMalformed:
    def test_unknown_command_id(self, sim):
        """An unknown command_id gets generic_nack ESME_RINVCMDID and the session goes on."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        esme.send_raw(struct.pack(">LLLL", 16, 0x000000FF, 0, 77))
        (nack,) = esme.received()
        assert (nack.command, nack.status, nack.sequence) == ("generic_nack", consts.SMPP_ESME_RINVCMDID, 77)
        esme.submit()
        assert esme.received()[0].status == 0

    def test_truncated_body(self, sim):
        """A submit_sm whose body stops mid-field gets generic_nack, not a crash."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        body = b"\x00\x00\x00138"
        esme.send_raw(struct.pack(">LLLL", 16 + len(body), 4, 0, 5) + body)
        (nack,) = esme.received()
        assert nack.command == "generic_nack" and nack.sequence == 5 and nack.status != 0
        assert not esme.closed

    @pytest.mark.parametrize("length", [8, 70000])
    def test_bad_length_disconnects_only_that_session(self, sim, length):
        """command_length < 16 or > 64 KiB: generic_nack and disconnect; other binds keep working."""
        s, _ = sim
        bad, good = FakeEsme(s, "cmcc"), FakeEsme(s, "cmcc")
        bad.bind()
        good.bind()
        bad.send_raw(struct.pack(">LLLL", length, 4, 0, 3))
        (nack,) = bad.received()
        assert nack.command == "generic_nack" and nack.status == consts.SMPP_ESME_RINVCMDLEN
        assert bad.closed
        good.submit()
        assert good.received()[0].status == 0
        assert s.stats()["carriers"]["cmcc"]["malformed"] == 1

    def test_unterminated_string(self, sim):
        """A C-string without its NUL in a bind gets generic_nack."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        body = b"cmcc" * 10
        esme.send_raw(struct.pack(">LLLL", 16 + len(body), 9, 0, 1) + body)
        (nack,) = esme.received()
        assert nack.command == "generic_nack"
        assert esme.bind().status == 0


class TestFaults:
    def test_no_response(self, sim):
        """no_response: submits are logged but never answered; none switches it off."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        s.apply_fault("cmcc", "no_response")
        esme.submit()
        assert esme.received() == []
        assert s.submits.total == 1
        s.apply_fault("cmcc", "none")
        esme.submit()
        assert esme.received()[0].status == 0

    def test_nack(self, sim):
        """nack: every submit gets generic_nack with the chosen status and the same sequence."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        s.apply_fault("*", "nack", status=0x58)
        seq = esme.submit()
        assert [(p.command, p.status, p.sequence) for p in esme.received()] == [("generic_nack", 0x58, seq)]
        assert s.stats()["carriers"]["cmcc"]["nacks"] == 1

    def test_slow_latency_range(self, sim):
        """slow: answers come within the latency range, not before."""
        s, clock = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind()
        s.apply_fault("cmcc", "slow", latency_ms=[200, 400])
        for _ in range(5):
            esme.submit()
        clock.advance(0.199)
        assert esme.received() == []
        clock.advance(0.201)
        assert [p.status for p in esme.received() if p.command == "submit_sm_resp"] == [0] * 5

    def test_slow_with_receipts_first(self, sim):
        """slow + receipts_first: the receipt overtakes the late submit_sm_resp, same message id."""
        s, clock = sim
        esme = FakeEsme(s, "cucc")
        esme.bind()
        s.apply_fault("cucc", "slow", latency_ms=1000, receipts_first=True)
        esme.submit()
        clock.advance(0.1)
        (receipt,) = esme.received()
        assert receipt.command == "deliver_sm"
        esme.answer(receipt)
        clock.advance(0.9)
        (resp,) = esme.received()
        assert resp.command == "submit_sm_resp"
        assert f"id:{resp.get('message_id')} ".encode() in receipt.get("short_message")

    def test_drop(self, sim):
        """drop closes every connection of the carrier at once, and only of that carrier."""
        s, _ = sim
        a, b, other = FakeEsme(s, "cmcc"), FakeEsme(s, "cmcc"), FakeEsme(s, "cucc")
        a.bind()
        b.bind("receiver")
        other.bind()
        assert s.apply_fault("cmcc", "drop").dropped == 2
        assert a.transport.disconnecting and b.transport.disconnecting
        assert not other.closed

    def test_refuse_binds(self, sim):
        """refuse_binds answers binds with ESME_RBINDFAIL (or a chosen status) on every carrier."""
        s, _ = sim
        s.apply_fault("*", "refuse_binds")
        assert FakeEsme(s, "cmcc").bind().status == consts.SMPP_ESME_RBINDFAIL
        s.apply_fault("cucc", "refuse_binds", status=consts.SMPP_ESME_RSYSERR)
        assert FakeEsme(s, "cucc").bind().status == consts.SMPP_ESME_RSYSERR
        s.apply_fault("*", "none")
        assert FakeEsme(s, "cbn").bind().status == 0

    def test_bad_fault_request(self, sim):
        """Unknown modes and bad parameters are refused with a message naming the field."""
        from carriers.sim.faults import FaultError
        from carriers.sim.simulator import UnknownCarrierError
        s, _ = sim
        with pytest.raises(FaultError, match="mode"):
            s.apply_fault("cmcc", "explode")
        with pytest.raises(FaultError, match="latency_ms"):
            s.apply_fault("cmcc", "slow", latency_ms=[5, 1])
        with pytest.raises(UnknownCarrierError):
            s.apply_fault("xx", "none")


class TestMo:
    def test_short_mo(self, sim):
        """A short MO is one deliver_sm with esm_class 0, UCS-2 on a mainland carrier."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind("receiver")
        assert s.carriers["cmcc"].inject_mo(MoRequest("cmcc", "13800138000", "10690001", "TD")) == 1
        (mo,) = esme.received()
        assert (mo.get("esm_class"), mo.get("data_coding")) == (0, 8)
        assert mo.get("short_message") == "TD".encode("utf-16-be")
        assert (mo.get("source_addr"), mo.get("destination_addr")) == ("13800138000", "10690001")

    def test_long_ucs2_mo_udh16_out_of_order(self, sim):
        """A long Chinese MO goes out as UCS-2 UDH segments in the requested order."""
        s, _ = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind("transceiver")
        text = "退订" * 70
        n = s.carriers["cmcc"].inject_mo(
            MoRequest("cmcc", "13800138000", "10690001", text, concat="udh16", order=(3, 1, 2)))
        assert n == 3
        parts = esme.received()
        infos = [split_udh(p.get("short_message"), p.get("esm_class")) for p in parts]
        assert [i.seq for i, _ in infos] == [3, 1, 2]
        assert {(i.total, i.ref_bits) for i, _ in infos} == {(3, 16)}
        assert all(p.get("esm_class") == 0x40 and p.get("data_coding") == 8 for p in parts)
        joined = b"".join(payload for _, payload in sorted(infos, key=lambda x: x[0].seq))
        assert joined.decode("utf-16-be") == text

    def test_long_gsm_mo_sar_on_intl_route_refused_but_cbn_sar(self, sim):
        """cbn joins with SAR TLVs (no UDH); intl carries no MO at all."""
        s, _ = sim
        esme = FakeEsme(s, "cbn")
        esme.bind("receiver")
        s.carriers["cbn"].inject_mo(MoRequest("cbn", "19212345678", "10690001", "x" * 100))
        parts = esme.received()
        assert [(p.get("sar_segment_seqnum"), p.get("sar_total_segments")) for p in parts] == [(1, 2), (2, 2)]
        assert all(p.get("esm_class") == 0 for p in parts)

    def test_mo_without_receiver(self, sim):
        """An MO while only a transmitter is bound is refused, not silently queued."""
        s, _ = sim
        FakeEsme(s, "cmcc").bind("transmitter")
        with pytest.raises(NoReceiverError):
            s.carriers["cmcc"].inject_mo(MoRequest("cmcc", "13800138000", "10690001", "hi"))

    def test_bad_order(self, sim):
        """An order that is not a permutation of the segments is refused."""
        s, _ = sim
        FakeEsme(s, "cmcc").bind("receiver")
        with pytest.raises(MoError, match="order"):
            s.carriers["cmcc"].inject_mo(MoRequest("cmcc", "1", "2", "hello", order=(1, 2)))

    def test_mo_redelivered(self, sim):
        """An MO answered with an error is sent again, like a receipt."""
        s, clock = sim
        esme = FakeEsme(s, "cmcc")
        esme.bind("receiver")
        s.carriers["cmcc"].inject_mo(MoRequest("cmcc", "13800138000", "10690001", "hi"))
        (mo,) = esme.received()
        esme.answer(mo, consts.SMPP_ESME_RSYSERR)
        clock.advance(5)
        (again,) = esme.received()
        assert again.get("short_message") == mo.get("short_message")
        esme.answer(again)
        assert s.stats()["carriers"]["cmcc"]["mo_acked"] == 1


def test_reset_clears_log_counters_faults_and_pending(sim):
    """reset keeps binds but forgets submits, counters, faults and scheduled receipts."""
    s, clock = sim
    esme = FakeEsme(s, "cmcc")
    esme.bind()
    esme.submit()
    s.apply_fault("cmcc", "nack")
    s.reset()
    clock.advance(1)
    assert esme.received()[-1].command == "submit_sm_resp"
    stats = s.stats()["carriers"]["cmcc"]
    assert (stats["submits"], stats["receipts_pending"], stats["fault"]) == (0, 0, {"mode": "none"})
    assert list(s.submits.since(0)) == []
    assert esme.session.bound
    assert encode  # the codec stays importable for raw-frame tests


def test_logs_hide_passwords_numbers_and_text(sim):
    """Info-level events never carry a password, a full phone number or message text."""
    import structlog.testing
    s, clock = sim
    with structlog.testing.capture_logs() as events:
        esme = FakeEsme(s, "cmcc")
        esme.bind(password="wrong-pw")
        esme.bind()
        esme.submit(to="13812345678", text=b"secret text")
        clock.advance(1)
        s.carriers["cmcc"].inject_mo(MoRequest("cmcc", "13812345678", "10690001", "secret text"))
        esme.send("unbind")
    assert {e["event"] for e in events} >= {"sim.bind_refused", "sim.bind", "sim.mo", "sim.unbind"}
    for event in events:
        if event["log_level"] == "debug":
            continue
        flat = repr(event)
        assert "pw" not in flat and "13812345678" not in flat and "secret" not in flat, event
