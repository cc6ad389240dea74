"""Control API over an in-memory HTTP client (treq's StubTreq), no sockets."""

from __future__ import annotations

import json

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred

from carriers.sim.control import ControlResource

from .helpers import FakeEsme, make_simulator


def result_of(d: Deferred):
    """The result of an already fired Deferred; fail the test if it has not fired."""
    box: list = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


class Api:
    def __init__(self, sim):
        self.stub = StubTreq(ControlResource(sim))

    def call(self, method: str, path: str, body: object = None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        d = self.stub.request(method, "http://127.0.0.1:8471" + path, data=data)
        self.stub.flush()
        response = result_of(d)
        content = result_of(response.content())
        return response.code, json.loads(content)


@pytest.fixture(name="env")
def _env(tmp_path):
    sim, clock = make_simulator(tmp_path, "[sim]\nreceipt_delay_ms = [0, 0]\nenquire_link_s = 0\n")
    return sim, clock, Api(sim)


class TestSubmits:
    def test_lists_decoded_submits_with_filters(self, env):
        """GET /submits returns decoded rows and honours carrier, since, limit and accepted."""
        sim, _, api = env
        a, b = FakeEsme(sim, "cmcc"), FakeEsme(sim, "cucc")
        a.bind()
        b.bind()
        a.submit(text=b"one")
        b.submit(text=b"two")
        a.submit(to="bad", text=b"three")
        code, body = api.call("GET", "/submits")
        assert code == 200 and body["total"] == 3 and body["next"] == 3
        assert [r["text"] for r in body["submits"]] == ["one", "two", "three"]
        row = body["submits"][0]
        assert {k: row[k] for k in ("carrier", "system_id", "destination_addr", "data_coding",
                                    "registered_delivery", "udh", "status")} == {
            "carrier": "cmcc", "system_id": "cmcc", "destination_addr": "13800138000",
            "data_coding": 0, "registered_delivery": 1, "udh": None, "status": 0}
        assert row["message_id"]
        _, only = api.call("GET", "/submits?carrier=cmcc&accepted=1")
        assert [r["text"] for r in only["submits"]] == ["one"]
        _, later = api.call("GET", "/submits?since=1&limit=1")
        assert [r["text"] for r in later["submits"]] == ["two"] and later["next"] == 2

    def test_ring_buffer_is_bounded(self, tmp_path):
        """The log keeps the newest submits_log_size rows and a running total."""
        sim, _ = make_simulator(tmp_path, "[sim]\nsubmits_log_size = 2\n")
        esme = FakeEsme(sim, "cmcc")
        esme.bind()
        for text in (b"a", b"b", b"c"):
            esme.submit(text=text)
        _, body = Api(sim).call("GET", "/submits")
        assert body["total"] == 3 and body["first_index"] == 1
        assert [r["text"] for r in body["submits"]] == ["b", "c"]

    def test_bad_query(self, env):
        """A non-numeric since or an unknown carrier is a clear 400/404."""
        _, _, api = env
        assert api.call("GET", "/submits?since=x") == (400, {"error": "since: expected a non-negative integer, got 'x'"})
        code, body = api.call("GET", "/submits?carrier=zz")
        assert code == 404 and "zz" in body["error"]


class TestFaults:
    def test_set_and_clear(self, env):
        """POST /faults switches a mode on one or all carriers; GET /faults shows it."""
        sim, _, api = env
        code, body = api.call("POST", "/faults", {"carrier": "*", "mode": "slow", "latency_ms": [10, 20]})
        assert code == 200 and body["carriers"] == ["cmcc", "cucc", "ctcc", "cbn", "intl"]
        assert body["faults"]["cbn"] == {"mode": "slow", "latency_ms": [10, 20], "receipts_first": False}
        api.call("POST", "/faults", {"carrier": "cbn", "mode": "none"})
        _, faults = api.call("GET", "/faults")
        assert faults["faults"]["cbn"] == {"mode": "none"} and faults["faults"]["cmcc"]["mode"] == "slow"

    def test_drop_reports_count(self, env):
        """The drop action answers how many connections it closed."""
        sim, _, api = env
        FakeEsme(sim, "ctcc").bind()
        _, body = api.call("POST", "/faults", {"carrier": "ctcc", "mode": "drop"})
        assert body["dropped"] == 1

    @pytest.mark.parametrize(("body", "code", "needle"), [
        ({"carrier": "cmcc", "mode": "boom"}, 400, "mode: expected one of"),
        ({"carrier": "cmcc"}, 400, "required"),
        ({"carrier": "nope", "mode": "none"}, 404, "unknown carrier"),
        ({"carrier": "cmcc", "mode": "nack", "status": "x"}, 400, "status"),
        ({"carrier": "cmcc", "mode": "none", "extra": 1}, 400, "extra: unknown field"),
    ])
    def test_bad_requests(self, env, body, code, needle):
        """Bad fault requests get a 4xx naming the field."""
        _, _, api = env
        got, answer = api.call("POST", "/faults", body)
        assert got == code and needle in answer["error"]

    def test_bad_json(self, env):
        """A body that is not JSON is a 400 saying so."""
        _, _, api = env
        code, body = api.call("POST", "/faults", raw=b"{nope")
        assert code == 400 and body["error"].startswith("body: not valid JSON")


class TestMo:
    def test_mo_sent(self, env):
        """POST /mo answers the segment count and the receiver gets the deliver_sm."""
        sim, _, api = env
        esme = FakeEsme(sim, "cucc")
        esme.bind("receiver")
        code, body = api.call("POST", "/mo", {"carrier": "cucc", "from": "13012345678", "to": "106900",
                                               "text": "退订"})
        assert (code, body) == (200, {"carrier": "cucc", "segments": 1})
        (mo,) = esme.received()
        assert mo.get("short_message").decode("utf-16-be") == "退订"
        assert api.call("GET", "/stats")[1]["carriers"]["cucc"]["mo_sent"] == 1

    def test_no_receiver_is_409(self, env):
        """An MO with no receiver bound is a 409 with a clear error."""
        _, _, api = env
        code, body = api.call("POST", "/mo", {"carrier": "cmcc", "from": "1", "to": "2", "text": "x"})
        assert code == 409 and "no receiver" in body["error"]

    @pytest.mark.parametrize(("body", "needle"), [
        ({"carrier": "intl", "from": "1", "to": "2", "text": "x"}, "carries no MO"),
        ({"carrier": "cmcc", "from": "1", "to": "2", "text": ""}, "text"),
        ({"carrier": "cmcc", "from": "1", "to": "2", "text": "x", "concat": "udh7"}, "concat"),
        ({"carrier": "cmcc", "from": "1", "to": "2", "text": "x", "order": "321"}, "order"),
        ({"carrier": "cmcc", "to": "2", "text": "x"}, "from"),
    ])
    def test_bad_mo(self, env, body, needle):
        """Bad MO requests are 400 naming the field."""
        _, _, api = env
        code, answer = api.call("POST", "/mo", body)
        assert code == 400 and needle in answer["error"]


class TestStatsAndReset:
    def test_stats_shape(self, env):
        """GET /stats reports binds by type, submits, throttled and receipt counters per carrier."""
        sim, clock, api = env
        esme = FakeEsme(sim, "cmcc")
        esme.bind("transceiver")
        esme.submit()
        clock.advance(0)
        _, stats = api.call("GET", "/stats")
        cmcc = stats["carriers"]["cmcc"]
        assert cmcc["binds"] == {"transmitter": 0, "receiver": 0, "transceiver": 1}
        assert (cmcc["submits"], cmcc["accepted"], cmcc["receipts_sent"], cmcc["receipts_pending"]) == (1, 1, 1, 1)
        assert {"throttled", "nacks", "bind_attempts", "bind_failures", "mo_sent", "receipts_acked"} <= set(cmcc)
        assert stats["submits_total"] == 1

    def test_reset(self, env):
        """POST /reset empties the log and counters."""
        sim, _, api = env
        esme = FakeEsme(sim, "cmcc")
        esme.bind()
        esme.submit()
        assert api.call("POST", "/reset") == (200, {"ok": True})
        assert api.call("GET", "/submits")[1]["submits"] == []
        assert api.call("GET", "/stats")[1]["carriers"]["cmcc"]["submits"] == 0

    def test_unknown_path_and_method(self, env):
        """Unknown paths are 404 and wrong methods 405."""
        _, _, api = env
        assert api.call("GET", "/nope")[0] == 404
        assert api.call("GET", "/mo")[0] == 405
