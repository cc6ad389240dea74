"""MO senders that are not phone numbers: kept, forwarded flagged, never blacklisted."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs
from twisted.internet.task import Clock

from bridge.mo import MoHandler, valid_mo_source
from bridge.store import Store
from tests.unit.test_mo import (  # noqa: F401 (fixtures used by name)
    CHANNEL,
    USER_E164,
    _clock,
    _config,
    _handler,
    _opener,
    _pushes,
    _store,
    blacklist,
    blacklisted,
    deliver,
    list_mo,
    ucs2,
    uplinks,
)


class TestValidSource:
    @pytest.mark.parametrize(("raw", "valid"), [
        ("13800138000", True), ("+8613800138000", True), ("10086", True), ("123", True),
        ("abc\xff\xfe", False), ("abcÿþ", False), ("", False), ("+", False), ("12", False),
        ("1" * 21, False), ("+86 138", False), ("١٢٣٤٥", False), ("++123", False),
    ])
    def test_digits_with_optional_plus(self, raw: str, valid: bool) -> None:
        assert valid_mo_source(raw) is valid


class TestGarbageSender:
    def test_unsubscribe_from_garbage_is_stored_and_pushed_not_blacklisted(
            self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """"T" from abc\\xff\\xfe: the MO is kept and uplinked, flagged; the blacklist stays empty."""
        with capture_logs() as logs:
            deliver(handler, "cmcc", ucs2("T", source="abc\xff\xfe"))
        assert blacklist(store, None) == []
        (mo,) = list_mo(store)
        assert mo.unsubscribe is True
        (push,) = uplinks(store, clock)
        payload = json.loads(push.payload)
        assert payload["fromInvalid"] is True and payload["body"] == "T"
        assert {"mo.invalid_source", "mo.unsubscribe_invalid_source"} <= {e["event"] for e in logs}

    def test_valid_sender_payload_unchanged(self, handler: MoHandler, store: Store, clock: Clock) -> None:
        """A real number still unsubscribes and its uplink has exactly the contract's fields."""
        deliver(handler, "cmcc", ucs2("T"))
        assert blacklisted(store, CHANNEL, USER_E164)
        payload = json.loads(uplinks(store, clock)[0].payload)
        assert set(payload) == {"smsMsgId", "from", "to", "body", "createTime"}
