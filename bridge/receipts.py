"""Delivery receipts: parse a deliver_sm receipt and map it to a platform status.

Pure code over the decoded PDU field mapping (:attr:`bridge.smpp.codec.Pdu.fields`);
the only I/O is :meth:`StatusMap.load` reading its table. Carriers write receipts in
many shapes (TLVs only, Appendix B text, sloppy text in ``message_payload``), so
:func:`parse_receipt` tries the TLVs first, then the Appendix B text strictly, then a
tolerant scanner, and keeps what the carrier wrote raw. What a ``stat`` means varies
by province and vendor, so the mapping is data: ``carriers/receipt_codes.toml``.

Decisions, in one place:

- A deliver_sm is a receipt when ``esm_class`` has bit 0x04 (SMSC delivery receipt)
  or its message type is 0x20 (intermediate delivery notification, SMSC-made status).
  SME acknowledgements (0x08, 0x10) come from the recipient's handset and carry its
  text, not a ``stat``: they go down the MO path so no user text is lost.
- ``Receipt.stat`` is the text's ``stat`` when there is one (carrier codes such as
  ``MK:0024`` only appear there), else the SMPP word for ``message_state``.
- ``Receipt.err`` is the text's ``err`` unless that is all zeros and the
  ``network_error_code`` TLV says more; the TLV is written ``<type>:<code>`` with the
  code as three or more decimal digits, e.g. ``3:013``.
- ``MappedStatus.org_code`` is ``stat`` alone when ``err`` is empty or all zeros,
  else ``stat/err``: ``MK:0024``, ``DELIVRD``, ``UNDELIV/3:013``, ``MK:0024/024``.
  With no stat and an unlisted ``message_state`` it is ``message_state:<n>``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from bridge import jsonfast
from bridge.fastinit import fast_init
from carriers.profiles import DEFAULT_PROFILES_PATH, canonical_message_id

__all__ = [
    "DEFAULT_RECEIPT_CODES_PATH",
    "FINAL_STATUSES",
    "MESSAGE_STATE_STATS",
    "MappedStatus",
    "RAW_FIELD_MAX",
    "Receipt",
    "ReceiptParseError",
    "StatusMap",
    "StatusMapError",
    "is_receipt",
    "parse_receipt",
    "receipt_datetime",
    "receipt_from_json",
    "receipt_to_json",
]

DEFAULT_RECEIPT_CODES_PATH = DEFAULT_PROFILES_PATH.with_name("receipt_codes.toml")
FINAL_STATUSES = frozenset({"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD"})
_SOURCES = ("tlv", "text", "tolerant")

# SMPP 3.4 section 5.3.2.35: protocol constants, used to name a TLV-only receipt's
# stat. How each word maps to a platform status is data (receipt_codes.toml).
MESSAGE_STATE_STATS: Mapping[int, str] = MappingProxyType({
    1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED",
    5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD",
})

_ESM_RECEIPT_BIT = 0x04
_ESM_TYPE_MASK = 0x3C
_ESM_INTERMEDIATE = 0x20
_DATA_CODING_UCS2 = 8
_MAX_ID = 65          # SMPP message_id is at most 65 octets
_MAX_CODE = 32        # a stat or err longer than this is garbage; keep a bounded prefix
_JSON_VERSION = 1
#: Stored characters of each receipt field (JSON-escaped): plenty for any real receipt.
RAW_FIELD_MAX = 2048
_JSON_CHARS_MAX = 12   # most ASCII JSON characters for one character: a surrogate pair, "\ud83d\ude00"

# Appendix B exactly: lower-case labels (Text may be capitalised), 3-digit sub/dlvrd,
# 10-digit dates, 7-character stat, 3-character err, up to 20 characters of text.
_STRICT = re.compile(
    r"id:(?P<id>\S{1,65}) sub:\d{3} dlvrd:\d{3}"
    r" submit date:(?P<submit>\d{10}) done date:(?P<done>\d{10})"
    r" stat:(?P<stat>\S{7}) err:(?P<err>\S{3}) [Tt]ext:(?P<text>.{0,20})",
    re.DOTALL,
)
# A label starts the text or follows a blank or separator, so the "ID" in
# "stat:ID:0076" is not taken for the id label. Bounded repeats only.
_LABEL = re.compile(
    r"(?:^|(?<=[\s,;|&]))"
    r"(?P<label>(?:msg_?|message_?)?id|sub|dlvrd|dlvd|submit[ _]?date|done[ _]?date"
    r"|stat(?:us|e)?|err(?:or)?|text)"
    r"[ \t]{0,8}:",
    re.IGNORECASE,
)
_LABEL_KEYS = {
    "id": "id", "msgid": "id", "messageid": "id",
    "sub": "sub", "dlvrd": "dlvrd", "dlvd": "dlvrd",
    "submitdate": "submit", "donedate": "done",
    "stat": "stat", "status": "stat", "state": "stat",
    "err": "err", "error": "err", "text": "text",
}
_NON_DIGITS = re.compile(r"\D+")
_FAMILY = re.compile(r"([A-Z]{2}):")
_TOKEN_TRIM = ",;|&\"'"
_BLANKS = "\x00 \t\r\n"
_DATE_FORMATS = {10: ("%y%m%d%H%M",), 12: ("%y%m%d%H%M%S", "%Y%m%d%H%M"), 14: ("%Y%m%d%H%M%S",)}


class ReceiptParseError(ValueError):
    """A deliver_sm flagged as a receipt that names no message id at all."""


class StatusMapError(ValueError):
    """A receipt code table that cannot be used; the message names file and key."""


@fast_init
@dataclass(frozen=True, slots=True)
class Receipt:
    """One delivery receipt as the carrier wrote it; nothing here is normalised."""

    message_id: str  # raw id as the carrier wrote it
    stat: str  # raw stat ("DELIVRD", "MK:0024"), or the message_state word if no text stat
    err: str  # raw err, or network_error_code as "<type>:<code>", "" if none
    message_state: int | None
    submit_date: str  # raw digits as written (10, 12 or 14), "" if none
    done_date: str
    text: str  # the receipt's "text:" field
    source: str  # where the id came from: "tlv" | "text" (strict Appendix B) | "tolerant"
    raw: str = ""  # the whole receipt text as decoded, "" when only TLVs came

    def canonical_id(self, dialect: str) -> str:
        """The id in the carrier profile's canonical form, to match submit_sm_resp ids."""
        return canonical_message_id(dialect, self.message_id)


