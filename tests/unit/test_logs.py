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
        line = json.loads(out.getvalue().strip())
        assert line["event"] == "sms.accepted" and line["to"] == "+86*******5678"
        assert "secret text" not in out.getvalue() and line["level"] == "info"
