"""``POST /v1/sms``: validate a send request and turn it into per-recipient messages.

Validation is all-or-nothing: one bad field rejects the request with a code and a
description naming the field, and nothing is stored. Accepted recipients each get a
message; pre-send rules (routing, blacklist, frequency) may make it final at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults

from bridge import jsonfast
from bridge.config import AppConfig, BridgeConfig
from bridge.encoder import ConcatRefCounter, MessageTooLongError, encode_message
from bridge.fastinit import fast_init
from bridge.finaliser import Finaliser, iso_time
from bridge.ids import new_message_id
from bridge.models import MessageState, NewMessage, NewSegment
from bridge.numbers import InvalidNumberError, normalise_number
from bridge.routing import Router, RoutingError
from bridge.rules import FrequencyLimiter, SendingWindow, Verdict
from bridge.store import Store
from bridge.store.records import AdmissionFacts, AdmissionQuery, RecentSend
from bridge.template import Template, TemplateParamError, parse_template
from bridge.urlpolicy import checked_push_url

__all__ = ["ERROR_CODES", "Accepted", "IntakeError", "IntakeService", "ResultRow"]

MAX_RECIPIENTS = 500
MAX_NUMBER_LEN = 21
MAX_BODY_CHARS = 500
MAX_EXTEND_CHARS = 128

# Platform-style answer codes (README "API error codes").
ERROR_CODES = {
    "E200001": "request body is not valid JSON",
    "E200002": "a required field is missing",
    "E200003": "a field has the wrong type or format",
    "E200015": "more than 500 recipients",
    "E200016": "a recipient is not a valid phone number",
    "E200020": "unknown channel number (from)",
    "E200021": "unknown templateId",
    "E200022": "signature does not match the channel number",
    "E200023": "message text too long",
    "E200024": "statusCallback URL not allowed",
    "E200026": "give either templateId or body",
    "E200028": "templateParas do not fit the template",
    "E200041": "duplicate recipient in this request (sent once)",
}
REJECTED_BLACKLIST = Verdict("REJECTD", "SC:0016", "recipient unsubscribed from this channel number")
SUCCESS = "000000"
DUPLICATE = "E200041"


class IntakeError(ValueError):
    """A rejected request: HTTP 400 with a platform code and a description naming the field."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


@fast_init
@dataclass(frozen=True, slots=True)
class ResultRow:
    origin_to: str
    sender: str
    sms_msg_id: str
    status: str
    create_time: str

    def as_json(self) -> dict[str, str]:
        return {"originTo": self.origin_to, "from": self.sender, "smsMsgId": self.sms_msg_id,
                "status": self.status, "createTime": self.create_time}


@fast_init
@dataclass(frozen=True, slots=True)
class _Request:
    """A validated send request, before the rules that need the store."""

    app: AppConfig
    sender: str
    signature: str
    recipients: tuple[tuple[str, str], ...]   # (as given, E.164)
    content: str
    klass: str
    callback: str
    extend: str


@fast_init
@dataclass(frozen=True, slots=True)
class _Draft:
    """One recipient's message as far as it can be decided without the store.

    ``message`` is None for a repeated recipient. ``verdict`` is already known (no route);
    ``late_verdict`` applies only if the store's rules let the message through (a carrier
    that is not configured). Otherwise ``message`` is ready to send, segments encoded.
    """

    number: str
    message: NewMessage | None
    verdict: Verdict | None = None
    late_verdict: Verdict | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Accepted:
    rows: tuple[ResultRow, ...]
    messages: tuple[NewMessage, ...]
    finals: tuple[tuple[str, Verdict], ...]   # message id -> pre-send verdict


def _field(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], required: bool) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise IntakeError("E200002", f"{name}: missing")
        return None
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise IntakeError("E200003", f"{name}: expected {expected.replace('str', 'a string').replace('list', 'a list')}")
    return value