@fast_init
@dataclass(frozen=True, slots=True)
class MappedStatus:
    """A receipt's platform status; ``final`` is False while the message is en route."""

    status: str  # DELIVRD|UNDELIV|EXPIRED|REJECTD|<pass-through code>; the stat word if not final
    org_code: str  # the carrier's raw stat (and err): "MK:0024", "UNDELIV/3:013"
    final: bool


@fast_init
@dataclass(frozen=True, slots=True)
class _TextFields:
    id: str = ""
    stat: str = ""
    err: str = ""
    submit: str = ""
    done: str = ""
    text: str = ""


def is_receipt(fields: Mapping[str, object]) -> bool:
    """True for an SMSC receipt or intermediate notification; every other deliver_sm is an MO."""
    esm = fields.get("esm_class")
    if not isinstance(esm, int) or isinstance(esm, bool):
        return False
    return bool(esm & _ESM_RECEIPT_BIT) or (esm & _ESM_TYPE_MASK) == _ESM_INTERMEDIATE


def parse_receipt(fields: Mapping[str, object]) -> Receipt:
    """Read a receipt from decoded deliver_sm fields: TLVs, then strict text, then tolerant text.

    Raises :class:`ReceiptParseError` only when no message id can be found anywhere.
    """
    if not isinstance(fields, Mapping):
        raise ReceiptParseError(f"receipt fields must be a mapping, got {type(fields).__name__}")
    tlv_id = _clean_id(_as_text(fields.get("receipted_message_id")))
    state = fields.get("message_state")
    if not isinstance(state, int) or isinstance(state, bool):
        state = None
    tlv_err = _network_error(fields.get("network_error_code"))
    parsed, kind, raw = _parse_text(fields)
    message_id = tlv_id or parsed.id
    if not message_id:
        raise ReceiptParseError(
            "receipt names no message id: no receipted_message_id TLV and no id: field in "
            f"{len(raw)} characters of receipt text"
        )
    stat = parsed.stat or (MESSAGE_STATE_STATS.get(state, "") if state is not None else "")
    err = parsed.err
    if tlv_err and (not err or _is_zero(err)):
        err = tlv_err
    return Receipt(
        message_id=message_id,
        stat=stat,
        err=err,
        message_state=state,
        submit_date=parsed.submit,
        done_date=parsed.done,
        text=parsed.text,
        source="tlv" if tlv_id else kind,
        raw=raw,
    )


