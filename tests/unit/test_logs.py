"""Structured logs: JSON lines off a terminal, and redaction of numbers, bodies and secrets."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from bridge.logs import Redactor, configure_logging, mask_number


@pytest.fixture(autouse=True)
def _reset_structlog() -> None:
    yield
    structlog.reset_defaults()


class TestMaskNumber:
    @pytest.mark.parametrize(("raw", "masked"), [
        ("+8613812345678", "+86*******5678"),
        ("8613812345678", "86*******5678"),
        ("13812345678", "*******5678"),
        ("+447700900123", "+44******0123"),
        ("+14155552671", "+1******2671"),
        ("sent to +8613812345678 ok", "sent to +86*******5678 ok"),
        ("12345", "12345"),
    ])
    def test_keeps_country_code_and_last_four(self, raw: str, masked: str) -> None:
        """Only the country code and the last 4 digits of a number survive."""
        assert mask_number(raw) == masked


class TestRedactor:
    def test_masks_numbers_bodies_and_secrets(self) -> None:
        """Bodies become their length, numbers are masked anywhere, secrets are starred."""
        event = Redactor(True)(None, "info", {"event": "x", "to": "+8613812345678", "body": "hello",
                                              "password": "pw", "note": "from 13812345678"})
        assert event == {"event": "x", "to": "+86*******5678", "body": "<redacted 5>", "password": "***",
                         "note": "from *******5678"}

    def test_disabled_redaction_still_hides_secrets(self) -> None:
        """Switching redaction off for debugging shows numbers and bodies, never passwords."""
        event = Redactor(False)(None, "info", {"event": "x", "to": "+8613812345678", "token": "t"})
        assert event == {"event": "x", "to": "+8613812345678", "token": "***"}

    def test_json_lines_off_a_terminal(self) -> None:
        """Without a TTY the logs are one JSON object per line, redacted."""
        out = io.StringIO()
        configure_logging("info", None, True, stream=out)
        structlog.get_logger("t").info("sms.accepted", to="+8613812345678", body="secret text")
        # Every line is JSON (Twisted's own events from other tests' reactor use may be there too).
        lines = [json.loads(raw) for raw in out.getvalue().splitlines()]
        (line,) = [x for x in lines if x.get("event") == "sms.accepted"]
        assert line["to"] == "+86*******5678"
        assert "secret text" not in out.getvalue() and line["level"] == "info"


class TestTwistedLogs:
    def test_twisted_failure_is_one_json_line(self) -> None:
        """A failure Twisted logs itself (here an unhandled error in a Deferred) is JSON, traceback inside."""
        import gc

        from twisted.internet.defer import Deferred
        from twisted.logger import Logger

        out = io.StringIO()
        configure_logging("info", "json", stream=out)
        d: Deferred[None] = Deferred()
        d.errback(ZeroDivisionError("boom for +8613812345678"))
        del d
        gc.collect()
        Logger(namespace="twisted.test").info("plain {what}", what="message")
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        events = [json.loads(line) for line in lines]  # every line is JSON, no plain traceback
        failures = [e for e in events if "ZeroDivisionError" in e.get("exception", "")]
        assert failures and failures[0]["event"] == "twisted.log" and failures[0]["level"] in ("error", "critical")
        assert "8613812345678" not in out.getvalue()
        assert any(e.get("message") == "plain message" and e["namespace"] == "twisted.test" for e in events)
