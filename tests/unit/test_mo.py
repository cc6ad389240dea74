"""Tests for bridge.mo: MO decoding, reassembly, channel lookup, unsubscribe and uplink push."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from twisted.internet.task import Clock

from bridge.config import BridgeConfig, ChannelConfig, load_config
from bridge.encoder import ConcatRefCounter, Segment, encode_message
from bridge.finaliser import iso_time
from bridge.mo import DOWNLINK_WINDOW_S, MoHandler, MoPart, decode_mo, longest_channel, part_key
from bridge.models import InboundMessage, NewMessage, OutboxItem
from bridge.smpp import codec
from bridge.store import Store, result_of
from bridge.store.records import BlacklistEntry, MoRecord
from bridge.store.sqlite import open_sqlite
from bridge.textcodec import encode_gsm7
from tests.conftest import Backend
from tests.storeopen import Opener

START = 1_750_000_000.0
USER = "13800138000"
USER_E164 = "+8613800138000"
CHANNEL = "10690001"
OTHER_CHANNEL = "10690002"
UPLINK_URL = "http://127.0.0.1:9000/uplink"
# 66 CJK characters, then an emoji whose surrogate pair would straddle the first part
# boundary (67 units with UDH8/SAR, 66 with UDH16): the encoder moves it whole.
LONG_TEXT = "回" * 66 + "😀" + "退订请回复T，感谢您的支持与信任。" * 5 + "再见👋"

TEST_TOML = """
[rules]
mo_reassembly_ttl_s = 60

[carriers.cmcc]
[carriers.ctcc]

[[apps]]
id = "short"
token = "short-token"
uplink_url = "http://short.example/uplink"

[[apps]]
id = "long"
token = "long-token"
uplink_url = "http://long.example/uplink"

[[apps]]
id = "silent"
token = "silent-token"

[[channels]]
number = "10690"
signature = "Short"
app = "short"

[[channels]]
number = "1069000"
signature = "Long"
app = "long"