def receipt_datetime(value: str) -> datetime | None:
    """A receipt date as a naive datetime in the carrier's clock, or None if unreadable.

    10 digits are YYMMDDhhmm (Appendix B), 14 are YYYYMMDDhhmmss; 12 are read as
    YYMMDDhhmmss, the common form, and as YYYYMMDDhhmm only when that fails.
    """
    digits = value.strip()
    if not digits.isascii() or not digits.isdigit():
        return None
    for fmt in _DATE_FORMATS.get(len(digits), ()):
        try:
            return datetime.strptime(digits, fmt)
        except ValueError:
            continue
    return None


def receipt_to_json(receipt: Receipt) -> str:
    """One line of ASCII JSON, so raw receipts can be logged and replayed (JSON lines).

    Each text field is cut to :data:`RAW_FIELD_MAX` characters of JSON, so an SMSC that
    sends a 60 KB receipt cannot grow the store by 60 KB a time; the cut fields are
    listed under ``"truncated"`` with their original lengths, and the line still reads
    back with :func:`receipt_from_json`.
    """
    texts = (receipt.message_id, receipt.stat, receipt.err, receipt.submit_date, receipt.done_date,
             receipt.text, receipt.source, receipt.raw)
    try:
        joined = "".join(texts)
    except TypeError:   # a field that is not text
        return _receipt_to_json_general(receipt)
    if max(map(len, texts)) * _JSON_CHARS_MAX <= RAW_FIELD_MAX and _orjson_writes_it(joined):
        # Nearly every receipt: short ASCII text fields, nothing to cut, and orjson writes
        # the bytes json.dumps would (the loop below: ~45 calls a receipt, this: ~6).
        return jsonfast.dumps_flat({
            "v": _JSON_VERSION, "message_id": receipt.message_id, "stat": receipt.stat, "err": receipt.err,
            "message_state": receipt.message_state, "submit_date": receipt.submit_date,
            "done_date": receipt.done_date, "text": receipt.text, "source": receipt.source, "raw": receipt.raw})
    return _receipt_to_json_general(receipt)


def _orjson_writes_it(text: str) -> bool:
    """ASCII that orjson writes as json.dumps does: json escapes DEL (0x7F), orjson does not."""
    return text.isascii() and "\x7f" not in text


def _receipt_to_json_general(receipt: Receipt) -> str:
    """:func:`receipt_to_json` field by field: long or non-ASCII fields, cut where they must be."""
    fields: dict[str, object] = {"v": _JSON_VERSION}
    truncated: dict[str, int] = {}
    for key in ("message_id", "stat", "err", "message_state", "submit_date", "done_date", "text",
                "source", "raw"):
        value = getattr(receipt, key)
        if isinstance(value, str):
            kept = _capped(value)
            if len(kept) < len(value):
                truncated[key] = len(value)
            value = kept
        fields[key] = value
    if truncated:
        fields["truncated"] = truncated
    elif all(type(v) is not str or _orjson_writes_it(v) for v in fields.values()):
        # Plain ASCII, long fields kept whole: orjson writes the bytes json.dumps would.
        return jsonfast.dumps_flat(fields)   # type: ignore[arg-type]
    return json.dumps(fields, separators=(",", ":"))


