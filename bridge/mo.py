"""Uplink (MO) replies: decode, reassemble, find the application, unsubscribe, queue the push.

Everything here writes into the store's open transaction and never waits: the caller
acknowledges the deliver_sm only once :meth:`Store.durable` fires, so a part or a whole
MO is committed before the SMSC forgets it. Parts live only in the store (never in
memory), which is what lets a restart between parts still produce the whole reply.

Decisions worth knowing:

- The channel is the LONGEST configured channel number that is a prefix of the
  destination (``channel number + extension``). Nothing is added to or stripped from
  the destination (no guessing about a leading ``106``): configure channel numbers the
  way the carrier writes the destination.
- An MO to an unknown destination is stored (channel and application NULL), counted
  and logged, never pushed and never dropped.
- Each part is decoded on its own. A sender is not supposed to split a UTF-16
  surrogate pair or a GSM-7 escape across parts; one that does gets U+FFFD for each
  half instead of a lost reply.
- An unsubscribe keyword is matched on incomplete MOs too: their text is all that is
  known, and a missed unsubscribe costs far more than a spurious one.
- An SMSC redelivers a part whose deliver_sm_resp it missed, possibly after the reply
  was assembled. Such a part is stored like any other (nothing is decided on arrival,
  so a new reply reusing the reference loses nothing); only if its set expires
  incomplete and every part in it equals the committed reply assembled under the same
  key is the set discarded as a redelivery instead of forwarded as a fragment. That
  memory is in-process: after a restart the fragment is forwarded, marked incomplete.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from twisted.internet.defer import Deferred

from bridge.config import AppConfig, BridgeConfig, ChannelConfig
from bridge.finaliser import iso_time
from bridge.ids import new_message_id
from bridge.logs import mask_number
from bridge.models import InboundMessage, NewMo
from bridge.numbers import InvalidNumberError, normalise_number
from bridge.store import Store
from bridge.store.records import MoPart as StoredPart
from bridge.store.records import PushKind
from bridge.textcodec import ConcatInfo, decode_short_message, split_udh
from bridge.unsubscribe import UnsubscribeMatcher

__all__ = [
    "DOWNLINK_WINDOW_S",
    "MoHandler",
    "MoPart",
    "MoStats",
    "decode_mo",
    "longest_channel",
    "part_key",
]

log = structlog.get_logger("mo")

# A reply answers a downlink sent at most this long ago: the receipt timeout (72 h),
# after which the platform itself considers the downlink finished.
DOWNLINK_WINDOW_S: Final = 3 * 86_400.0
_MAX_PARTS: Final = 255
_MAX_REMEMBERED: Final = 10_000  # assembled replies kept to recognise redelivered parts



@dataclass(frozen=True, slots=True)
class MoPart:
    """One deliver_sm's worth of an MO, decoded; ``ref_kind`` None means not concatenated."""

    source: str
    destination: str
    text: str
    ref_kind: str | None  # "udh8" | "udh16" | "sar"
    ref: int
    total: int
    seq: int


@dataclass(frozen=True, slots=True)
class MoStats:
    """Counters since start, except ``parts_pending``, which is read from the store at start."""

    received: int             # deliver_sm MOs handled; every part counts
    parts_pending: int        # parts stored, waiting for the rest of their reply
    stored: int               # whole MOs stored: single, assembled or incomplete
    assembled: int            # multi-part MOs completed with every part
    incomplete: int           # multi-part MOs forwarded at TTL with parts missing
    unsubscribed: int         # unsubscribe replies applied to a channel's blacklist
    unknown_destination: int  # MOs whose destination matches no channel number
    unexpected: int           # MOs from a carrier whose profile has no MO (or unknown carrier)
    pushed_queued: int        # uplink pushes queued
    redelivered: int          # parts repeating an assembled reply, discarded at expiry


def _concat(udh: ConcatInfo | None, fields: Mapping[str, Any]) -> tuple[str, int, int, int] | None:
    """(kind, ref, total, seq) from the UDH, else from valid SAR TLVs, else None."""
    if udh is not None:
        return ("udh8" if udh.ref_bits == 8 else "udh16"), udh.ref, udh.total, udh.seq
    ref = fields.get("sar_msg_ref_num")
    total = fields.get("sar_total_segments")
    seq = fields.get("sar_segment_seqnum")
    if not all(isinstance(v, int) for v in (ref, total, seq)):
        return None
    # Like a UDH concatenation IE (TS 23.040 9.2.3.24.1), nonsense numbering is ignored:
    # the part is then handled as a whole reply rather than waiting forever.
    if not 1 <= seq <= total <= _MAX_PARTS:
        return None
    return "sar", ref, total, seq


