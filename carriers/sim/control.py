"""HTTP JSON control API of the simulator (Twisted web, bound to 127.0.0.1).

Endpoints: ``POST /mo``, ``GET /submits``, ``GET /stats``, ``GET|POST /faults``,
``POST /reset``, ``GET /healthz``. Errors are ``{"error": "..."}`` with 400 (bad
request), 404 (unknown path or carrier), 405 (wrong method) or 409 (no receiver
bound for an MO).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog
from twisted.web.resource import Resource
from twisted.web.server import Request

from carriers.sim.faults import FaultError
from carriers.sim.mo import MoError, MoRequest
from carriers.sim.simulator import Simulator, UnknownCarrierError
from carriers.sim.smsc import NoReceiverError

__all__ = ["ControlResource"]

log = structlog.get_logger("carriers.sim.control")

MAX_BODY = 1 << 20
DEFAULT_LIMIT = 10_000


class _HttpError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _json_body(request: Request) -> dict[str, Any]:
    raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY:
        raise _HttpError(413, "body: larger than 1 MiB")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _HttpError(400, f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise _HttpError(400, "body: expected a JSON object")
    return body


def _query_int(request: Request, name: str, default: int) -> int:
    values = request.args.get(name.encode())
    if not values:
        return default
    text = values[0].decode("utf-8", "replace")
    try:
        value = int(text)
    except ValueError:
        raise _HttpError(400, f"{name}: expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise _HttpError(400, f"{name}: expected a non-negative integer, got {value}")
    return value


def _query_str(request: Request, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _required_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise _HttpError(400, f"{key}: expected a non-empty string")
    return value


class ControlResource(Resource):
    """One leaf resource that routes by method and path."""

    isLeaf = True  # noqa: N815 (Twisted API)

    def __init__(self, simulator: Simulator) -> None:
        super().__init__()
        self.sim = simulator
        self._routes: dict[tuple[bytes, bytes], Callable[[Request], object]] = {
            (b"GET", b"/healthz"): lambda _r: {"ok": True},
            (b"GET", b"/stats"): lambda _r: self.sim.stats(),
            (b"GET", b"/submits"): self._submits,
            (b"GET", b"/faults"): lambda _r: {"faults": self.sim.faults()},
            (b"POST", b"/faults"): self._set_fault,
            (b"POST", b"/mo"): self._mo,
            (b"POST", b"/reset"): self._reset,
        }

    def render(self, request: Request) -> bytes:
        path = request.path.rstrip(b"/") or b"/"
        handler = self._routes.get((request.method, path))
        try:
            if handler is None:
                if any(p == path for _, p in self._routes):
                    raise _HttpError(405, f"{request.method.decode()} not allowed on {path.decode()}")
                raise _HttpError(404, f"no such endpoint {path.decode('utf-8', 'replace')}")
            result = handler(request)
            code = 200
        except _HttpError as exc:
            result, code = {"error": exc.message}, exc.code
        except UnknownCarrierError as exc:
            result, code = {"error": str(exc)}, 404
        except (FaultError, MoError) as exc:
            result, code = {"error": str(exc)}, 400
        except NoReceiverError as exc:
            result, code = {"error": str(exc)}, 409
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return json.dumps(result).encode("utf-8") + b"\n"

    # -- handlers ----------------------------------------------------------------------
    def _submits(self, request: Request) -> object:
        since = _query_int(request, "since", 0)
        limit = _query_int(request, "limit", DEFAULT_LIMIT)
        carrier = _query_str(request, "carrier")
        if carrier is not None:
            self.sim.carrier(carrier)
        accepted = _query_str(request, "accepted") in ("1", "true", "yes")
        log_ = self.sim.submits
        rows = []
        next_index = log_.total
        for record in log_.since(since, carrier, accepted):
            if len(rows) >= limit:
                next_index = record.index
                break
            rows.append(record.as_json())
        return {
            "total": log_.total,
            "first_index": log_.first_index,
            "next": next_index,
            "submits": rows,
        }

    def _set_fault(self, request: Request) -> object:
        body = _json_body(request)
        unknown = set(body) - {"carrier", "mode", "latency_ms", "status", "receipts_first"}
        if unknown:
            raise _HttpError(400, f"{sorted(unknown)[0]}: unknown field")
        if "carrier" not in body or "mode" not in body:
            raise _HttpError(400, "carrier, mode: both are required")
        result = self.sim.apply_fault(body["carrier"], body["mode"], body.get("latency_ms"),
                                      body.get("status"), body.get("receipts_first"))
        log.info("sim.control.fault", carriers=list(result.carriers), mode=result.mode)
        return {
            "carriers": list(result.carriers),
            "mode": result.mode,
            "dropped": result.dropped,
            "unbound": result.unbound,
            "faults": self.sim.faults(),
        }

    def _mo(self, request: Request) -> object:
        body = _json_body(request)
        unknown = set(body) - {"carrier", "from", "to", "text", "concat", "order", "ref"}
        if unknown:
            raise _HttpError(400, f"{sorted(unknown)[0]}: unknown field")
        carrier = self.sim.carrier(_required_str(body, "carrier"))
        if not carrier.profile.mo:
            raise _HttpError(400, f"carrier: {carrier.id} carries no MO")
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise _HttpError(400, "text: expected a non-empty string")
        concat = body.get("concat")
        if concat is not None and concat not in ("udh8", "udh16", "sar"):
            raise _HttpError(400, f"concat: expected udh8, udh16 or sar, got {concat!r}")
        order = body.get("order")
        if order is not None and not (
                isinstance(order, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in order)):
            raise _HttpError(400, "order: expected a list of segment numbers, e.g. [3, 1, 2]")
        ref = body.get("ref")
        if ref is not None and (not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref <= 0xFFFF):
            raise _HttpError(400, "ref: expected an integer 0-65535")
        mo = MoRequest(
            carrier=carrier.id,
            source=_required_str(body, "from"),
            destination=_required_str(body, "to"),
            text=text,
            concat=concat,
            order=tuple(order) if order is not None else None,
            ref=ref,
        )
        segments = carrier.inject_mo(mo)
        return {"carrier": carrier.id, "segments": segments}

    def _reset(self, request: Request) -> object:
        self.sim.reset()
        log.info("sim.control.reset")
        return {"ok": True}
