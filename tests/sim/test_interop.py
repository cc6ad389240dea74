"""Interop: smpplib's own blocking Client, an ESME we did not write, against `smsc-sim run`.

One simulator child process (port 0 everywhere) serves the module; every test
resets it through the control API and closes its binds. All waits are conditions
with deadlines.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys

import pytest
from smpplib import consts, exceptions, gsm, smpp
from smpplib.client import Client

from carriers.profiles import canonical_message_id, load_profiles

from .simproc import REPO, SimProcess, wait_for

PROFILES, _ = load_profiles()
CONFIG = """
[sim]
control_port = 0
receipt_delay_ms = [0, 20]
retry_delay_s = 0.2
response_timeout_s = 2
[sim.carriers.cmcc]
port = 0
[sim.carriers.cucc]
port = 0
[sim.carriers.ctcc]
port = 0
window = 4
[sim.carriers.cbn]
port = 0
tps = 10
[sim.carriers.intl]
port = 0
"""
RECIPIENTS = {"cmcc": "13800138000", "cucc": "13012345678", "ctcc": "13312345678",
              "cbn": "19212345678", "intl": "447700900123"}
PASSWORDS = {"cmcc": "cmcc-pw", "cucc": "cucc-pw", "ctcc": "ctcc-pw", "cbn": "cbn-pw", "intl": "intl-pw"}
ID_IN_TEXT = re.compile(rb"id:(\S+) ")


class Esme:
    """smpplib Client plus a record of every PDU it read."""

    def __init__(self, port: int) -> None:
        self.client = Client("127.0.0.1", port, timeout=0.5, allow_unknown_opt_params=True)
        self.seen: list = []
        self.delivered: list = []
        self.responses: list = []
        self.errors: list = []
        self.refuse_first_delivery = False
        read = self.client.read_pdu

        def recording_read():
            pdu = read()
            self.seen.append(pdu)
            return pdu

        self.client.read_pdu = recording_read
        self.client.set_message_received_handler(self._received)
        self.client.set_message_sent_handler(lambda pdu: self.responses.append(pdu))
        self.client.set_error_pdu_handler(lambda pdu: self.errors.append(pdu))
        self.client.connect()

    def _received(self, pdu):
        self.delivered.append(pdu)
        if self.refuse_first_delivery:
            self.refuse_first_delivery = False
            return consts.SMPP_ESME_RSYSERR
        return None

    def bind(self, carrier: str, kind: str = "transceiver", password: str | None = None):
        method = getattr(self.client, f"bind_{kind}")
        return method(system_id=carrier, password=password or PASSWORDS[carrier])

    def pump_until(self, condition, timeout: float = 10.0, what: str = "PDUs"):
        def step():
            if condition():
                return True
            self.client.read_once()
            return condition()
        return wait_for(step, timeout, what)

    def barrier(self) -> None:
        """enquire_link round trip: the SMSC answered everything we sent before it."""
        probe = smpp.make_pdu("enquire_link", client=self.client)
        self.client.send_pdu(probe)
        self.pump_until(lambda: any(p.command == "enquire_link_resp" and p.sequence == probe.sequence
                                    for p in self.seen), what="enquire_link_resp")

    def close(self) -> None:
        try:
            if self.client.state != consts.SMPP_CLIENT_STATE_OPEN and self.client._socket is not None:
                self.client.unbind()
        except (exceptions.PDUError, exceptions.ConnectionError, OSError):
            pass
        self.client.disconnect()


@pytest.fixture(scope="module", name="sim")
def _sim(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    config = base / "sim.toml"
    config.write_text(CONFIG, encoding="utf-8")
    proc = SimProcess(config, base / "sim.log")
    yield proc
    proc.stop()


@pytest.fixture(name="esme")
def _esme(sim):
    """Factory of connected ESMEs; all are closed and the simulator reset afterwards."""
    sim.api("POST", "/reset")
    made: list[Esme] = []

    def make(carrier: str) -> Esme:
        esme = Esme(sim.ports[carrier])
        made.append(esme)
        return esme

    yield make
    for esme in made:
        esme.close()
    sim.api("POST", "/faults", {"carrier": "*", "mode": "none"})
    wait_for(lambda: all(sum(s["binds"].values()) == 0 for s in sim.api("GET", "/stats")[1]["carriers"].values()),
             what="all binds closed")


def _submit(esme: Esme, carrier: str, short_message: bytes, data_coding: int = 0, esm_class: int = 0, **tlvs):
    dest = RECIPIENTS[carrier]
    return esme.client.send_message(
        source_addr_ton=5, source_addr_npi=0, source_addr="10690001",
        dest_addr_ton=1 if carrier == "intl" else 0, dest_addr_npi=1, destination_addr=dest,
        short_message=short_message, data_coding=data_coding, esm_class=esm_class,
        registered_delivery=1, **tlvs)


def _receipt_id(pdu, carrier: str) -> str:
    dialect = PROFILES[carrier].receipt_dialect
    if dialect in ("tlv", "text+tlv"):
        return pdu.receipted_message_id.decode()
    text = pdu.message_payload if dialect == "payload" else pdu.short_message
    return ID_IN_TEXT.search(text).group(1).decode()


class TestEachCarrier:
    @pytest.mark.parametrize("carrier", ["cmcc", "cucc", "ctcc", "cbn", "intl"])
    def test_single_and_concatenated_with_receipts(self, sim, esme, carrier):
        """Bind, submit one short and one 3-part message, get 4 receipts in the carrier's dialect."""
        client = esme(carrier)
        client.bind(carrier)
        mainland = carrier != "intl"
        text = "您的验证码是" * 25 if mainland else "Your code is 123456. " * 19
        encoding = consts.SMPP_ENCODING_ISO10646 if mainland else consts.SMPP_ENCODING_DEFAULT
        if carrier == "cbn":  # Broadnet joins with SAR TLVs instead of a UDH
            parts, coding, _ = gsm.make_parts(text, encoding=encoding, use_udhi=False)
            for seq, part in enumerate(parts, 1):
                _submit(client, carrier, part, coding, sar_msg_ref_num=300, sar_total_segments=len(parts),
                        sar_segment_seqnum=seq)
        else:
            parts, coding, esm_class = gsm.make_parts(text, encoding=encoding)
            for part in parts:
                _submit(client, carrier, part, coding, esm_class)
        assert len(parts) == 3
        _submit(client, carrier, "短信".encode("utf-16-be") if mainland else b"hi", 8 if mainland else 0)
        client.pump_until(lambda: len(client.responses) == 4 and len(client.delivered) == 4, what="4 receipts")

        assert [r.status for r in client.responses] == [0, 0, 0, 0]
        profile = PROFILES[carrier]
        submitted = {canonical_message_id(profile.message_id_dialect, r.message_id.decode())
                     for r in client.responses}
        receipted = {canonical_message_id(profile.receipt_id_dialect, _receipt_id(d, carrier))
                     for d in client.delivered}
        assert receipted == submitted and len(submitted) == 4
        for receipt in client.delivered:
            assert receipt.esm_class == 0x04
            assert receipt.source_addr.decode() == RECIPIENTS[carrier]
            assert receipt.destination_addr.decode() == "10690001"
            has_tlv = receipt.message_state is not None
            assert has_tlv == (profile.receipt_dialect in ("tlv", "text+tlv"))
            if has_tlv:
                assert receipt.message_state == 2
            body = receipt.message_payload if profile.receipt_dialect == "payload" else receipt.short_message
            assert (b"stat:DELIVRD" in (body or b"")) == (profile.receipt_dialect != "tlv")

        _, log = sim.api("GET", f"/submits?carrier={carrier}")
        rows = log["submits"]
        assert "".join(r["text"] for r in rows[:3]) == text
        if carrier == "cbn":
            assert [r["sar"]["seq"] for r in rows[:3]] == [1, 2, 3]
        else:
            assert [(r["udh"]["seq"], r["udh"]["total"]) for r in rows[:3]] == [(1, 3), (2, 3), (3, 3)]
        assert rows[0]["data_coding"] == (8 if mainland else 0)

    def test_receipts_go_to_the_receiver_bind(self, sim, esme):
        """A submit on a transmitter bind is reported on a separate receiver bind of the account."""
        tx, rx = esme("cucc"), esme("cucc")
        tx.bind("cucc", "transmitter")
        rx.bind("cucc", "receiver")
        _submit(tx, "cucc", b"hello")
        tx.pump_until(lambda: tx.responses, what="submit_sm_resp")
        rx.pump_until(lambda: rx.delivered, what="receipt")
        assert _receipt_id(rx.delivered[0], "cucc") == tx.responses[0].message_id.decode()

    def test_refused_receipt_is_redelivered(self, sim, esme):
        """When the ESME answers a receipt with an error, the same receipt comes again."""
        client = esme("cmcc")
        client.refuse_first_delivery = True
        client.bind("cmcc")
        _submit(client, "cmcc", b"hello")
        client.pump_until(lambda: len(client.delivered) == 2, what="redelivered receipt")
        first, second = client.delivered
        assert first.receipted_message_id == second.receipted_message_id
        wait_for(lambda: sim.stats("cmcc")["receipts_acked"] == 1, what="ack counted")