def decode_mo(message: InboundMessage, dc0: str) -> MoPart:
    """Text and concatenation of an MO deliver_sm; ``dc0`` is the carrier's data_coding 0.

    The text is ``message_payload`` when present (SMPP 3.4: sm_length is then 0), else
    ``short_message``. Decoding never raises: odd octets become U+FFFD.
    """
    fields = message
    raw: Any = fields.get("message_payload") or fields.get("short_message") or b""
    if isinstance(raw, str):
        raw = raw.encode("latin-1", errors="replace")
    udh, payload = split_udh(bytes(raw), int(fields.get("esm_class") or 0))
    text = decode_short_message(payload, int(fields.get("data_coding") or 0), dc0)
    concat = _concat(udh, fields)
    source = str(fields.get("source_addr") or "").strip()
    destination = str(fields.get("destination_addr") or "").strip()
    if concat is None or concat[2] == 1:
        return MoPart(source, destination, text, None, 0, 1, 1)
    kind, ref, total, seq = concat
    return MoPart(source, destination, text, kind, ref, total, seq)


def part_key(carrier: str, part: MoPart) -> str:
    """The reassembly key: (carrier, source, destination, reference), as the SMSC wrote them.

    The reference kind and the total are part of it, so two replies that happen to share
    a reference number but not their numbering are never mixed.
    """
    return json.dumps([carrier, part.source, part.destination, part.ref_kind, part.ref, part.total],
                      ensure_ascii=False, separators=(",", ":"))


def longest_channel(channels: Mapping[str, ChannelConfig], destination: str) -> ChannelConfig | None:
    """The channel with the longest number that is a prefix of ``destination``, if any."""
    for end in range(len(destination), 0, -1):
        channel = channels.get(destination[:end])
        if channel is not None:
            return channel
    return None


#: SMPP 3.4 source_addr is at most 20 characters; shorter than 3 is no subscriber.
_MO_DIGITS: Final = range(3, 21)


def _e164_or_raw(raw: str) -> str:
    try:
        return normalise_number(raw)
    except InvalidNumberError:
        return raw


def valid_mo_source(raw: str) -> bool:
    """Digits with an optional leading ``+``, 3 to 20 of them: anything else is not a sender.

    Such an MO is still stored and forwarded (flagged), but it never reaches a blacklist,
    where ``abc\xff\xfe`` would sit for ever matching nobody.
    """
    digits = raw[1:] if raw.startswith("+") else raw
    return digits.isascii() and digits.isdigit() and len(digits) in _MO_DIGITS


