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
from twisted.internet.defer import Deferred
from twisted.web import server
from twisted.web.resource import Resource

from bridge.api import DeadPushesResource, _Answer, _Base, _Dir, _error, _json, _later, _NotFound
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


class _Stats(_Base):
    def backlog(self) -> dict[str, int]:
        """From the daemon's store gauges (refreshed in the background), never a scan per poll."""
        gauges = self.ctx.state.gauges()
        segments, outbox, messages = gauges.segments, gauges.pushes, gauges.messages
        return {
            "queued": segments.get("queued", 0), "inFlight": segments.get("dispatched", 0),
            "awaitingReceipt": segments.get("submitted", 0), "held": messages.get("held", 0),
            "outboxPending": sum(n for k, n in outbox.items() if k.endswith(":pending")),
            "outboxDead": sum(n for k, n in outbox.items() if k.endswith(":dead")),
        }

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
                "finalised": sum(ctx.state.finalised().values()),
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
        return _later(request, ctx.store.messages.for_number(sorted(ctx.config.channels), number).addCallback(
            lambda rows: _Answer(200, {"number": number, "messages": [{
                "smsMsgId": m.id, "from": m.channel, "to": m.recipient, "carrier": m.carrier, "state": m.state,
                "status": m.status, "total": m.total, "createTime": iso_time(m.created_at)} for m in rows]})))


class _MessageTrail(_Base):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        ctx = self.ctx
        if not ctx.auth.operator(request):
            return self.unauthorised(request)
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if len(parts) != 1:
            return _error(request, 404, "E200404", "no such message")
        return _later(request, Deferred.fromCoroutine(self._trail(parts[0])))

    async def _trail(self, message_id: str) -> _Answer:
        store = self.ctx.store
        msg = await store.messages.get(message_id)
        if msg is None:
            return _Answer(404, {"code": "E200404", "description": "no such message"})
        receipts = [{"sequence": r.seq, "receiveTime": iso_time(r.received_at), "outcome": r.outcome,
                     "receipt": json.loads(r.receipt_json)}
                    for r in await store.receipts.of_message(msg.id, msg.created_at)]
        pushes = [{"id": p.id, "kind": p.kind, "state": p.state, "attempts": p.attempts,
                   "createTime": iso_time(p.created_at), "ackTime": iso_time(p.acked_at) if p.acked_at else None,
                   "lastError": p.last_error} for p in await store.outbox.pushes_of(msg.id)]
        return _Answer(200, {"smsMsgId": msg.id, "receipts": receipts, "pushes": pushes})


class ReplayPushResource(_Base):
    """``POST /v1/outbox/{id}/replay``: a dead-lettered push goes back to pending (operator)."""

    def render_POST(self, request: server.Request) -> bytes | int:  # noqa: N802 (Twisted API)
        if not self.ctx.auth.operator(request):
            return self.unauthorised(request)
        parts = [p for p in request.postpath if p]
        if len(parts) != 2 or not parts[0].isdigit() or parts[1] != b"replay" or int(parts[0]) > MAX_OUTBOX_ID:
            return _error(request, 404, "E200404", "expected POST /v1/outbox/{id}/replay")
        return _later(request, Deferred.fromCoroutine(self._replay(int(parts[0]))))

    async def _replay(self, outbox_id: int) -> _Answer:
        store = self.ctx.store
        if not await store.outbox.revive(outbox_id, time.time()):
            return _Answer(404, {"code": "E200404", "description": f"outbox {outbox_id}: no such dead-lettered push"})
        await store.durable()
        log.info("outbox.replayed_by_operator", outbox_id=outbox_id)
        self.ctx.state.after_replay()
        return _Answer(200, {"code": "000000", "description": "queued", "id": outbox_id})


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