class IntakeService:
    """Validates requests and applies the pre-send rules; the API layer stores and answers."""

    def __init__(self, config: BridgeConfig, store: Store, router: Router, finaliser: Finaliser, *,
                 clock_now: Callable[[], float], refs: ConcatRefCounter | None = None,
                 on_queued: Callable[[set[str]], None] | None = None) -> None:
        self._config = config
        # Told as soon as messages are queued, before their commit: the dispatcher takes
        # them in the same transaction, so they are sendable the moment it is durable.
        self._on_queued = on_queued
        self._store = store
        self._router = router
        self._finaliser = finaliser
        self._now = clock_now
        self._refs = refs or ConcatRefCounter(start=secrets.randbelow(256))
        self._limiter = FrequencyLimiter(config.rules.exempt_numbers,
                                         limit_international=config.rules.limit_international)
        self._window = SendingWindow(config.rules.quiet_start_min, config.rules.quiet_end_min,
                                     config.rules.utc_offset_hours)
        self.accepted = 0
        self._templates: dict[str, Template] = {tid: parse_template(t.text) for tid, t in config.templates.items()}

    def parse_body(self, raw: bytes) -> dict[str, Any]:
        try:
            parsed = jsonfast.parse(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            raise IntakeError("E200001", f"body: not valid JSON ({exc.__class__.__name__})") from None
        body = parsed.value
        if not isinstance(body, dict):
            raise IntakeError("E200001", "body: expected a JSON object")
        if not parsed.unicode_clean:
            try:  # json lets unpaired surrogates through ("\\ud800"); they cannot be stored or sent
                json.dumps(body, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise IntakeError("E200001", "body: a string holds an unpaired UTF-16 surrogate") from None
        return body

    def submit(self, app: AppConfig, body: Mapping[str, Any]) -> Deferred[Accepted]:
        """Validate, apply the rules, store: fires once every recipient's message is durable.

        Fails with IntakeError (nothing stored) or StoreError (nothing acknowledged).
        """
        try:
            request = self.validate(app, body)
            now = self._now()
            rows, drafts = self._prepare(request, now)
        except IntakeError as exc:
            return fail(exc)
        numbers = tuple(d.number for d in drafts if d.message is not None)
        query = AdmissionQuery(request.sender, numbers,
                               tuple(n for n in numbers if self._limiter.applies_to(n)), now - 86_400)
        admitted = self._store.messages.admit(query, lambda facts: self._decide(rows, drafts, facts, now))
        return admitted.addCallback(self._admitted, now)

    def _admitted(self, accepted: Accepted, now: float) -> Deferred[Accepted]:
        """Stored: wake the dispatcher, finalise what the rules refused, wait for the commit.

        (Callbacks rather than a coroutine: this runs for every request.)
        """
        if accepted.messages and self._on_queued is not None:
            self._on_queued({m.carrier for m in accepted.messages if m.carrier is not None})
        if accepted.finals:   # refused at intake (blacklist, limits, no route): final at once
            finals = gatherResults([self._finaliser.message_final(mid, v.status, v.org_code, 0, now)
                                    for mid, v in accepted.finals], consumeErrors=True)
            durable: Deferred[object] = finals.addCallback(lambda _: self._store.durable())
        else:
            durable = self._store.durable()
        return durable.addCallback(self._durable, accepted)

    def _durable(self, _: object, accepted: Accepted) -> Accepted:
        self.accepted += len(accepted.messages)
        return accepted

    def validate(self, app: AppConfig, body: Mapping[str, Any]) -> _Request:
        """Check ``body`` for ``app`` without touching the store; raises IntakeError."""
        cfg = self._config
        sender = _field(body, "from", str, True)
        channel = cfg.channels.get(sender)
        if channel is None or channel.app != app.id:
            raise IntakeError("E200020", f"from: {sender!r} is not a channel number of application {app.id!r}")
        recipients = self._recipients(body.get("to"))
        signature = _field(body, "signature", str, False)
        if signature is not None and signature != channel.signature:
            raise IntakeError("E200022", f"signature: {signature!r} is not the signature of channel {sender}")
        template_id = _field(body, "templateId", str, False)
        text_body = _field(body, "body", str, False)
        params = body.get("templateParas")
        klass = _field(body, "class", str, False)
        if klass is not None and klass not in ("otp", "notification"):
            raise IntakeError("E200003", f'class: expected "otp" or "notification", got {klass!r}')
        if (template_id is None) == (text_body is None):
            raise IntakeError("E200026", "templateId/body: give exactly one of them")
        if template_id is not None:
            template = self._templates.get(template_id)
            if template is None:
                raise IntakeError("E200021", f"templateId: unknown template {template_id!r}")
            try:
                content = template.render(params)
            except TemplateParamError as exc:
                raise IntakeError("E200028", str(exc)) from None
            template_class = cfg.templates[template_id].klass
            if klass is not None and klass != template_class:
                # The template's class decides (quiet hours, limits); a request cannot upgrade it.
                raise IntakeError("E200003", f"class: template {template_id!r} is {template_class!r}, "
                                             f"the request says {klass!r}")
            klass = template_class
        else:
            if params not in (None, []):
                raise IntakeError("E200028", "templateParas: not allowed with body")
            if not text_body:
                raise IntakeError("E200002", "body: empty")
            if len(text_body) > MAX_BODY_CHARS:
                raise IntakeError("E200023", f"body: {len(text_body)} characters, more than {MAX_BODY_CHARS}")
            content = text_body
            klass = klass or "notification"
        callback = _field(body, "statusCallback", str, False) or ""
        if callback:
            problem = checked_push_url(callback, cfg.callbacks.allowed_hosts, cfg.callbacks.allow_private)
            if problem:
                raise IntakeError("E200024", f"statusCallback: {problem}")
        extend = _field(body, "extend", str, False) or ""
        if len(extend) > MAX_EXTEND_CHARS:
            raise IntakeError("E200003", f"extend: more than {MAX_EXTEND_CHARS} characters")
        return _Request(app, sender, channel.signature, tuple(recipients), content, klass, callback, extend)

    def _recipients(self, value: object) -> list[tuple[str, str]]:
        """(as given, normalised E.164) for every recipient, in request order."""
        if value is None:
            raise IntakeError("E200002", "to: missing")
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = [v.strip() for v in value]
        else:
            raise IntakeError("E200003", 'to: expected a list of numbers or "n1,n2"')
        if not items:
            raise IntakeError("E200002", "to: no recipients")
        if len(items) > MAX_RECIPIENTS:
            raise IntakeError("E200015", f"to: {len(items)} recipients, at most {MAX_RECIPIENTS}")
        out = []
        for i, item in enumerate(items):
            if len(item) > MAX_NUMBER_LEN:
                raise IntakeError("E200016", f"to[{i}]: longer than {MAX_NUMBER_LEN} characters")
            try:
                out.append((item, normalise_number(item)))
            except InvalidNumberError as exc:
                raise IntakeError("E200016", f"to[{i}]: {exc}") from None
        return out

    def _prepare(self, req: _Request, now: float) -> tuple[tuple[ResultRow, ...], tuple[_Draft, ...]]:
        """Answer rows and drafts: ids, routing, encoding; everything the store need not say."""
        app, sender, signature, klass = req.app, req.sender, req.signature, req.klass
        content, callback, extend = req.content, req.callback, req.extend
        created = iso_time(now)
        rows: list[ResultRow] = []
        drafts: list[_Draft] = []
        seen: set[str] = set()
        release_at = None if klass == "otp" else self._window.release_at(now)
        # One text for every recipient: its hash, and a one-part encoding (no concatenation
        # reference, so no destination in it), are worked out once per request.
        hashes: dict[str, str] = {}
        one_part: dict[tuple[str, bool, str], tuple[NewSegment, ...]] = {}
        for given, number in req.recipients:
            mid = new_message_id(now)
            if number in seen:
                rows.append(ResultRow(given, sender, mid, DUPLICATE, created))
                continue
            seen.add(number)
            rows.append(ResultRow(given, sender, mid, SUCCESS, created))
            verdict: Verdict | None = None
            late: Verdict | None = None
            carrier = None
            mainland = number.startswith("+86")
            text = f"[{signature}]{content}" if mainland else content
            content_hash = hashes.get(text)
            if content_hash is None:
                content_hash = hashes[text] = hashlib.blake2b(text.encode("utf-8"), digest_size=10).hexdigest()
            try:
                route = self._router.route(number)
                carrier, mainland = route.carrier, route.mainland
            except RoutingError as exc:
                verdict = Verdict("NOROUTE", "SC:NOROUTE", str(exc))
            segments: tuple[NewSegment, ...] = ()
            if verdict is None and carrier is not None:
                if carrier not in self._config.carriers:
                    late = Verdict("NOROUTE", "SC:NOCARRIER", f"carrier {carrier} is not configured")
                else:
                    concat = self._config.carriers[carrier].profile.concat
                    segments = one_part.get((text, mainland, concat), ())
                    if not segments:
                        try:
                            encoded = encode_message(text, destination=number, mainland=mainland,
                                                     concat=concat, refs=self._refs)
                        except (MessageTooLongError, ValueError) as exc:
                            raise IntakeError("E200023", f"body: {exc}") from None
                        segments = tuple(NewSegment(s.seq, s.total, s.short_message, s.data_coding,
                                                    s.esm_class, s.ref, s.sar) for s in encoded.segments)
                        if len(segments) == 1:
                            one_part[text, mainland, concat] = segments
            sendable = verdict is None and late is None
            held = sendable and release_at is not None
            drafts.append(_Draft(number, NewMessage(
                id=mid, app_id=app.id, channel=sender, recipient=number, carrier=carrier, klass=klass,
                text=text, content_hash=content_hash, status_callback=callback, extend=extend,
                created_at=now, state=MessageState.HELD if held else MessageState.QUEUED, status=None,
                org_code=None, release_at=release_at if held else None, segments=segments if sendable else (),
                counted=verdict is None,
            ), verdict, late))
        return tuple(rows), tuple(drafts)

    def _decide(self, rows: tuple[ResultRow, ...], drafts: tuple[_Draft, ...], facts: AdmissionFacts,
                now: float) -> tuple[tuple[NewMessage, ...], Accepted]:
        """The pre-send rules, a pure function of the store's facts (runs inside its transaction)."""
        by_recipient: dict[str, list[RecentSend]] = {}
        for h in facts.history:
            by_recipient.setdefault(h.recipient, []).append(h)
        messages: list[NewMessage] = []
        finals: list[tuple[str, Verdict]] = []
        for draft in drafts:
            msg = draft.message
            if msg is None:
                continue
            verdict = draft.verdict
            if verdict is None and draft.number in facts.blacklisted:
                verdict = REJECTED_BLACKLIST
            if verdict is None:
                verdict = self._limiter.check(draft.number, msg.content_hash, now,
                                              by_recipient.get(draft.number, ()))
            verdict = verdict or draft.late_verdict
            if verdict is not None:
                finals.append((msg.id, verdict))
                if draft.verdict is None:   # decided here: nothing to send, nothing counted
                    msg = dataclasses.replace(msg, state=MessageState.QUEUED, release_at=None, segments=(),
                                              counted=False)
            messages.append(msg)
        out = tuple(messages)
        return out, Accepted(rows, out, tuple(finals))