class TestRefusals:
    def test_wrong_password(self, esme):
        """A wrong password makes smpplib's bind raise with ESME_RINVPASWD."""
        with pytest.raises(exceptions.PDUError) as info:
            esme("ctcc").bind("ctcc", password="nope")
        assert info.value.args[1] == consts.SMPP_ESME_RINVPASWD

    def test_bind_limit(self, sim, esme):
        """Broadnet allows two binds; the third gets ESME_RBINDFAIL."""
        first, second, third = esme("cbn"), esme("cbn"), esme("cbn")
        first.bind("cbn")
        second.bind("cbn", "receiver")
        with pytest.raises(exceptions.PDUError) as info:
            third.bind("cbn")
        assert info.value.args[1] == consts.SMPP_ESME_RBINDFAIL
        assert sim.stats("cbn")["bind_failures"] == 1

    def test_tps_limit(self, sim, esme):
        """30 submits at once against 10 TPS: the excess is answered ESME_RTHROTTLED, and counted."""
        client = esme("cbn")
        client.bind("cbn")
        for _ in range(30):
            _submit(client, "cbn", b"burst")
        client.pump_until(lambda: len(client.responses) == 30, what="30 answers")
        statuses = [r.status for r in client.responses]
        throttled = statuses.count(consts.SMPP_ESME_RTHROTTLED)
        assert statuses.count(0) + throttled == 30
        assert 10 <= statuses.count(0) <= 20  # the bucket refills a little while the burst arrives
        assert sim.stats("cbn")["throttled"] == throttled

    def test_window_limit_with_slow_fault(self, sim, esme):
        """ctcc has window 4: with answers slowed, submits beyond 4 outstanding get ESME_RMSGQFUL."""
        sim.api("POST", "/faults", {"carrier": "ctcc", "mode": "slow", "latency_ms": 1000})
        client = esme("ctcc")
        client.bind("ctcc")
        for _ in range(6):
            _submit(client, "ctcc", b"w")
        client.pump_until(lambda: len(client.responses) == 6, what="6 answers")
        statuses = [r.status for r in client.responses]
        assert statuses[:2] == [consts.SMPP_ESME_RMSGQFUL] * 2
        assert statuses[2:] == [0] * 4