[[channels]]
number = "1069888"
signature = "Silent"
app = "silent"
"""


def mo_pdu(payload: bytes, *, data_coding: int = 8, esm_class: int = 0, source: str = USER,
           destination: str = CHANNEL + "12", **extra: object) -> InboundMessage:
    """A deliver_sm MO as the link hands it over: encoded, decoded (real field types), protocol-free."""
    fields: dict[str, object] = {"source_addr": source, "destination_addr": destination,
                                 "esm_class": esm_class, "data_coding": data_coding,
                                 "short_message": payload}
    fields.update(extra)
    return InboundMessage.from_fields(codec.decode(codec.encode(codec.Pdu("deliver_sm", 7, 0, fields))).fields)


def ucs2(text: str, **kwargs: object) -> InboundMessage:
    return mo_pdu(text.encode("utf-16-be"), data_coding=8, **kwargs)


def segment_pdu(seg: Segment, **kwargs: object) -> InboundMessage:
    """One encoder segment as an MO part; SAR numbering goes in TLVs."""
    extra: dict[str, object] = {}
    if seg.sar:
        extra = {"sar_msg_ref_num": seg.ref, "sar_total_segments": seg.total, "sar_segment_seqnum": seg.seq}
    return mo_pdu(seg.short_message, data_coding=seg.data_coding, esm_class=seg.esm_class, **extra, **kwargs)


def long_segments(concat: str, text: str = LONG_TEXT, start: int = 0) -> tuple[Segment, ...]:
    segments = encode_message(text, destination=CHANNEL, mainland=True, concat=concat,
                              refs=ConcatRefCounter(start=start)).segments
    assert len(segments) == 3
    return segments


def uplinks(store: Store, clock: Clock) -> list[OutboxItem]:
    return [item for item in result_of(store.outbox.due(clock.seconds() + 1e9, 1000)) if item.kind == "uplink"]


def deliver(handler: MoHandler, carrier: str, message: InboundMessage) -> bool:
    """One MO deliver_sm through the handler; True if a push was queued (raises what the store raised)."""
    return result_of(handler.on_mo(carrier, message))


def expire(handler: MoHandler) -> int:
    return result_of(handler.expire_stale())


def list_mo(store: Store) -> list[MoRecord]:
    """Stored replies, newest first."""
    return result_of(store.mo.recent())


def insert(store: Store, messages: list[NewMessage]) -> None:
    result_of(store.messages.insert(messages))


def blacklisted(store: Store, channel: str, number: str) -> bool:
    return number in result_of(store.blacklist.listed(channel, [number]))


def blacklist_entry(store: Store, channel: str, number: str) -> BlacklistEntry | None:
    return result_of(store.blacklist.get(channel, number))


def blacklist(store: Store, channel: str | None) -> list[BlacklistEntry]:
    return result_of(store.blacklist.entries(channel))


def downlink(mid: str, channel: str, recipient: str, created_at: float) -> NewMessage:
    return NewMessage(id=mid, app_id="demo", channel=channel, recipient=recipient, carrier="cmcc",
                      klass="notification", text="hello", content_hash="h", status_callback="",
                      extend="", created_at=created_at, state="final", status="DELIVRD", org_code="DELIVRD",
                      release_at=None, segments=(), counted=True)


class PushCounter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


@pytest.fixture(name="clock")
def _clock() -> Clock:
    clock = Clock()
    clock.advance(START)
    return clock


@pytest.fixture(name="config", scope="module")
def _config() -> BridgeConfig:
    return load_config()


@pytest.fixture(name="opener")
def _opener(store_backend: Backend, clock: Clock, tmp_path: Path) -> Iterator[Opener]:
    opener = Opener(store_backend, clock, tmp_path / "bridge.db", commit_interval_s=0.005)
    yield opener
    opener.close_all()


@pytest.fixture(name="store")
def _store(opener: Opener) -> Store:
    """The store on each backend (SQLite in memory, with its group commit on the clock)."""
    return opener.open(memory=True)


@pytest.fixture(name="pushes")
def _pushes() -> PushCounter:
    return PushCounter()


@pytest.fixture(name="handler")
def _handler(config: BridgeConfig, store: Store, clock: Clock, pushes: PushCounter) -> MoHandler:
    return MoHandler(config, store, now=clock.seconds, on_push=pushes)


@pytest.fixture(name="test_config")
def _test_config(tmp_path: Path) -> BridgeConfig:
    path = tmp_path / "bridge.toml"
    path.write_text(TEST_TOML, encoding="utf-8")
    return load_config(path)


class TestDecodeMo:
    @pytest.mark.parametrize(
        ("payload", "data_coding", "dc0", "expected"),
        [
            (encode_gsm7("Hi @ 5€ {ok}"), 0, "gsm7", "Hi @ 5€ {ok}"),
            (b"Hi @", 0, "ascii", "Hi @"),
            (b"caf\xe9", 0, "latin1", "café"),
            (b"caf\xe9 \xa3", 3, "gsm7", "café £"),
            ("回复😀".encode("utf-16-be"), 8, "gsm7", "回复😀"),
        ],
    )
    def test_text_by_data_coding(self, payload: bytes, data_coding: int, dc0: str, expected: str) -> None:
        """The text is decoded by data_coding, with data_coding 0 as the carrier profile means it."""
        part = decode_mo(mo_pdu(payload, data_coding=data_coding), dc0)
        assert part == MoPart(USER, CHANNEL + "12", expected, None, 0, 1, 1)

    def test_message_payload(self) -> None:
        """Text carried in message_payload (sm_length 0) is used."""
        pdu = mo_pdu(b"", message_payload="退订".encode("utf-16-be"))
        assert decode_mo(pdu, "gsm7").text == "退订"

    @pytest.mark.parametrize("concat", ["udh8", "udh16", "sar"])
    def test_concatenation(self, concat: str) -> None:
        """UDH 8-bit and 16-bit references and SAR TLVs give kind, reference and numbering."""
        parts = [decode_mo(segment_pdu(seg), "gsm7") for seg in long_segments(concat, start=300)]
        ref = 300 % 256 if concat == "udh8" else 300
        assert [(p.ref_kind, p.ref, p.total, p.seq) for p in parts] == [(concat, ref, 3, s) for s in (1, 2, 3)]
        assert "".join(p.text for p in parts) == LONG_TEXT

    @pytest.mark.parametrize(("total", "seq"), [(3, 0), (3, 4), (0, 0), (1, 1)])
    def test_sar_without_usable_numbering_is_whole(self, total: int, seq: int) -> None:
        """Nonsense or single-part SAR numbering is a whole reply, not one that waits forever."""
        pdu = ucs2("T", sar_msg_ref_num=9, sar_total_segments=total, sar_segment_seqnum=seq)
        assert decode_mo(pdu, "gsm7").ref_kind is None

    def test_part_key(self) -> None:
        """Parts of one reply share a key; another source, reference kind or total does not."""
        base = MoPart(USER, CHANNEL, "a", "udh8", 5, 3, 1)
        assert part_key("cmcc", base) == part_key("cmcc", dataclasses.replace(base, seq=2, text="b"))
        others = [dataclasses.replace(base, source="13900139000"), dataclasses.replace(base, ref_kind="sar"),
                  dataclasses.replace(base, total=2), dataclasses.replace(base, destination=CHANNEL + "1")]
        assert len({part_key("cmcc", base), part_key("cucc", base), *(part_key("cmcc", o) for o in others)}) == 6


class TestPlainMo:
    def test_stored_and_pushed(self, handler: MoHandler, store: Store, clock: Clock, pushes: PushCounter) -> None:
        """A single reply is stored with its own id and queued to the app's uplink URL in the push format."""
        deliver(handler, "cmcc", ucs2("你好，收到", destination=CHANNEL + "0042"))
        (mo,) = list_mo(store)
        assert (mo.source, mo.destination, mo.channel, mo.app_id) == (
            USER_E164, CHANNEL + "0042", CHANNEL, "demo")
        assert (mo.incomplete, mo.unsubscribe, mo.downlink_id) == (False, False, None)
        (item,) = uplinks(store, clock)
        assert (item.ref_id, item.url) == (mo.id, UPLINK_URL)
        assert item.payload == json.dumps(
            {"smsMsgId": mo.id, "from": USER_E164, "to": CHANNEL + "0042", "body": "你好，收到",
             "createTime": iso_time(START)}, ensure_ascii=False, separators=(",", ":"))
        assert pushes.calls == 1

    @pytest.mark.parametrize(
        ("payload", "data_coding", "carrier", "expected"),
        [
            (encode_gsm7("Yes @ 10€"), 0, "cmcc", "Yes @ 10€"),
            (b"Yes @ 10", 0, "ctcc", "Yes @ 10"),
            (b"Oui, tr\xe8s bien", 3, "cmcc", "Oui, très bien"),
            ("好的👍🏻".encode("utf-16-be"), 8, "cmcc", "好的👍🏻"),
        ],
    )
    def test_body_decoded(self, handler: MoHandler, store: Store, clock: Clock, payload: bytes,
                          data_coding: int, carrier: str, expected: str) -> None:
        """GSM-7 (per carrier profile), Latin-1 and UCS-2 with surrogate pairs reach the push as Unicode."""
        deliver(handler, carrier, mo_pdu(payload, data_coding=data_coding))
        assert list_mo(store)[0].body == expected
        assert json.loads(uplinks(store, clock)[0].payload)["body"] == expected

    def test_own_id_per_mo(self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """Every MO gets a new smsMsgId, distinct from the downlink it answers."""
        insert(store, [downlink("dl-1", CHANNEL, USER_E164, START - 60)])
        deliver(handler, "cmcc", ucs2("one"))
        deliver(handler, "cmcc", ucs2("two"))
        ids = {mo.id for mo in list_mo(store)}
        assert len(ids) == 2 and "dl-1" not in ids
        assert {item.ref_id for item in uplinks(store, clock)} == ids

    def test_unparseable_source_kept(self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """A source that is not a phone number is kept as the SMSC wrote it, not dropped."""
        deliver(handler, "cmcc", ucs2("hi", source="10086"))
        assert list_mo(store)[0].source == "10086"
        assert json.loads(uplinks(store, clock)[0].payload)["from"] == "10086"

    def test_logs_hide_body_and_number(self, handler: MoHandler) -> None:
        """Info logs carry neither the reply text nor the sender's full number."""
        with capture_logs() as logs:
            deliver(handler, "cmcc", ucs2("secret words", destination=CHANNEL))
            deliver(handler, "cmcc", ucs2("T", destination=CHANNEL))
        shown = [str(v) for e in logs if e["log_level"] != "debug" for v in e.values()]
        assert not any(USER in v or "secret" in v for v in shown)
        assert {"mo.stored", "mo.unsubscribed"} <= {e["event"] for e in logs}

    def test_stats_are_a_snapshot(self, handler: MoHandler) -> None:
        """stats is a frozen copy that later MOs do not change."""
        before = handler.stats
        deliver(handler, "cmcc", ucs2("hi"))
        with pytest.raises(dataclasses.FrozenInstanceError):
            before.received = 5  # type: ignore[misc]
        assert (before.received, handler.stats.received, handler.stats.stored) == (0, 1, 1)


class TestUnsubscribe:
    @pytest.mark.parametrize("reply", ["t", " R ", "ＴＤ", "退订", "0000", "N", "T。"])
    def test_keyword_blacklists(self, handler: MoHandler, store: Store, clock: Clock, reply: str) -> None:
        """An unsubscribe keyword blacklists the sender on that channel and is still pushed."""
        deliver(handler, "cmcc", ucs2(reply))
        (mo,) = list_mo(store)
        assert mo.unsubscribe is True
        assert blacklist_entry(store, CHANNEL, USER_E164) == BlacklistEntry(CHANNEL, USER_E164, START, mo.id)
        assert not blacklisted(store, OTHER_CHANNEL, USER_E164)
        assert json.loads(uplinks(store, clock)[0].payload)["body"] == reply
        assert handler.stats.unsubscribed == 1

    @pytest.mark.parametrize("reply", ["TT", "T please", "0001", "Thanks", "退订吧"])
    def test_other_replies_do_not(self, handler: MoHandler, store: Store, clock: Clock, reply: str) -> None:
        """Anything beyond a bare keyword is an ordinary reply: pushed, nobody blacklisted."""
        deliver(handler, "cmcc", ucs2(reply))
        assert blacklist(store, None) == []
        assert list_mo(store)[0].unsubscribe is False
        assert len(uplinks(store, clock)) == 1
        assert handler.stats.unsubscribed == 0

    def test_gsm7_keyword(self, handler: MoHandler, store: Store) -> None:
        """A GSM-7 "T" unsubscribes just like a UCS-2 one."""
        deliver(handler, "cmcc", mo_pdu(encode_gsm7("T"), data_coding=0, destination=OTHER_CHANNEL))
        assert blacklisted(store, OTHER_CHANNEL, USER_E164)
        assert not blacklisted(store, CHANNEL, USER_E164)

    def test_repeat_keeps_first_entry(self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """A second unsubscribe leaves the first entry's time and MO id; both replies are pushed."""
        deliver(handler, "cmcc", ucs2("T"))
        first = blacklist_entry(store, CHANNEL, USER_E164)
        clock.advance(30)
        deliver(handler, "cmcc", ucs2("TD"))
        assert blacklist_entry(store, CHANNEL, USER_E164) == first
        assert len(uplinks(store, clock)) == 2

    def test_unknown_channel_not_blacklisted(self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """An unsubscribe to an unknown number is stored as one, but there is no channel to blacklist."""
        deliver(handler, "cmcc", ucs2("T", destination="95555"))
        assert blacklist(store, None) == []
        assert list_mo(store)[0].unsubscribe is True
        assert uplinks(store, clock) == []

    def test_configured_keywords(self, tmp_path: Path, store: Store, clock: Clock) -> None:
        """The keyword list comes from rules.unsubscribe_keywords."""
        path = tmp_path / "kw.toml"
        path.write_text(TEST_TOML.replace("[rules]", '[rules]\nunsubscribe_keywords = ["STOP"]'), encoding="utf-8")
        handler = MoHandler(load_config(path), store, now=clock.seconds)
        deliver(handler, "cmcc", ucs2("T", destination="10690"))
        deliver(handler, "cmcc", ucs2("stop!", destination="10690"))
        assert [row.number for row in blacklist(store, "10690")] == [USER_E164]
        assert sorted(mo.unsubscribe for mo in list_mo(store)) == [False, True]


class TestReassembly:
    @pytest.mark.parametrize("concat", ["udh8", "udh16", "sar"])
    def test_out_of_order(self, handler: MoHandler, store: Store, clock: Clock, pushes: PushCounter,
                          concat: str) -> None:
        """Three UCS-2 parts delivered 3, 1, 2 become one MO with the exact text and one push."""
        segments = long_segments(concat)
        deliver(handler, "cmcc", segment_pdu(segments[2]))
        clock.advance(1)
        deliver(handler, "cmcc", segment_pdu(segments[0]))
        assert list_mo(store) == [] and uplinks(store, clock) == []
        assert handler.stats.parts_pending == 2
        clock.advance(1)
        deliver(handler, "cmcc", segment_pdu(segments[1]))
        (mo,) = list_mo(store)
        assert mo.body == LONG_TEXT and mo.incomplete is False
        (item,) = uplinks(store, clock)
        payload = json.loads(item.payload)
        assert payload["body"] == LONG_TEXT and payload["createTime"] == iso_time(START + 2)
        assert result_of(store.mo.stale_keys(float("inf"))) == []
        assert (handler.stats.received, handler.stats.parts_pending, handler.stats.assembled) == (3, 0, 1)
        assert pushes.calls == 1

    def test_duplicate_part(self, handler: MoHandler, store: Store) -> None:
        """A redelivered part replaces the stored one and is not counted twice."""
        segments = long_segments("udh8")
        deliver(handler, "cmcc", segment_pdu(segments[0]))
        deliver(handler, "cmcc", segment_pdu(segments[0]))
        assert handler.stats.parts_pending == 1
        deliver(handler, "cmcc", segment_pdu(segments[1]))
        deliver(handler, "cmcc", segment_pdu(segments[1]))
        assert list_mo(store) == []
        deliver(handler, "cmcc", segment_pdu(segments[2]))
        assert [mo.body for mo in list_mo(store)] == [LONG_TEXT]
        assert (handler.stats.received, handler.stats.parts_pending, handler.stats.assembled) == (5, 0, 1)

    def test_redelivered_after_assembly(self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """A part redelivered after its reply was assembled is stored, then discarded at expiry, not pushed."""
        segments = long_segments("udh8")
        for seg in segments:
            deliver(handler, "cmcc", segment_pdu(seg))
        clock.advance(1)
        deliver(handler, "cmcc", segment_pdu(segments[2]))
        assert handler.stats.parts_pending == 1
        clock.advance(601)
        assert expire(handler) == 0
        assert (handler.stats.redelivered, handler.stats.parts_pending, handler.stats.incomplete) == (1, 0, 0)
        assert len(list_mo(store)) == 1 and len(uplinks(store, clock)) == 1

    def test_redelivery_forwarded_after_restart(self, opener: Opener, config: BridgeConfig, clock: Clock) -> None:
        """Without the in-process memory (after a restart) a redelivered part is forwarded, never lost."""
        segments = long_segments("udh8")
        store = opener.open()
        handler = MoHandler(config, store, now=clock.seconds)
        result_of(handler.start())
        for seg in (*segments, segments[2]):
            deliver(handler, "cmcc", segment_pdu(seg))
        opener.close(store)
        store = opener.open()
        handler = MoHandler(config, store, now=clock.seconds)
        result_of(handler.start())
        assert handler.stats.parts_pending == 1
        clock.advance(601)
        assert expire(handler) == 1
        assert sorted(mo.incomplete for mo in list_mo(store)) == [False, True]

    def test_identical_repeat_is_a_reply(self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """The same long text sent again under the same reference is a second reply, not a redelivery."""
        for _ in range(2):
            for seg in long_segments("sar"):
                deliver(handler, "cmcc", segment_pdu(seg))
            clock.advance(1)
        assert [mo.body for mo in list_mo(store)] == [LONG_TEXT, LONG_TEXT]
        assert handler.stats.redelivered == 0

    def test_reused_reference_new_reply(self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """A later reply reusing the reference with other text is a new reply, assembled again."""
        other = "新" * 66 + LONG_TEXT[66:]
        for seg in long_segments("udh8"):
            deliver(handler, "cmcc", segment_pdu(seg))
        clock.advance(1)
        for seg in long_segments("udh8", text=other):
            deliver(handler, "cmcc", segment_pdu(seg))
        assert sorted(mo.body for mo in list_mo(store)) == sorted([LONG_TEXT, other])

    def test_sources_not_mixed(self, handler: MoHandler, store: Store) -> None:
        """Two senders using the same reference are reassembled separately."""
        segments = long_segments("udh8")
        other = "13900139000"
        for seg in (segments[0], segments[1]):
            deliver(handler, "cmcc", segment_pdu(seg))
            deliver(handler, "cmcc", segment_pdu(seg, source=other))
        assert list_mo(store) == []
        deliver(handler, "cmcc", segment_pdu(segments[2], source=other))
        assert [mo.source for mo in list_mo(store)] == ["+86" + other]
        assert handler.stats.parts_pending == 2

    def test_restart_between_parts(self, opener: Opener, config: BridgeConfig, clock: Clock) -> None:
        """Parts committed before a restart are joined with the part delivered after it."""
        segments = long_segments("udh16")
        store = opener.open()
        handler = MoHandler(config, store, now=clock.seconds)
        result_of(handler.start())
        deliver(handler, "cmcc", segment_pdu(segments[2]))
        deliver(handler, "cmcc", segment_pdu(segments[0]))
        clock.advance(1)  # group commit, as before the deliver_sm_resp
        opener.close(store)

        store = opener.open()
        handler = MoHandler(config, store, now=clock.seconds)
        result_of(handler.start())   # counts the parts the previous run left waiting
        assert handler.stats.parts_pending == 2
        deliver(handler, "cmcc", segment_pdu(segments[1]))
        clock.advance(1)
        assert [mo.body for mo in list_mo(store)] == [LONG_TEXT]
        assert json.loads(uplinks(store, clock)[0].payload)["body"] == LONG_TEXT
        assert handler.stats.parts_pending == 0

    def test_committed_before_ack(self, config: BridgeConfig, clock: Clock) -> None:
        """SQLite group commit: the part is in the open transaction, durable() fires only once it is committed."""
        store, _ = open_sqlite(":memory:", clock=clock)
        handler = MoHandler(config, store, now=clock.seconds)
        deliver(handler, "cmcc", segment_pdu(long_segments("sar")[0]))
        done = store.durable()
        assert not done.called
        clock.advance(1)
        assert done.called
        result_of(store.close())


class TestExpiry:
    def test_incomplete_forwarded(self, handler: MoHandler, store: Store, clock: Clock,
                                  pushes: PushCounter) -> None:
        """Past the TTL, the parts that arrived are pushed as one MO marked incomplete."""
        ttl = 600.0
        segments = long_segments("udh8")
        deliver(handler, "cmcc", segment_pdu(segments[0]))
        clock.advance(5)
        deliver(handler, "cmcc", segment_pdu(segments[2]))
        clock.advance(ttl - 5)
        assert expire(handler) == 0
        clock.advance(1)
        assert expire(handler) == 1
        expected = LONG_TEXT[:66] + segments[2].short_message[6:].decode("utf-16-be")
        (mo,) = list_mo(store)
        assert (mo.body, mo.incomplete, mo.created_at) == (expected, True, START + 5)
        assert json.loads(uplinks(store, clock)[0].payload)["body"] == expected
        assert (handler.stats.incomplete, handler.stats.assembled, handler.stats.parts_pending) == (1, 0, 0)
        assert pushes.calls == 1
        assert expire(handler) == 0

    def test_configured_ttl(self, test_config: BridgeConfig, store: Store, clock: Clock) -> None:
        """The TTL is rules.mo_reassembly_ttl_s, counted from the first part."""
        handler = MoHandler(test_config, store, now=clock.seconds)
        seg = long_segments("sar")[1]
        deliver(handler, "cmcc", segment_pdu(seg, destination="10690"))
        clock.advance(61)
        assert expire(handler) == 1
        assert list_mo(store)[0].incomplete is True


class TestChannelMatch:
    @pytest.mark.parametrize(
        ("destination", "expected"),
        [("10690", "10690"), ("1069012", "10690"), ("1069000", "1069000"), ("10690001234", "1069000"),
         ("1069001", "10690"), ("1069", None), ("90001", None), ("", None)],
    )
    def test_longest_prefix(self, test_config: BridgeConfig, destination: str, expected: str | None) -> None:
        """The longest configured channel number that prefixes the destination wins."""
        channel = longest_channel(test_config.channels, destination)
        assert (channel.number if channel else None) == expected

    def test_application_of_longest(self, test_config: BridgeConfig, store: Store, clock: Clock) -> None:
        """The matched channel's application gives the uplink URL."""
        handler = MoHandler(test_config, store, now=clock.seconds)
        deliver(handler, "cmcc", ucs2("a", destination="1069000777"))
        deliver(handler, "cmcc", ucs2("b", destination="106907"))
        rows = {mo.destination: (mo.channel, mo.app_id) for mo in list_mo(store)}
        assert rows == {"1069000777": ("1069000", "long"), "106907": ("10690", "short")}
        assert {json.loads(i.payload)["to"]: i.url for i in uplinks(store, clock)} == {
            "1069000777": "http://long.example/uplink", "106907": "http://short.example/uplink"}

    def test_no_guessing_about_106(self, handler: MoHandler, store: Store) -> None:
        """A destination without the configured 106 prefix is not matched by guesswork."""
        deliver(handler, "cmcc", ucs2("hi", destination="90001"))
        assert list_mo(store)[0].channel is None

    def test_app_without_uplink_url(self, test_config: BridgeConfig, store: Store, clock: Clock,
                                    pushes: PushCounter) -> None:
        """An application with no uplink URL still gets its MOs stored and its blacklist applied."""
        handler = MoHandler(test_config, store, now=clock.seconds, on_push=pushes)
        deliver(handler, "cmcc", ucs2("T", destination="1069888"))
        assert list_mo(store)[0].app_id == "silent"
        assert blacklisted(store, "1069888", USER_E164)
        assert uplinks(store, clock) == [] and pushes.calls == 0


class TestUnknownDestination:
    def test_stored_and_counted(self, handler: MoHandler, store: Store, clock: Clock,
                                pushes: PushCounter) -> None:
        """An MO to an unknown number is stored without channel or app, counted, and not pushed."""
        with capture_logs() as logs:
            deliver(handler, "cmcc", ucs2("where am I", destination="95555123"))
        (mo,) = list_mo(store)
        assert (mo.channel, mo.app_id, mo.body) == (None, None, "where am I")
        assert result_of(store.mo.counts()).unknown_channel == 1
        assert handler.stats.unknown_destination == 1 and handler.stats.stored == 1
        assert uplinks(store, clock) == [] and pushes.calls == 0
        assert "mo.unknown_destination" in {e["event"] for e in logs}


class TestDownlinkAssociation:
    def test_exactly_one(self, handler: MoHandler, store: Store) -> None:
        """One recent downlink from the channel to the sender is the one the reply answers."""
        insert(store, [
            downlink("dl-1", CHANNEL, USER_E164, START - 3600),
            downlink("dl-other-channel", OTHER_CHANNEL, USER_E164, START - 60),
            downlink("dl-other-user", CHANNEL, "+8613900139000", START - 60),
            downlink("dl-old", CHANNEL, USER_E164, START - DOWNLINK_WINDOW_S - 1),
        ])
        deliver(handler, "cmcc", ucs2("ok"))
        assert list_mo(store)[0].downlink_id == "dl-1"

    def test_two_is_ambiguous(self, handler: MoHandler, store: Store) -> None:
        """With two recent downlinks from the channel to the sender, no association is stored."""
        insert(store, [downlink("dl-1", CHANNEL, USER_E164, START - 3600),
                               downlink("dl-2", CHANNEL, USER_E164, START - 60)])
        deliver(handler, "cmcc", ucs2("ok"))
        assert list_mo(store)[0].downlink_id is None


class TestUnexpectedCarrier:
    def test_international_mo(self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """An MO from a carrier whose profile has no MO is stored, flagged in stats and still forwarded."""
        with capture_logs() as logs:
            deliver(handler, "intl", mo_pdu(encode_gsm7("hello"), data_coding=0, source="+447700900123"))
        (mo,) = list_mo(store)
        assert (mo.carrier, mo.source, mo.channel) == ("intl", "+447700900123", CHANNEL)
        assert len(uplinks(store, clock)) == 1
        assert handler.stats.unexpected == 1
        assert any(e["event"] == "mo.unexpected" and e["log_level"] == "warning" for e in logs)

    def test_domestic_is_expected(self, handler: MoHandler) -> None:
        """Mainland carriers' MOs are not counted as unexpected."""
        deliver(handler, "cmcc", ucs2("hi"))
        assert handler.stats.unexpected == 0

    def test_config_channel_type(self, config: BridgeConfig) -> None:
        """The default config's channels are what these tests assume."""
        assert config.channels[CHANNEL] == ChannelConfig(CHANNEL, "HUAWEI", "demo")
        assert config.apps["demo"].uplink_url == UPLINK_URL
