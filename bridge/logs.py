"""structlog setup and the redaction processor.

Message content and phone numbers are personal data (PLATFORM_RULES "Records"): by
default every log event has them masked before rendering. Only an explicit
``redact = false`` in the config turns that off, for debugging.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogBeginner
from zope.interface import implementer

__all__ = ["BODY_KEYS", "NUMBER_KEYS", "Redactor", "TwistedToStructlog", "configure_logging", "mask_number"]

NUMBER_KEYS = frozenset({
    "to", "from", "number", "recipient", "destination_addr", "source_addr", "msisdn", "origin_to",
})
BODY_KEYS = frozenset({"body", "text", "short_message", "message_payload", "content", "params"})
SECRET_KEYS = frozenset({"password", "token", "authorization", "operator_token"})
_NUMBER_RE = re.compile(r"(?<![\w:])(\+?)(\d{7,21})(?!\w)")


_CHANNEL_EXTEND_MAX = 6   # digits an application may append to its channel number (extend)


def mask_number(number: str, channels: frozenset[str] = frozenset()) -> str:
    """Keep the country code and the last 4 digits: ``+8613812345678`` -> ``+86*******5678``.

    Digit runs that are one of ``channels`` (the config's channel numbers, not personal
    data) stay as they are, and so does a ``10...`` channel followed by an extend of up to
    6 digits.
    """
    if not isinstance(number, str):
        return number
    if not channels:
        return _NUMBER_RE.sub(_mask_match, number)
    return _NUMBER_RE.sub(lambda m: m.group(0) if _is_channel(m, channels) else _mask_match(m), number)


def _is_channel(m: re.Match[str], channels: frozenset[str]) -> bool:
    """A channel number, or a ``10...`` service code channel plus its extend (MO destinations).

    No mobile number starts with ``10``, so the extend rule cannot unmask a phone number.
    """
    digits = m.group(2)
    if m.group(1):
        return False
    return digits in channels or (digits.startswith("10") and any(
        c.startswith("10") and digits.startswith(c) and len(digits) - len(c) <= _CHANNEL_EXTEND_MAX
        for c in channels))


def _mask_match(m: re.Match[str]) -> str:
    plus, digits = m.group(1), m.group(2)
    if plus:
        cc_len = 1 if digits[0] in "17" else 2
    elif digits.startswith("86") and len(digits) == 13:
        cc_len = 2
    else:
        cc_len = 0
    keep_tail = 4
    hidden = len(digits) - cc_len - keep_tail
    if hidden <= 0:
        return m.group(0)
    return f"{plus}{digits[:cc_len]}{'*' * hidden}{digits[-keep_tail:]}"


class Redactor:
    """structlog processor masking numbers, bodies and secrets in every event."""

    def __init__(self, enabled: bool = True, channels: frozenset[str] = frozenset()) -> None:
        self.enabled = enabled
        self.channels = frozenset(channels)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if key in SECRET_KEYS:
                event[key] = "***"
            elif not self.enabled or key == "event":
                continue
            elif key in BODY_KEYS:
                event[key] = f"<redacted {len(value) if hasattr(value, '__len__') else '?'}>"
            elif isinstance(value, str):
                event[key] = mask_number(value, self.channels)
            elif key in NUMBER_KEYS and isinstance(value, list | tuple):
                event[key] = [mask_number(str(v), self.channels) for v in value]
        return event


_TWISTED_LEVELS = {
    LogLevel.debug: "debug", LogLevel.info: "info", LogLevel.warn: "warning",
    LogLevel.error: "error", LogLevel.critical: "critical",
}


@implementer(ILogObserver)
class TwistedToStructlog:
    """Twisted's own log events (unhandled errors in Deferreds, connection failures...)
    as structlog events, so they are rendered, filtered and redacted like ours: one JSON
    line each, the traceback inside it instead of plain text between the lines."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("twisted")

    def rebind(self) -> None:
        """After structlog is configured again: a logger cached on first use keeps the old
        configuration (its stream), so take a fresh one."""
        self._log = structlog.get_logger("twisted")

    def __call__(self, event: dict[str, Any]) -> None:
        level = _TWISTED_LEVELS.get(event.get("log_level", LogLevel.info), "info")
        fields: dict[str, Any] = {"namespace": event.get("log_namespace", "?"),
                                  "message": formatEvent(event)}
        failure = event.get("log_failure")
        if failure is not None:
            fields["exception"] = failure.getTraceback()
            if level in ("debug", "info", "warning"):
                level = "error"
        getattr(self._log, level)("twisted.log", **fields)


_twisted_observer: TwistedToStructlog | None = None


def _route_twisted_logging() -> None:
    """Hand Twisted's global log to structlog, once per process (Twisted allows one start)."""
    global _twisted_observer
    if _twisted_observer is not None:
        _twisted_observer.rebind()
        return
    _twisted_observer = TwistedToStructlog()
    globalLogBeginner.beginLoggingTo([_twisted_observer], discardBuffer=False, redirectStandardIO=False)


def configure_logging(level: str = "info", fmt: str | None = None, redact: bool = True,
                      stream: Any = None, channels: Iterable[str] = ()) -> None:
    """Configure structlog once, in the entry point. ``fmt`` None: console on a TTY, else JSON.

    ``channels``: the config's channel numbers, shown in logs while phone numbers are masked.
    """
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
                     else structlog.processors.JSONRenderer(ensure_ascii=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            Redactor(redact, frozenset(channels)),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    _route_twisted_logging()