class TestMalformed:
    def _raw(self, port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        return sock

    def _read_frame(self, sock: socket.socket) -> tuple[int, int, int, int]:
        header = b""
        while len(header) < 16:
            chunk = sock.recv(16 - len(header))
            assert chunk, "connection closed before a PDU"
            header += chunk
        return struct.unpack(">LLLL", header)

    def test_bad_length_then_disconnect_others_unaffected(self, sim, esme):
        """command_length 8: generic_nack then close; a bound smpplib client keeps submitting."""
        good = esme("cmcc")
        good.bind("cmcc")
        with self._raw(sim.ports["cmcc"]) as sock:
            sock.sendall(struct.pack(">LLLL", 8, 4, 0, 42))
            length, command_id, status, seq = self._read_frame(sock)
            assert (command_id, status) == (0x80000000, consts.SMPP_ESME_RINVCMDLEN)
            assert sock.recv(16) == b""
        _submit(good, "cmcc", b"still here")
        good.pump_until(lambda: good.responses, what="submit_sm_resp")
        assert good.responses[0].status == 0

    def test_unknown_command_and_truncated_body(self, sim):
        """Unknown command_id and a truncated body each get generic_nack; the session stays usable."""
        with self._raw(sim.ports["cucc"]) as sock:
            sock.sendall(struct.pack(">LLLL", 16, 0x0000ABCD, 0, 7))
            assert self._read_frame(sock)[1:] == (0x80000000, consts.SMPP_ESME_RINVCMDID, 7)
            body = b"cucc\x00cu"
            sock.sendall(struct.pack(">LLLL", 16 + len(body), 0x09, 0, 8) + body)
            _, command_id, status, seq = self._read_frame(sock)
            assert (command_id, seq) == (0x80000000, 8) and status != 0
            sock.sendall(struct.pack(">LLLL", 16, 0x15, 0, 9))
            assert self._read_frame(sock)[1:] == (0x80000015, 0, 9)


class TestFaults:
    def test_no_response(self, sim, esme):
        """no_response: the submit is logged but unanswered, while enquire_link still works."""
        client = esme("cmcc")
        client.bind("cmcc")
        sim.api("POST", "/faults", {"carrier": "cmcc", "mode": "no_response"})
        _submit(client, "cmcc", b"void")
        client.barrier()
        assert client.responses == []
        assert sim.api("GET", "/submits?carrier=cmcc")[1]["submits"][0]["status"] is None

    def test_nack(self, sim, esme):
        """nack: the submit is answered with generic_nack."""
        client = esme("cucc")
        client.bind("cucc")
        sim.api("POST", "/faults", {"carrier": "*", "mode": "nack"})
        sent = _submit(client, "cucc", b"x")
        client.pump_until(lambda: client.errors, what="generic_nack")
        assert client.errors[0].command == "generic_nack"
        assert client.errors[0].sequence == sent.sequence

    def test_drop(self, sim, esme):
        """drop: the SMSC closes the TCP connection under a bound client."""
        client = esme("intl")
        client.bind("intl")
        _, body = sim.api("POST", "/faults", {"carrier": "intl", "mode": "drop"})
        assert body["dropped"] == 1
        with pytest.raises(exceptions.ConnectionError):
            client.pump_until(lambda: False, timeout=5, what="disconnect")

    def test_refuse_binds(self, sim, esme):
        """refuse_binds: binds fail with ESME_RBINDFAIL until the fault is cleared."""
        sim.api("POST", "/faults", {"carrier": "ctcc", "mode": "refuse_binds"})
        with pytest.raises(exceptions.PDUError) as info:
            esme("ctcc").bind("ctcc")
        assert info.value.args[1] == consts.SMPP_ESME_RBINDFAIL
        sim.api("POST", "/faults", {"carrier": "ctcc", "mode": "none"})
        esme("ctcc").bind("ctcc")


class TestMo:
    def test_long_ucs2_mo_out_of_order(self, sim, esme):
        """A 3-part Chinese MO arrives as UCS-2 UDH segments in the asked order and joins back."""
        client = esme("cmcc")
        client.bind("cmcc", "receiver")
        text = "回复退订，谢谢您的支持！" * 15
        code, body = sim.api("POST", "/mo", {"carrier": "cmcc", "from": "13800138000", "to": "10690001",
                                             "text": text, "concat": "udh8", "order": [2, 3, 1]})
        assert (code, body["segments"]) == (200, 3)
        client.pump_until(lambda: len(client.delivered) == 3, what="3 MO segments")
        parts = []
        for pdu in client.delivered:
            sm = pdu.short_message
            assert pdu.esm_class == 0x40 and pdu.data_coding == 8
            assert sm[:3] == b"\x05\x00\x03" and sm[4] == 3
            parts.append((sm[5], sm[6:]))
        assert [seq for seq, _ in parts] == [2, 3, 1]
        assert b"".join(p for _, p in sorted(parts)).decode("utf-16-be") == text
        wait_for(lambda: sim.stats("cmcc")["mo_acked"] == 3, what="MO acks counted")

    def test_mo_without_receiver_is_409(self, sim, esme):
        """With only a transmitter bound, POST /mo answers 409."""
        esme("cucc").bind("cucc", "transmitter")
        code, body = sim.api("POST", "/mo", {"carrier": "cucc", "from": "13012345678", "to": "1069",
                                             "text": "hi"})
        assert code == 409 and "no receiver" in body["error"]


class TestProcess:
    def test_sigterm_unbinds_and_exits_cleanly(self, tmp_path):
        """SIGTERM sends unbind to bound ESMEs, then the process exits 0 and logs sim.stopped."""
        config = tmp_path / "sim.toml"
        config.write_text(CONFIG, encoding="utf-8")
        proc = SimProcess(config, tmp_path / "sim.log")
        try:
            assert set(proc.ports) == {"cmcc", "cucc", "ctcc", "cbn", "intl"} and proc.control > 0
            assert proc.ready["event"] == "ready"
            client = Esme(proc.ports["cmcc"])
            client.bind("cmcc")
            proc.proc.send_signal(signal.SIGTERM)
            unbind = client.pump_until(
                lambda: next((p for p in client.seen if p.command == "unbind"), None), what="unbind")
            resp = smpp.make_pdu("unbind_resp", client=client.client)
            resp.sequence = unbind.sequence
            client.client.send_pdu(resp)
            assert proc.proc.wait(15) == 0
            client.client.disconnect()
        finally:
            proc.stop()
        assert '"sim.stopped"' in proc.stderr()

    def test_sigint_exits_cleanly(self, tmp_path):
        """SIGINT (Ctrl-C) stops the simulator with exit 0 and no traceback."""
        config = tmp_path / "sim.toml"
        config.write_text(CONFIG, encoding="utf-8")
        proc = SimProcess(config, tmp_path / "sim.log")
        assert proc.stop(signal.SIGINT) == 0
        assert "Traceback" not in proc.stderr()

    def test_port_in_use_is_one_line_exit_1(self, tmp_path):
        """A port already taken ends the process with exit 1 and one 'cannot listen' line."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            config = tmp_path / "sim.toml"
            config.write_text(CONFIG.replace("[sim.carriers.cmcc]\nport = 0", f"[sim.carriers.cmcc]\nport = {port}"),
                              encoding="utf-8")
            done = subprocess.run([sys.executable, "-m", "carriers.sim.cli", "run", "--config", str(config)],
                                  cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                  capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert done.returncode == 1
        assert done.stdout == ""
        assert f"smsc-sim: cannot listen on 127.0.0.1:{port}:" in done.stderr
        assert "Traceback" not in done.stderr