class MoHandler:
    """The ``on_mo`` sink of the inbound handler, plus the TTL sweep of partial replies."""

    def __init__(self, config: BridgeConfig, store: Store, *, now: Callable[[], float],
                 on_push: Callable[[], None] = lambda: None) -> None:
        self._config = config
        self._store = store
        self._now = now
        self._on_push = on_push
        self._matcher = UnsubscribeMatcher(config.rules.unsubscribe_keywords)
        self._ttl = config.rules.mo_reassembly_ttl_s
        self._received = 0
        self._stored = 0
        self._assembled = 0
        self._incomplete = 0
        self._unsubscribed = 0
        self._unknown = 0
        self._unexpected = 0
        self._pushed = 0
        self._redelivered = 0
        # key -> (assembled at, {seq: text}) of replies assembled and committed.
        self._assembled_keys: OrderedDict[str, tuple[float, dict[int, str]]] = OrderedDict()
        # Parts that survived a restart are still pending; counted once, by start().
        self._parts_pending = 0

    def start(self) -> Deferred[None]:
        """Count the parts a previous run left waiting for their siblings."""
        def counted(n: int) -> None:
            self._parts_pending = n
        return self._store.mo.pending_part_count().addCallback(counted)

    @property
    def stats(self) -> MoStats:
        return MoStats(
            received=self._received, parts_pending=self._parts_pending, stored=self._stored,
            assembled=self._assembled, incomplete=self._incomplete, unsubscribed=self._unsubscribed,
            unknown_destination=self._unknown, unexpected=self._unexpected, pushed_queued=self._pushed,
            redelivered=self._redelivered,
        )

    def on_mo(self, carrier: str, message: InboundMessage) -> Deferred[bool]:
        """Store one MO deliver_sm (a whole reply or one part); fires True if a push was queued."""
        return Deferred.fromCoroutine(self._on_mo(carrier, message))

    async def _on_mo(self, carrier: str, message: InboundMessage) -> bool:
        now = self._now()
        self._received += 1
        part = decode_mo(message, self._dc0(carrier))
        if part.ref_kind is None:
            queued = await self._process(carrier, part.source, part.destination, part.text, now, incomplete=False)
        else:
            queued = await self._add_part(carrier, part, now)
        if queued:
            self._on_push()
        return queued

    def expire_stale(self) -> Deferred[int]:
        """Forward every partial reply older than the TTL with what arrived; fires with how many."""
        return Deferred.fromCoroutine(self._expire_stale())

    async def _expire_stale(self) -> int:
        cutoff = self._now() - self._ttl
        self._forget_assembled(cutoff - 2 * self._ttl)
        count, queued = 0, False
        for key in await self._store.mo.stale_keys(cutoff):
            parts = await self._store.mo.parts(key)
            if not parts:
                continue
            total = parts[0].total
            if len(parts) < total and self._is_redelivery(key, parts):
                await self._discard_redelivery(key, parts)
                continue
            log.info("mo.expired", carrier=parts[0].carrier, parts=len(parts), total=total)
            queued |= await self._assemble(key, parts, incomplete=len(parts) < total)
            count += 1
        if queued:
            self._on_push()
        return count

    # -- reassembly ------------------------------------------------------------------

    def _dc0(self, carrier: str) -> str:
        cfg = self._config.carriers.get(carrier)
        return cfg.profile.data_coding_0 if cfg is not None else "gsm7"

    async def _add_part(self, carrier: str, part: MoPart, now: float) -> bool:
        key = part_key(carrier, part)
        present = {p.seq for p in await self._store.mo.parts(key)}
        # An SMSC redelivery of the same seq replaces the part.
        await self._store.mo.add_part(key, StoredPart(part.seq, part.total, part.text, now, carrier,
                                                      part.source, part.destination))
        if part.seq in present:
            log.info("mo.part_duplicate", carrier=carrier, seq=part.seq, total=part.total)
        else:
            self._parts_pending += 1
            present.add(part.seq)
        log.debug("mo.part_stored", carrier=carrier, seq=part.seq, total=part.total, present=len(present))
        if len(present) < part.total:
            # Another part may have been stored since we looked (a concurrent handler, or
            # another instance): the store, not our first look, says whether it is whole.
            present = {p.seq for p in await self._store.mo.parts(key)}
            if len(present) < part.total:
                return False
        parts = await self._store.mo.parts(key)
        if len(parts) < part.total:   # another handler assembled it meanwhile
            return False
        queued = await self._assemble(key, parts, incomplete=False)
        texts = {p.seq: p.text for p in parts}
        # Remember only once committed: after a failed commit the SMSC redelivers every
        # unacknowledged part, and those must assemble into the reply, not be discarded.
        self._store.durable().addCallbacks(lambda _: self._remember_assembled(key, now, texts),
                                           lambda _: None)
        return queued

    def _is_redelivery(self, key: str, parts: list[StoredPart]) -> bool:
        """Whether every stored part repeats, within the TTL, the reply assembled under ``key``."""
        done = self._assembled_keys.get(key)
        if done is None:
            return False
        assembled_at, texts = done
        return min(p.received_at for p in parts) - assembled_at <= self._ttl and all(
            texts.get(p.seq) == p.text for p in parts)

    async def _discard_redelivery(self, key: str, parts: list[StoredPart]) -> None:
        await self._store.mo.delete_parts(key)
        self._parts_pending = max(0, self._parts_pending - len(parts))
        self._redelivered += len(parts)
        log.info("mo.redelivery_discarded", carrier=parts[0].carrier, parts=len(parts), total=parts[0].total)

    def _remember_assembled(self, key: str, at: float, texts: dict[int, str]) -> None:
        self._assembled_keys[key] = (at, texts)
        self._assembled_keys.move_to_end(key)
        while len(self._assembled_keys) > _MAX_REMEMBERED:
            self._assembled_keys.popitem(last=False)

    def _forget_assembled(self, before: float) -> None:
        while self._assembled_keys:
            key, (at, _) = next(iter(self._assembled_keys.items()))
            if at >= before:
                break
            del self._assembled_keys[key]

    async def _assemble(self, key: str, parts: list[StoredPart], incomplete: bool) -> bool:
        """Join the stored parts in seq order, delete them and process the whole reply."""
        text = "".join(p.text for p in parts)  # parts are ordered by seq
        received_at = max(p.received_at for p in parts)
        first = parts[0]
        if not await self._store.mo.delete_parts(key):
            return False   # claimed by a concurrent handler (or instance): it forwards the reply
        self._parts_pending = max(0, self._parts_pending - len(parts))
        if incomplete:
            self._incomplete += 1
        else:
            self._assembled += 1
        return await self._process(first.carrier, first.source, first.destination, text, received_at,
                                   incomplete=incomplete)

    # -- one whole reply -------------------------------------------------------------

    async def _process(self, carrier: str, raw_source: str, destination: str, body: str, received_at: float,
                       *, incomplete: bool) -> bool:
        """Store the MO, apply an unsubscribe, queue the uplink push; True if a push was queued."""
        now = self._now()
        valid_source = valid_mo_source(raw_source)
        number = _e164_or_raw(raw_source) if valid_source else raw_source
        if not valid_source:
            # ascii(): escapes make the garbage readable; the redactor still masks digit runs.
            log.warning("mo.invalid_source", carrier=carrier, source_addr=ascii(raw_source))
        channel = longest_channel(self._config.channels, destination)
        app = self._config.apps.get(channel.app) if channel is not None else None
        mo_id = new_message_id(received_at)
        downlink_id = None
        if channel is not None:
            recent = await self._store.messages.recent_downlinks(channel.number, number, now - DOWNLINK_WINDOW_S)
            downlink_id = recent[0] if len(recent) == 1 else None
        unsubscribe = self._matcher.matches(body)
        await self._store.mo.insert(NewMo(
            id=mo_id, carrier=carrier, source=number, destination=destination,
            channel=channel.number if channel is not None else None,
            app_id=app.id if app is not None else None, body=body, created_at=received_at,
            incomplete=incomplete, unsubscribe=unsubscribe, downlink_id=downlink_id,
        ))
        self._stored += 1
        self._check_carrier(carrier, mo_id)
        if unsubscribe and valid_source:
            await self._unsubscribe(channel, number, now, mo_id)
        elif unsubscribe:
            log.warning("mo.unsubscribe_invalid_source", mo_id=mo_id)
        if channel is None:
            self._unknown += 1
            log.warning("mo.unknown_destination", mo_id=mo_id, carrier=carrier,
                        destination=mask_number(destination))
        queued = await self._queue_uplink(app, mo_id, number, destination, body, received_at, now,
                                          valid_source=valid_source)
        log.info("mo.stored", mo_id=mo_id, carrier=carrier,
                 channel=channel.number if channel is not None else None,
                 app=app.id if app is not None else None, incomplete=incomplete, unsubscribe=unsubscribe,
                 downlink_id=downlink_id, pushed=queued)
        return queued

    def _check_carrier(self, carrier: str, mo_id: str) -> None:
        cfg = self._config.carriers.get(carrier)
        if cfg is not None and cfg.profile.mo:
            return
        self._unexpected += 1
        reason = "unknown carrier" if cfg is None else "carrier profile has no MO"
        log.warning("mo.unexpected", mo_id=mo_id, carrier=carrier, reason=reason)

    async def _unsubscribe(self, channel: ChannelConfig | None, number: str, now: float, mo_id: str) -> None:
        if channel is None:
            log.warning("mo.unsubscribe_unknown_channel", mo_id=mo_id, number=mask_number(number))
            return
        added = await self._store.blacklist.add(channel.number, number, now, mo_id)
        self._unsubscribed += 1
        log.info("mo.unsubscribed", mo_id=mo_id, channel=channel.number, number=mask_number(number),
                 already_listed=not added)

    async def _queue_uplink(self, app: AppConfig | None, mo_id: str, number: str, destination: str, body: str,
                            received_at: float, now: float, *, valid_source: bool = True) -> bool:
        if app is None:
            return False
        if not app.uplink_url:
            log.info("mo.no_uplink_url", mo_id=mo_id, app=app.id)
            return False
        fields: dict[str, Any] = {"smsMsgId": mo_id, "from": number, "to": destination, "body": body,
                                  "createTime": iso_time(received_at)}
        if not valid_source:
            fields["fromInvalid"] = True  # not a phone number: the application decides what to do
        payload = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        if await self._store.outbox.queue(PushKind.UPLINK, mo_id, app.uplink_url, payload, now) is None:
            return False
        self._pushed += 1
        return True
