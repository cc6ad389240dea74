"""The bridge's HTTP API (contract in DESIGN.md), on twisted.web.

An accepted ``POST /v1/sms`` is answered only after every recipient's message is
committed. Request bodies over the configured size are refused from their
``Content-Length`` before any of the body is buffered or parsed.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import structlog
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import Resource

from bridge import jsonfast
from bridge.apiguard import ConnectionCap, DeadlineChannel
from bridge.config import AppConfig, BridgeConfig
from bridge.fastinit import fast_init
from bridge.finaliser import iso_time
from bridge.intake import IntakeError, IntakeService
from bridge.numbers import InvalidNumberError, normalise_number
from bridge.store import Store, StoreError
from bridge.store.records import BlacklistEntry

__all__ = ["ApiState", "BoundedRequest", "build_site", "capped"]

log = structlog.get_logger("api")


@dataclasses.dataclass
class ApiState:
    """What the API reads from the running daemon; filled in by the daemon."""

    accepting: bool = True
    binds: Callable[[], list[Any]] = list
    metrics: Callable[[], bytes] = lambda: b""
    health: Callable[[], dict[str, Any]] = dict
    after_replay: Callable[[], None] = lambda: None   # an operator revived a dead-lettered push
    after_blacklist_change: Callable[[], None] = lambda: None
    openapi: Callable[[], dict[str, Any]] = dict
    finalised: Callable[[], dict[str, int]] = dict
    gauges: Callable[[], Any] = lambda: None


@lru_cache(maxsize=4)   # every answer within a second shares one
def _http_date(second: int) -> bytes:
    return http.datetimeToString(second)


class BoundedRequest(server.Request):
    """Refuses oversized bodies on their declared length, before buffering them."""

    max_body_bytes = 1_048_576

    def process(self) -> None:
        """Twisted's ``Request.process`` with the ``Date`` header formatted once a second
        (Twisted formats the clock for every answer: 1 % of the API's CPU at full load).

        The API's resources are plain ``Resource`` objects: no encoding wrapper to look up.
        """
        self.site = self.channel.site
        self.setHeader(b"server", server.version)
        self.setHeader(b"date", _http_date(int(self.site.reactor.seconds())))
        self.prepath = []
        self.postpath = [unquote_to_bytes(part) for part in self.path[1:].split(b"/")]
        if self.path == b"*":
            self._handleStar()
            return
        try:
            self.render(self.site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())

    def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted API)
        self.too_large = length is not None and length > self.max_body_bytes
        if self.too_large:
            super().gotLength(0)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        if getattr(self, "too_large", False):
            return
        if self.content.tell() + len(data) > self.max_body_bytes:
            self.too_large = True
            return
        super().handleContentChunk(data)


def _json(request: server.Request, status: int, body: Any, *, strings_only: bool = False) -> bytes:
    """``strings_only``: ``body`` holds only dicts, lists and str, which orjson writes identically."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    if strings_only:
        return jsonfast.dumps_strings(body)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _error(request: server.Request, status: int, code: str, description: str) -> bytes:
    return _json(request, status, {"code": code, "description": description})


@fast_init
@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: Any
    strings_only: bool = False   # only dicts, lists and str: the fast JSON writer gives the same bytes


def _later(request: server.Request, d: Deferred[_Answer]) -> int:
    """Answer ``request`` when ``d`` fires (a store read or a commit); 503 if the store fails."""
    def write(answer: _Answer) -> None:
        if not request.finished and not request._disconnected:
            body = _json(request, answer.status, answer.body, strings_only=answer.strings_only)
            # With its length declared the answer goes out as it is: without, Twisted
            # frames a late answer in chunks and writes a terminating chunk after it.
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()

    def failed(failure: Any) -> None:
        log.error("api.store_failed", path=request.path.decode("utf-8", "replace"), error=str(failure.value))
        write(_Answer(503, {"code": "E000510", "description": "store unavailable: try again"}))

    d.addCallbacks(write, failed)
    return server.NOT_DONE_YET


async def _answer(status: int, body: Any) -> _Answer:
    return _Answer(status, body)


class _Auth:
    """Bearer tokens: one per application, one for the operator; compared in constant time."""

    def __init__(self, config: BridgeConfig) -> None:
        self._apps = [(app.token.encode(), app) for app in config.apps.values()]
        self._operator = config.api.operator_token.encode()

    def _token(self, request: server.Request) -> bytes | None:
        header = request.getHeader(b"authorization")
        if isinstance(header, str):
            header = header.encode("latin-1", "replace")
        if not header or header[:7].lower() != b"bearer ":
            return None
        return header[7:].strip()

    def app(self, request: server.Request) -> AppConfig | None:
        token = self._token(request)
        found = None
        if token is None:
            return None
        for app_token, app in self._apps:
            if hmac.compare_digest(token, app_token):
                found = app
        return found

    def operator(self, request: server.Request) -> bool:
        token = self._token(request)
        return bool(token and self._operator and hmac.compare_digest(token, self._operator))


class _Base(Resource):
    isLeaf = True

    def __init__(self, ctx: _Context) -> None:
        super().__init__()
        self.ctx = ctx

    def unauthorised(self, request: server.Request) -> bytes:
        request.setHeader(b"www-authenticate", b'Bearer realm="smpp-bridge"')
        return _error(request, 401, "E000101", "missing or invalid bearer token")


@dataclasses.dataclass
class _Context:
    config: BridgeConfig
    store: Store
    intake: IntakeService
    state: ApiState
    auth: _Auth


class SmsResource(_Base):
    def render_POST(self, request: server.Request) -> bytes | int:  # noqa: N802 (Twisted API)
        ctx = self.ctx
        if not ctx.state.accepting:
            return _error(request, 503, "E000503", "shutting down: not accepting messages")
        app = ctx.auth.app(request)
        if app is None:
            return self.unauthorised(request)
        if getattr(request, "too_large", False):
            return _error(request, 413, "E200017", f"body: larger than {ctx.config.api.max_body_bytes} bytes")
        try:
            body = ctx.intake.parse_body(request.content.read())
        except IntakeError as exc:
            return _error(request, 400, exc.code, exc.description)

        def committed(accepted: Any) -> _Answer:
            return _Answer(200, {"code": "000000", "description": "Success",
                                 "result": [r.as_json() for r in accepted.rows]}, strings_only=True)

        def refused(failure: Any) -> _Answer:
            if failure.check(IntakeError):
                return _Answer(400, {"code": failure.value.code, "description": failure.value.description})
            failure.trap(StoreError)
            log.error("intake.commit_failed", error=str(failure.value))
            return _Answer(503, {"code": "E000510", "description": "store unavailable: request not accepted"})

        return _later(request, ctx.intake.submit(app, body).addCallbacks(committed, refused))

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        ctx = self.ctx
        app = ctx.auth.app(request)
        if app is None and not ctx.auth.operator(request):
            return self.unauthorised(request)
        parts = [p for p in request.postpath if p]
        if len(parts) != 1:
            return _error(request, 404, "E200404", "expected /v1/sms/{smsMsgId}")
        message_id = parts[0].decode("utf-8", "replace")
        return _later(request, Deferred.fromCoroutine(self._message(message_id, app)))

    async def _message(self, message_id: str, app: AppConfig | None) -> _Answer:
        store = self.ctx.store
        msg = await store.messages.get(message_id)
        if msg is None or (app is not None and msg.app_id != app.id):
            return _Answer(404, {"code": "E200404", "description": f"smsMsgId {message_id!r}: no such message"})
        segments = [{
            "sequence": s.seq, "state": s.state, "status": s.status, "orgCode": s.org_code,
            "carrierMessageId": s.raw_msg_id, "submitStatus": s.submit_status,
            "submitTime": iso_time(s.submitted_at) if s.submitted_at else None,
            "receiptTime": iso_time(s.done_at) if s.done_at else None,
            "possibleDuplicate": s.possible_duplicate,
        } for s in await store.messages.segment_details(message_id)]
        report = await store.outbox.report_copy(message_id)
        return _Answer(200, {
            "smsMsgId": msg.id, "from": msg.channel, "to": msg.recipient, "carrier": msg.carrier,
            "class": msg.klass, "state": msg.state, "status": msg.status, "orgCode": msg.org_code,
            "total": msg.total, "createTime": iso_time(msg.created_at),
            "finalTime": iso_time(msg.final_at) if msg.final_at else None,
            "reported": msg.reported, "extend": msg.extend, "segments": segments,
            "report": json.loads(report.payload) if report else None,
        })


class BindsResource(_Base):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        if not self.ctx.auth.operator(request) and self.ctx.auth.app(request) is None:
            return self.unauthorised(request)
        return _json(request, 200, {"binds": [dataclasses.asdict(b) for b in self.ctx.state.binds()]})


class TemplatesResource(_Base):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        if not self.ctx.auth.operator(request) and self.ctx.auth.app(request) is None:
            return self.unauthorised(request)
        cfg = self.ctx.config
        return _json(request, 200, {
            "templates": [{"templateId": t.id, "text": t.text, "class": t.klass} for t in cfg.templates.values()],
            "channels": [{"from": c.number, "signature": c.signature, "app": c.app} for c in cfg.channels.values()],
        })


class AppsResource(_Base):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        if not self.ctx.auth.operator(request):
            return self.unauthorised(request)
        cfg = self.ctx.config
        return _json(request, 200, {"apps": [
            {"id": a.id, "uplinkUrl": a.uplink_url,
             "channels": [c.number for c in cfg.channels.values() if c.app == a.id]}
            for a in cfg.apps.values()]})


class BlacklistResource(_Base):
    def _target(self, request: server.Request) -> tuple[str, str] | None:
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if len(parts) != 2:
            return None
        channel, raw = parts
        try:
            return channel, normalise_number(raw)
        except InvalidNumberError:
            return channel, raw

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        if not self.ctx.auth.operator(request):
            return self.unauthorised(request)
        store = self.ctx.store
        if not [p for p in request.postpath if p]:
            channel = (request.args.get(b"channel") or [b""])[0].decode("utf-8", "replace") or None
            return _later(request, store.blacklist.entries(channel).addCallback(
                lambda rows: _Answer(200, {"entries": [_bl_row(r) for r in rows], "count": len(rows)})))
        target = self._target(request)
        if target is None:
            return _error(request, 404, "E200404", "expected /v1/blacklist/{channel_no}/{number}")
        return _later(request, store.blacklist.get(*target).addCallback(
            lambda row: _Answer(404, {"code": "E200404", "description": "not on the blacklist"}) if row is None
            else _Answer(200, _bl_row(row))))

    def render_DELETE(self, request: server.Request) -> bytes | int:  # noqa: N802 (Twisted API)
        if not self.ctx.auth.operator(request):
            return self.unauthorised(request)
        target = self._target(request)
        if target is None:
            return _error(request, 404, "E200404", "expected /v1/blacklist/{channel_no}/{number}")
        return _later(request, Deferred.fromCoroutine(self._remove(*target)))

    async def _remove(self, channel: str, number: str) -> _Answer:
        store = self.ctx.store
        if not await store.blacklist.remove(channel, number):
            return _Answer(404, {"code": "E200404", "description": "not on the blacklist"})
        await store.durable()
        log.info("blacklist.removed_by_operator", channel=channel, number=number)
        self.ctx.state.after_blacklist_change()
        return _Answer(200, {"code": "000000", "description": "removed", "channel": channel, "number": number})


class DeadPushesResource(_Base):
    """Pushes given up after callbacks.max_age_s; the URL's path and query are not shown."""

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        if not self.ctx.auth.operator(request):
            return self.unauthorised(request)
        def answer(dead: list[Any]) -> _Answer:
            rows = [{"id": r.id, "kind": r.kind, "smsMsgId": r.ref_id, "host": urlsplit(r.url).hostname or "",
                     "attempts": r.attempts, "createTime": iso_time(r.created_at), "lastError": r.last_error}
                    for r in dead]
            return _Answer(200, {"dead": rows, "count": len(rows)})
        return _later(request, self.ctx.store.outbox.dead().addCallback(answer))


def _bl_row(row: BlacklistEntry) -> dict[str, Any]:
    return {"channel": row.channel, "number": row.number, "createTime": iso_time(row.created_at),
            "moId": row.mo_id}


class HealthResource(_Base):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        body = {"status": "ok" if self.ctx.state.accepting else "stopping", **self.ctx.state.health()}
        return _json(request, 200 if self.ctx.state.accepting else 503, body)


class MetricsResource(_Base):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.ctx.state.metrics()


class OpenApiResource(_Base):
    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802 (Twisted API)
        return _json(request, 200, self.ctx.state.openapi())


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        return _error(request, 404, "E200404", f"no such endpoint: {request.path.decode('utf-8', 'replace')}")


class _Root(Resource):
    def getChild(self, path: bytes, request: server.Request) -> Resource:  # noqa: N802 (Twisted API)
        return _NotFound()


class _Dir(Resource):
    def getChild(self, path: bytes, request: server.Request) -> Resource:  # noqa: N802 (Twisted API)
        return _NotFound()


def build_site(config: BridgeConfig, store: Store, intake: IntakeService, state: ApiState) -> server.Site:
    ctx = _Context(config, store, intake, state, _Auth(config))
    root = _Root()
    v1 = _Dir()
    root.putChild(b"v1", v1)
    v1.putChild(b"sms", SmsResource(ctx))
    v1.putChild(b"binds", BindsResource(ctx))
    v1.putChild(b"templates", TemplatesResource(ctx))
    v1.putChild(b"apps", AppsResource(ctx))
    v1.putChild(b"blacklist", BlacklistResource(ctx))
    outbox = _Dir()
    v1.putChild(b"outbox", outbox)
    outbox.putChild(b"dead", DeadPushesResource(ctx))
    root.putChild(b"healthz", HealthResource(ctx))
    root.putChild(b"metrics", MetricsResource(ctx))
    root.putChild(b"openapi.json", OpenApiResource(ctx))
    from bridge.console import install_console  # the console's resources build on this module
    install_console(root, v1, ctx)
    # The API reads JSON bodies only: without parsePOSTFormSubmission=False, every POST's
    # Content-Type goes through the email package's header registry (~200 µs of CPU per
    # request) to look for forms.
    # (The channel keeps the idle timeout on its own timer: Site's would be one per request.)
    site = server.Site(root, timeout=None, parsePOSTFormSubmission=False)
    site.protocol = type("Channel", (DeadlineChannel,), {"header_timeout_s": config.api.header_timeout_s,
                                                         "body_timeout_s": config.api.body_timeout_s,
                                                         "idle_timeout_s": config.api.idle_timeout_s})
    bounded = type("Request", (BoundedRequest,), {"max_body_bytes": config.api.max_body_bytes})
    site.requestFactory = bounded
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # per-request access logs cost more than the request
    return site


def capped(site: server.Site, config: BridgeConfig) -> ConnectionCap:
    """The site behind ``[api] max_connections``: what the daemon listens with."""
    return ConnectionCap(site, config.api.max_connections)
