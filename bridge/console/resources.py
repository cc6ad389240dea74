"""twisted.web resources of the operator console: the static files and ``/v1/console/*``.

- ``GET /v1/console/stats``: counters, backlog and latency histograms (labels summed);
  the page turns successive snapshots into rates and percentiles itself. The backlog
  counts scan the store, so they are refreshed at most every ``BACKLOG_TTL_S``.
- ``GET /v1/console/messages?number=``: newest messages to one number.
- ``GET /v1/console/message/{smsMsgId}``: the receipts and report pushes of one message
  (its segments come from ``GET /v1/sms/{smsMsgId}``).
- ``POST /v1/outbox/{id}/replay``: a dead-lettered push back to pending.
"""

from __future__ import annotations

import dataclasses
import json
import time
from importlib import resources
from typing import TYPE_CHECKING

import structlog
from twisted.web import server
from twisted.web.resource import Resource

from bridge.api import DeadPushesResource, _Base, _Dir, _error, _json, _NotFound
from bridge.finaliser import iso_time
from bridge.latency import snapshot
from bridge.numbers import InvalidNumberError, normalise_number
from bridge.openapi import MAX_OUTBOX_ID

if TYPE_CHECKING:
    from bridge.api import _Context

__all__ = ["install_console"]

log = structlog.get_logger("console")

_STATIC = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"console.js": ("console.js", b"text/javascript; charset=utf-8"),
    b"console.css": ("console.css", b"text/css; charset=utf-8"),
}
_CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class _StaticFile(Resource):
    """One packaged file, read once; strict CSP, no referrer (the page's URL may hold the token)."""

    isLeaf = True

    def __init__(self, name: str, content_type: bytes) -> None:
        super().__init__()
        self._body = resources.files("bridge.console").joinpath("static", name).read_bytes()
        self._type = content_type

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        request.setHeader(b"content-type", self._type)
        request.setHeader(b"content-security-policy", _CSP)
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-cache")
        return self._body


class _ConsolePage(Resource):
    """``/console`` is the page; ``/console/<file>`` its script and style."""

    def __init__(self) -> None:
        super().__init__()
        self._files = {path: _StaticFile(*spec) for path, spec in _STATIC.items()}

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        return self._files[b""].render_GET(request)

    def getChild(self, path: bytes, request: server.Request) -> Resource:  # noqa: N802 (Twisted API)
        return self._files.get(path) or _NotFound()


BACKLOG_TTL_S = 5.0   # the backlog counts scan the store: at most once per this, whoever polls


class _Stats(_Base):
    def __init__(self, ctx: _Context) -> None:
        super().__init__(ctx)
        self._backlog: tuple[float, dict[str, int]] = (-BACKLOG_TTL_S, {})

    def backlog(self) -> dict[str, int]:
        at, counts = self._backlog
        if time.monotonic() - at < BACKLOG_TTL_S:
            return counts
        store = self.ctx.store
        segments, outbox = store.segment_counts(), store.outbox_counts()
        counts = {
            "queued": segments.get("queued", 0), "inFlight": segments.get("dispatched", 0),
            "awaitingReceipt": segments.get("submitted", 0), "held": store.message_counts().get("held", 0),
            "outboxPending": sum(n for k, n in outbox.items() if k.endswith(":pending")),
            "outboxDead": sum(n for k, n in outbox.items() if k.endswith(":dead")),
        }
        self._backlog = (time.monotonic(), counts)
        return counts

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        ctx = self.ctx
        if not ctx.auth.operator(request):
            return self.unauthorised(request)
        binds = ctx.state.binds()
        return _json(request, 200, {
            "counters": {
                "accepted": ctx.intake.accepted,
                "submitted": sum(b.submitted for b in binds),
                "throttled": sum(b.throttled for b in binds),
                "errors": sum(b.errors for b in binds),
                "finalised": sum(ctx.finaliser.finalised.values()),
            },
            "backlog": self.backlog(),
            "latency": {name.removeprefix("smpp_bridge_").removesuffix("_seconds"): dataclasses.asdict(h)
                        for name, h in snapshot().items()},
        })


