"""Channel numbers are config values, not personal data: logs show them, phone numbers stay masked."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from bridge.logs import Redactor, configure_logging, mask_number
from tests.e2e.conftest import _bridge, _e2e_backend, _make_bridge, _receiver  # noqa: F401 (fixtures)
from tests.e2e.harness import CHANNEL, Bridge, Receiver, wait_for

CHANNELS = frozenset({"106900012345", "10690002", "9876543210"})


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class TestMaskNumberWithChannels:
    @pytest.mark.parametrize(("raw", "shown"), [
        ("106900012345", "106900012345"),                     # a channel number
        ("10690002", "10690002"),
        ("9876543210", "9876543210"),                         # any configured channel, exactly
        ("10690002123", "10690002123"),                       # channel + extend (MO destination)
        ("to 106900012345 from +8613812345678", "to 106900012345 from +86*******5678"),
        ("+8613812345678", "+86*******5678"),                 # phone numbers: still masked
        ("13812345678", "*******5678"),
        ("106900021234567", "***********4567"),           # extend longer than 6 digits: masked
        ("98765432101", "*******2101"),                       # only 10... channels take an extend
        ("+10690002", "+1***0002"),                           # with a plus it is a phone number
    ])
    def test_channels_shown_numbers_masked(self, raw: str, shown: str) -> None:
        assert mask_number(raw, CHANNELS) == shown

    def test_without_channels_everything_is_masked(self) -> None:
        assert mask_number("106900012345") == "********2345"


class TestLoggedEvents:
    def test_json_lines_show_the_channel_and_mask_the_recipient(self) -> None:
        """The daemon's logging setup, told the channels, keeps them readable in every field."""
        out = io.StringIO()
        configure_logging("info", "json", True, stream=out, channels=CHANNELS)
        structlog.get_logger("t").info("mo.received", **{"from": "+8613812345678", "to": "10690002",
                                                        "note": "reply to 106900012345"})
        # Every line is JSON; Twisted's own events (other tests' reactor use) may be there too.
        (line,) = [x for x in map(json.loads, out.getvalue().splitlines()) if x.get("event") == "mo.received"]
        assert line["from"] == "+86*******5678"
        assert line["to"] == "10690002"
        assert line["note"] == "reply to 106900012345"

    def test_list_fields_too(self) -> None:
        event = Redactor(True, CHANNELS)(None, "info", {"event": "x", "to": ["10690002", "+8613812345678"]})
        assert event["to"] == ["10690002", "+86*******5678"]


class TestDaemonLogs:
    def test_daemon_shows_channel_and_masks_the_sender(self, bridge: Bridge, receiver: Receiver) -> None:
        """A real daemon logs an unsubscribe MO with its channel readable and the sender masked."""
        status, _ = bridge.sim("POST", "/mo", {"carrier": "cmcc", "from": "8613812345678", "to": CHANNEL, "text": "T"})
        assert status == 200
        wait_for(lambda: receiver.acked("/uplink"), what="the uplink")
        line = wait_for(lambda: [json.loads(x) for x in bridge.log_text().splitlines()
                                 if '"mo.unsubscribed"' in x], what="the mo.unsubscribed log line")[0]
        assert line["channel"] == CHANNEL
        assert line["number"] == "+86*******5678"
        assert "13812345678" not in bridge.log_text()