def _capped(value: str) -> str:
    """A prefix of ``value`` whose ASCII JSON form fits in RAW_FIELD_MAX characters (cut in
    proportion to the escaping, so about as long as fits)."""
    if len(value) * _JSON_CHARS_MAX <= RAW_FIELD_MAX:
        return value   # fits whatever it holds: the usual receipt field, no encoding to measure
    cut = value[:RAW_FIELD_MAX]
    while len(json.dumps(cut)) - 2 > RAW_FIELD_MAX:
        cut = cut[: len(cut) * RAW_FIELD_MAX // (len(json.dumps(cut)) - 2)]
    return cut


def receipt_from_json(obj: str | bytes | Mapping[str, object]) -> Receipt:
    """Rebuild a :class:`Receipt` from :func:`receipt_to_json` text or its decoded object."""
    if isinstance(obj, str | bytes | bytearray):
        try:
            obj = json.loads(obj)
        except (ValueError, RecursionError) as exc:
            raise ReceiptParseError(f"receipt JSON is not valid JSON: {exc}") from None
    if not isinstance(obj, Mapping):
        raise ReceiptParseError("receipt JSON must be an object")
    if obj.get("v", _JSON_VERSION) != _JSON_VERSION:
        raise ReceiptParseError(f"receipt JSON version {obj.get('v')!r} is not {_JSON_VERSION}")
    text: dict[str, str] = {}
    for key in ("message_id", "stat", "err", "submit_date", "done_date", "text", "source", "raw"):
        value = obj.get(key, "")
        if not isinstance(value, str):
            raise ReceiptParseError(f"receipt JSON: {key} must be a string")
        text[key] = value
    if not text["message_id"]:
        raise ReceiptParseError("receipt JSON: message_id is missing or empty")
    if text["source"] not in _SOURCES:
        raise ReceiptParseError(f"receipt JSON: source must be one of {', '.join(_SOURCES)}")
    state = obj.get("message_state")
    if state is not None and (not isinstance(state, int) or isinstance(state, bool)):
        raise ReceiptParseError("receipt JSON: message_state must be an integer or null")
    return Receipt(
        message_id=text["message_id"],
        stat=text["stat"],
        err=text["err"],
        message_state=state,
        submit_date=text["submit_date"],
        done_date=text["done_date"],
        text=text["text"],
        source=text["source"],
        raw=text["raw"],
    )


class StatusMap:
    """Receipt ``stat`` (and ``message_state``) to platform status, from a data table.

    Lookup order: exact carrier code, carrier family (``XX:`` prefix), the
    ``message_state`` TLV, the standard words, then ``default_status``. See the
    comments in ``carriers/receipt_codes.toml``.
    """

    __slots__ = ("_default", "_exact", "_families", "_intermediate", "_pass_through",
                 "_standard", "_states")

    def __init__(
        self,
        *,
        standard: Mapping[str, str],
        exact: Mapping[str, str],
        families: Mapping[str, str],
        message_state: Mapping[int, str],
        intermediate: Iterable[str],
        pass_through: Iterable[str] = ("MBBLACK",),
        default_status: str = "UNDELIV",
        source: str = "<StatusMap>",
    ) -> None:
        self._standard = _status_table(source, "standard", standard)
        self._exact = _status_table(source, "exact", exact)
        self._families = _status_table(source, "families", families)
        for family in self._families:
            if not re.fullmatch(r"[A-Z]{2}", family):
                raise StatusMapError(f"{source}: families.{family}: a family is two letters")
        self._intermediate = frozenset(_code(w) for w in intermediate)
        overlap = self._intermediate & self._standard.keys()
        if overlap:
            raise StatusMapError(
                f"{source}: intermediate: {', '.join(sorted(overlap))} also listed in [standard]"
            )
        states: dict[int, str] = {}
        for key, word in message_state.items():
            word = _code(word)
            if word not in self._standard and word not in self._intermediate:
                raise StatusMapError(
                    f"{source}: message_state.{key}: {word!r} is not in [standard] or intermediate"
                )
            states[key] = word
        self._states = MappingProxyType(states)
        if default_status not in FINAL_STATUSES:
            raise StatusMapError(f"{source}: default_status: {default_status!r} is not a final status")
        self._default = default_status
        self._pass_through = frozenset(_code(c) for c in pass_through)
        for code in sorted(self._pass_through):
            if self._carrier_class(code) is None:
                raise StatusMapError(
                    f"{source}: pass_through: {code!r} has no class in [exact] or [families]"
                )

    @classmethod
    def load(cls, path: Path | str | None = None) -> StatusMap:
        """Load ``carriers/receipt_codes.toml`` (or ``path``); raise :class:`StatusMapError`."""
        path = Path(path) if path is not None else DEFAULT_RECEIPT_CODES_PATH
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StatusMapError(f"{path}: {exc}") from None
        return cls.loads(text, source=str(path))

    @classmethod
    def loads(cls, text: str, *, source: str = "<string>") -> StatusMap:
        """Build a map from TOML text in the ``receipt_codes.toml`` layout."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise StatusMapError(f"{source}: {exc}") from None
        states: dict[int, str] = {}
        for key, word in _table(source, raw, "message_state").items():
            try:
                states[int(key)] = word
            except ValueError:
                raise StatusMapError(f"{source}: message_state.{key}: not an integer") from None
        return cls(
            standard=_table(source, raw, "standard"),
            exact=_table(source, raw, "exact"),
            families=_table(source, raw, "families"),
            message_state=states,
            intermediate=_strings(source, raw, "intermediate", ()),
            pass_through=_strings(source, raw, "pass_through", ("MBBLACK",)),
            default_status=str(raw.get("default_status", "UNDELIV")),
            source=source,
        )

    @property
    def pass_through(self) -> frozenset[str]:
        """Codes reported as the status themselves rather than as their class."""
        return self._pass_through

    def map(self, receipt: Receipt) -> MappedStatus:
        """The platform status for ``receipt``; the carrier's raw codes go to ``org_code``."""
        org = _org_code(receipt)
        code = _code(receipt.stat)
        carrier_class = self._carrier_class(code)
        if carrier_class is not None:
            status = code if code in self._pass_through else carrier_class
            return MappedStatus(status, org, True)
        word = self._states.get(receipt.message_state) if receipt.message_state is not None else None
        if word is None:
            word = code
        if word in self._intermediate:
            return MappedStatus(word, org, False)
        return MappedStatus(self._standard.get(word, self._default), org, True)

    def _carrier_class(self, code: str) -> str | None:
        found = self._exact.get(code)
        if found is None:
            family = _FAMILY.match(code)
            if family is not None:
                found = self._families.get(family.group(1))
        return found


def _parse_text(fields: Mapping[str, object]) -> tuple[_TextFields, str, str]:
    """Parse short_message, else message_payload: (fields, "text"|"tolerant", raw text)."""
    data_coding = fields.get("data_coding")
    fallback: tuple[_TextFields, str, str] = (_TextFields(), "tolerant", "")
    candidates = (
        raw
        for name in ("short_message", "message_payload")
        for raw in _decodings(fields.get(name), data_coding)
    )
    for raw in candidates:
        if not raw:
            continue
        strict = _STRICT.fullmatch(raw)
        if strict is not None:
            return (
                _TextFields(
                    id=strict["id"], stat=strict["stat"], err=strict["err"],
                    submit=strict["submit"], done=strict["done"], text=strict["text"],
                ),
                "text",
                raw,
            )
        tolerant = _tolerant(raw)
        if tolerant.id or tolerant.stat:
            return tolerant, "tolerant", raw
        if not fallback[2]:
            fallback = (tolerant, "tolerant", raw)
    return fallback


def _tolerant(raw: str) -> _TextFields:
    """Scan labelled fields in any order and case; the first occurrence of a label wins."""
    text = raw.replace("\x00", " ")
    spans: list[tuple[str, int, int]] = []  # (key, label start, value start)
    for match in _LABEL.finditer(text):
        key = _LABEL_KEYS[match["label"].lower().replace("_", "").replace(" ", "")]
        if any(seen == key for seen, _, _ in spans):
            continue
        if spans:
            prev_key, _, prev_value = spans[-1]
            # "stat: ID:0076": a carrier code that looks like the id label.
            if key == "id" and prev_key in ("stat", "err") and not text[prev_value:match.start()].strip():
                continue
            if prev_key == "text" and {"id", "stat"} <= {k for k, _, _ in spans}:
                break
        spans.append((key, match.start(), match.end()))
    values: dict[str, str] = {}
    for index, (key, _, value_start) in enumerate(spans):
        end = spans[index + 1][1] if index + 1 < len(spans) else len(text)
        values[key] = text[value_start:end].strip()
    return _TextFields(
        id=_first_token(values.get("id", ""), _MAX_ID),
        stat=_first_token(values.get("stat", ""), _MAX_CODE),
        err=_first_token(values.get("err", ""), _MAX_CODE),
        submit=_date(values.get("submit", "")),
        done=_date(values.get("done", "")),
        text=values.get("text", ""),
    )


def _first_token(value: str, limit: int) -> str:
    token = value.split(None, 1)[0] if value.strip() else ""
    return token.strip(_TOKEN_TRIM)[:limit]


def _date(value: str) -> str:
    digits = _NON_DIGITS.sub("", value)
    if len(digits) in _DATE_FORMATS:
        return digits
    return _first_token(value, 14)


def _decodings(value: object, data_coding: object) -> tuple[str, ...]:
    """Readings of a text field to try in turn.

    Receipt text is ASCII, but many SMSCs copy the original message's data_coding
    (UCS-2 for every mainland message) into the receipt, so UCS-2 is tried first and
    Latin-1 after it.
    """
    if isinstance(value, str):
        return (value.strip(_BLANKS),)
    if not isinstance(value, bytes | bytearray | memoryview):
        return ()
    data = bytes(value)
    latin = data.decode("latin-1").strip(_BLANKS)
    if data_coding == _DATA_CODING_UCS2 and len(data) % 2 == 0:
        return (data.decode("utf-16-be", "replace").strip(_BLANKS), latin)
    return (latin,)


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    return ""


def _clean_id(value: str) -> str:
    return value.strip(_BLANKS)[:_MAX_ID]


def _network_error(value: object) -> str:
    """network_error_code (type octet + 2-octet code) as ``<type>:<code>``."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if len(data) == 3:
            return f"{data[0]}:{int.from_bytes(data[1:], 'big'):03d}"
        return data.hex().upper()[:_MAX_CODE]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)[:_MAX_CODE]
    if isinstance(value, str):
        return value.strip()[:_MAX_CODE]
    return ""


def _is_zero(err: str) -> bool:
    """True for an err that reports no error: "", "0", "000", "3:000"."""
    code = err.strip().rpartition(":")[2]
    return not code.strip("0")


def _org_code(receipt: Receipt) -> str:
    stat = receipt.stat.strip()
    if not stat and receipt.message_state is not None:
        stat = f"message_state:{receipt.message_state}"
    err = receipt.err.strip()
    if not err or _is_zero(err):
        return stat
    return f"{stat}/{err}"


def _code(value: str) -> str:
    return value.strip().strip("\x00").upper()


def _table(source: str, raw: Mapping[str, object], key: str) -> dict[str, str]:
    table = raw.get(key, {})
    if not isinstance(table, Mapping) or not all(isinstance(v, str) for v in table.values()):
        raise StatusMapError(f"{source}: [{key}]: expected a table of strings")
    return dict(table)


def _strings(source: str, raw: Mapping[str, object], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise StatusMapError(f"{source}: {key}: expected a list of strings")
    return tuple(value)


def _status_table(source: str, name: str, table: Mapping[str, str]) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for code, status in table.items():
        if status not in FINAL_STATUSES:
            raise StatusMapError(
                f"{source}: {name}.{code}: {status!r} is not one of {', '.join(sorted(FINAL_STATUSES))}"
            )
        out[_code(code)] = status
    return MappingProxyType(out)