class _MessagesByNumber(_Base):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        ctx = self.ctx
        if not ctx.auth.operator(request):
            return self.unauthorised(request)
        raw = (request.args.get(b"number") or [b""])[0].decode("utf-8", "replace")
        try:
            number = normalise_number(raw)
        except InvalidNumberError as exc:
            return _error(request, 400, "E200016", f"number: {exc}")
        rows = ctx.store.console_messages_for(sorted(ctx.config.channels), number)
        return _json(request, 200, {"number": number, "messages": [{
            "smsMsgId": m.id, "from": m.channel, "to": m.recipient, "carrier": m.carrier, "state": m.state,
            "status": m.status, "total": m.total, "createTime": iso_time(m.created_at)} for m in rows]})


class _MessageTrail(_Base):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        ctx = self.ctx
        if not ctx.auth.operator(request):
            return self.unauthorised(request)
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        msg = ctx.store.get_message(parts[0]) if len(parts) == 1 else None
        if msg is None:
            return _error(request, 404, "E200404", "no such message")
        receipts = [{"sequence": seq, "receiveTime": iso_time(at), "outcome": outcome, "receipt": json.loads(text)}
                    for seq, at, outcome, text in ctx.store.console_receipts_of(msg.id, msg.created_at)]
        pushes = [{"id": i, "kind": kind, "state": state, "attempts": attempts, "createTime": iso_time(created),
                   "ackTime": iso_time(acked) if acked else None, "lastError": err}
                  for i, kind, state, attempts, created, acked, err in ctx.store.console_pushes_of(msg.id)]
        return _json(request, 200, {"smsMsgId": msg.id, "receipts": receipts, "pushes": pushes})


class ReplayPushResource(_Base):
    """``POST /v1/outbox/{id}/replay``: a dead-lettered push goes back to pending (operator)."""

    def render_POST(self, request: server.Request) -> bytes | int:  # noqa: N802 (Twisted API)
        if not self.ctx.auth.operator(request):
            return self.unauthorised(request)
        parts = [p for p in request.postpath if p]
        if len(parts) != 2 or not parts[0].isdigit() or parts[1] != b"replay" or int(parts[0]) > MAX_OUTBOX_ID:
            return _error(request, 404, "E200404", "expected POST /v1/outbox/{id}/replay")
        outbox_id = int(parts[0])
        if not self.ctx.store.console_revive_push(outbox_id, time.time()):
            return _error(request, 404, "E200404", f"outbox {outbox_id}: no such dead-lettered push")
        log.info("outbox.replayed_by_operator", outbox_id=outbox_id)

        def done(_: object) -> None:
            if not request.finished and not request._disconnected:
                request.write(_json(request, 200, {"code": "000000", "description": "queued", "id": outbox_id}))
                request.finish()
            self.ctx.state.after_accept()

        self.ctx.store.durable().addCallback(done)
        return server.NOT_DONE_YET


class _OutboxDir(Resource):
    """``/v1/outbox/dead`` and ``/v1/outbox/{id}/replay``."""

    def __init__(self, ctx: _Context) -> None:
        super().__init__()
        self.putChild(b"dead", DeadPushesResource(ctx))
        self._replay = ReplayPushResource(ctx)

    def getChild(self, path: bytes, request: server.Request) -> Resource:  # noqa: N802 (Twisted API)
        if path.isdigit():
            request.postpath.insert(0, request.prepath.pop())
            return self._replay
        return _NotFound()


def install_console(root: Resource, v1: Resource, ctx: _Context) -> None:
    """Mount ``/console``, ``/v1/console/*`` and ``/v1/outbox`` (adding ``{id}/replay``)."""
    v1.putChild(b"outbox", _OutboxDir(ctx))
    root.putChild(b"console", _ConsolePage())
    api = _Dir()
    api.putChild(b"stats", _Stats(ctx))
    api.putChild(b"messages", _MessagesByNumber(ctx))
    api.putChild(b"message", _MessageTrail(ctx))
    v1.putChild(b"console", api)
