"""The OpenAPI 3.0.3 document of the HTTP API, served at ``GET /openapi.json``.

It describes what :mod:`bridge.api` and :mod:`bridge.intake` actually do, and
``tests/fuzz/test_schemathesis.py`` holds them to it. Two rules keep it honest: a
request constraint is declared only if the API rejects every request that breaks
it (so negative testing never sees a violation accepted), and a response schema
names every field the API writes. Nothing from the config that a caller without a
token could not already see goes in: no channel numbers, template ids or tokens.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from bridge.config import BridgeConfig
from bridge.intake import ERROR_CODES, MAX_BODY_CHARS, MAX_EXTEND_CHARS, MAX_RECIPIENTS
from bridge.urlpolicy import MAX_URL_LENGTH

__all__ = ["OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION = "3.0.3"
MAX_OUTBOX_ID = 2**63 - 1   # SQLite INTEGER

_ISO_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
_APP = [{"appToken": []}]
_ANY = [{"appToken": []}, {"operatorToken": []}]
_OPERATOR = [{"operatorToken": []}]
_NONE: list[dict[str, list[str]]] = []


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A closed object: every property is written, and no other."""
    return {"type": "object", "required": list(properties) if required is None else required,
            "properties": properties, "additionalProperties": False, **extra}


def _str(**extra: Any) -> dict[str, Any]:
    return {"type": "string", **extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _unauthorised() -> dict[str, Any]:
    return _error("missing or invalid bearer token (code E000101)") | {
        "headers": {"WWW-Authenticate": {"schema": _str(), "description": 'Bearer realm="smpp-bridge"'}}}


def _schemas() -> dict[str, Any]:
    number = _str(description="a phone number: E.164 (+8613800138000) or a national mainland number")
    return {
        "Error": _obj({
            "code": _str(pattern=r"^E\d{6}$", description="platform answer code; see the README"),
            "description": _str(description="what is wrong, naming the field at fault"),
        }),
        "SendRequest": {
            "type": "object",
            "description": "Give exactly one of templateId and body. A null field counts as absent; "
                           "unknown fields are ignored.",
            "required": ["from", "to"],
            "properties": {
                "from": _str(description="channel number of the calling application"),
                "to": {
                    "description": f"recipients: a list or one comma-separated string, at most "
                                   f"{MAX_RECIPIENTS}; a repeated number is sent once (row code E200041)",
                    "oneOf": [
                        {"type": "array", "minItems": 1, "maxItems": MAX_RECIPIENTS, "items": number},
                        _str(minLength=1, description="e.g. +8613800138000,+8613900139000"),
                    ],
                },
                "signature": _nullable(_str(description="must equal the channel's signature if given")),
                "templateId": _nullable(_str(description="a configured template (GET /v1/templates)")),
                "templateParas": _nullable({"type": "array", "items": _str(),
                                            "description": "one value per template variable, in order; "
                                                           "only with templateId"}),
                "body": _nullable(_str(minLength=1, maxLength=MAX_BODY_CHARS,
                                       description="free text instead of a template")),
                "statusCallback": _nullable(_str(maxLength=MAX_URL_LENGTH,
                                                 description="http(s) URL the status report is POSTed to")),
                "extend": _nullable(_str(maxLength=MAX_EXTEND_CHARS,
                                         description="echoed in the status report")),
                "class": _nullable(_str(enum=["otp", "notification"],
                                        description="otp is sent in quiet hours; default: the "
                                                    "template's class, else notification")),
            },
            "example": {"from": "10690001", "to": ["+8613800138000"], "body": "Your parcel has shipped."},
        },
        "ResultRow": _obj({
            "originTo": _str(description="the recipient as given"),
            "from": _str(),
            "smsMsgId": _str(),
            "status": _str(enum=["000000", "E200041"], description="000000 accepted, E200041 duplicate"),
            "createTime": _str(pattern=_ISO_TIME),
        }),
        "SendResponse": _obj({
            "code": _str(enum=["000000"]),
            "description": _str(),
            "result": {"type": "array", "items": _ref("ResultRow")},
        }),
        "Segment": _obj({
            "sequence": {"type": "integer", "minimum": 1},
            "state": _str(enum=["queued", "dispatched", "submitted", "final"]),
            "status": _nullable(_str()),
            "orgCode": _nullable(_str()),
            "carrierMessageId": _nullable(_str(description="message id as the carrier wrote it")),
            "submitStatus": _nullable({"type": "integer", "description": "SMPP command_status of the "
                                                                         "submit_sm_resp, or negative local codes"}),
            "submitTime": _nullable(_str(pattern=_ISO_TIME)),
            "receiptTime": _nullable(_str(pattern=_ISO_TIME)),
            "possibleDuplicate": {"type": "boolean"},
        }),
        "Report": _obj({
            "smsMsgId": _str(), "from": _str(), "to": _str(), "status": _str(), "orgCode": _str(),
            "orgDesc": _str(), "total": {"type": "integer"}, "sequence": {"type": "integer"},
            "updateTime": _str(pattern=_ISO_TIME), "extend": _str(),
        }, description="the status report as POSTed to statusCallback", nullable=True),
        "Message": _obj({
            "smsMsgId": _str(), "from": _str(), "to": _str(description="E.164"),
            "carrier": _nullable(_str(description="null when no carrier serves the number")),
            "class": _str(enum=["otp", "notification", "marketing"]),
            "state": _str(enum=["held", "queued", "final"]),
            "status": _nullable(_str(description="final platform status, e.g. DELIVRD")),
            "orgCode": _nullable(_str()),
            "total": {"type": "integer", "minimum": 0, "description": "segments"},
            "createTime": _str(pattern=_ISO_TIME),
            "finalTime": _nullable(_str(pattern=_ISO_TIME)),
            "reported": {"type": "boolean", "description": "the status report was acknowledged"},
            "extend": _str(),
            "segments": {"type": "array", "items": _ref("Segment")},
            "report": _ref("Report"),
        }),
        "Bind": _obj({
            "bind_id": _str(), "carrier": _str(),
            "bind_type": _str(enum=["transmitter", "receiver", "transceiver"]),
            "state": _str(), "since": {"type": "number"}, "window": {"type": "integer"},
            "in_flight": {"type": "integer"}, "in_flight_peak": {"type": "integer"},
            "queued": {"type": "integer"}, "submitted": {"type": "integer"},
            "throttled": {"type": "integer"}, "errors": {"type": "integer"},
            "last_error": _nullable(_str()), "reconnects": {"type": "integer"},
            "received": {"type": "integer"}, "paused_until": _nullable({"type": "number"}),
            "node": _str(description="the cluster member that holds this bind"),
        }),
        "Health": {
            "type": "object", "required": ["status", "binds", "bound"],
            "properties": {"status": _str(enum=["ok", "stopping"]),
                           "binds": {"type": "integer", "minimum": 0},
                           "bound": {"type": "integer", "minimum": 0},
                           "node": _str(description="this instance's cluster member name"),
                           "cluster": {"type": "object", "description": "the cluster as this member sees it",
                                       "properties": {
                                           "leader": _nullable(_str()),
                                           "live": {"type": "array", "items": _str()},
                                           "slots": {"type": "integer", "minimum": 0},
                                           "held": {"type": "integer", "minimum": 0}}}},
        },
        "BlacklistEntry": _obj({
            "channel": _str(), "number": _str(), "createTime": _str(pattern=_ISO_TIME),
            "moId": _nullable(_str(description="the MO that unsubscribed the number")),
        }),
    }


def _paths(config: BridgeConfig) -> dict[str, Any]:
    max_body = config.api.max_body_bytes
    channel_no = {"name": "channel_no", "in": "path", "required": True, "schema": _str()}
    number = {"name": "number", "in": "path", "required": True, "schema": _str(),
              "description": "normalised to E.164 before the lookup when it is a phone number"}
    not_listed = _error("not on the blacklist (code E200404)")
    return {
        "/v1/sms": {"post": {
            "operationId": "sendSms",
            "summary": "Send one message to up to 500 recipients",
            "description": "Answered after every accepted recipient's message is committed. "
                           "Validation is all or nothing: on a 4xx nothing is stored.",
            "security": _APP,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("SendRequest")}}},
            "responses": {
                "200": _json(_ref("SendResponse"), "accepted: one row per recipient, in request order",
                             links={"GetMessage": {
                                 "operationId": "getMessage",
                                 "parameters": {"smsMsgId": "$response.body#/result/0/smsMsgId"}}}),
                "400": _error("rejected: " + "; ".join(f"{c} {d}" for c, d in ERROR_CODES.items()
                                                       if c != "E200041")),
                "401": _unauthorised(),
                "413": _error(f"body larger than {max_body} bytes (code E200017)"),
                "503": _error("shutting down (E000503) or the store is unavailable (E000510)"),
            },
        }},
        "/v1/sms/{smsMsgId}": {"get": {
            "operationId": "getMessage",
            "summary": "One message: status, segments, carrier ids, report",
            "description": "An application sees its own messages only; the operator sees all.",
            "security": _ANY,
            "parameters": [{"name": "smsMsgId", "in": "path", "required": True, "schema": _str()}],
            "responses": {
                "200": _json(_ref("Message"), "the message"),
                "401": _unauthorised(),
                "404": _error("no such message (code E200404)"),
            },
        }},
        "/v1/binds": {"get": {
            "operationId": "listBinds",
            "summary": "Every carrier bind: state, window in use, counters",
            "security": _ANY,
            "responses": {
                "200": _json(_obj({"binds": {"type": "array", "items": _ref("Bind")}}), "the binds"),
                "401": _unauthorised(),
            },
        }},
        "/v1/templates": {"get": {
            "operationId": "listTemplates",
            "summary": "Configured templates and channel numbers",
            "security": _ANY,
            "responses": {
                "200": _json(_obj({
                    "templates": {"type": "array", "items": _obj({
                        "templateId": _str(), "text": _str(),
                        "class": _str(enum=["otp", "notification", "marketing"])})},
                    "channels": {"type": "array", "items": _obj({
                        "from": _str(), "signature": _str(), "app": _str()})},
                }), "templates and channels"),
                "401": _unauthorised(),
            },
        }},
        "/v1/apps": {"get": {
            "operationId": "listApps",
            "summary": "Applications and their channel numbers",
            "security": _OPERATOR,
            "responses": {
                "200": _json(_obj({"apps": {"type": "array", "items": _obj({
                    "id": _str(), "uplinkUrl": _str(),
                    "channels": {"type": "array", "items": _str()}})}}), "the applications"),
                "401": _unauthorised(),
            },
        }},
        "/v1/outbox/dead": {"get": {
            "operationId": "listDeadPushes",
            "summary": "Reports and uplinks given up after callbacks.max_age_s (dead letters), newest first",
            "security": _OPERATOR,
            "responses": {
                "200": _json(_obj({"dead": {"type": "array", "items": _obj({
                    "id": {"type": "integer"}, "kind": _str(), "smsMsgId": _str(), "host": _str(),
                    "attempts": {"type": "integer"}, "createTime": _str(), "lastError": {"type": "string",
                                                                                        "nullable": True},
                })}, "count": {"type": "integer", "minimum": 0}}), "the dead letters"),
                "401": _unauthorised(),
            },
        }},
        "/v1/blacklist": {"get": {
            "operationId": "listBlacklist",
            "summary": "Numbers that unsubscribed, newest first (at most 1000)",
            "security": _OPERATOR,
            "parameters": [{"name": "channel", "in": "query", "required": False, "schema": _str(),
                            "description": "only this channel number"}],
            "responses": {
                "200": _json(_obj({"entries": {"type": "array", "items": _ref("BlacklistEntry")},
                                   "count": {"type": "integer", "minimum": 0}}), "the entries"),
                "401": _unauthorised(),
            },
        }},
        "/v1/blacklist/{channel_no}/{number}": {
            "parameters": [channel_no, number],
            "get": {
                "operationId": "getBlacklistEntry",
                "summary": "Is this number blacklisted for this channel?",
                "security": _OPERATOR,
                "responses": {
                    "200": _json(_ref("BlacklistEntry"), "the entry"),
                    "401": _unauthorised(),
                    "404": not_listed,
                },
            },
            "delete": {
                "operationId": "removeBlacklistEntry",
                "summary": "Let the number receive messages from this channel again",
                "security": _OPERATOR,
                "responses": {
                    "200": _json(_obj({"code": _str(enum=["000000"]), "description": _str(),
                                       "channel": _str(), "number": _str()}), "removed"),
                    "401": _unauthorised(),
                    "404": not_listed,
                },
            },
        },
        **_console_paths(),
        "/healthz": {"get": {
            "operationId": "health",
            "summary": "Liveness and bind counts; 503 while shutting down",
            "security": _NONE,
            "responses": {
                "200": _json(_ref("Health"), "running"),
                "503": _json(_ref("Health"), "shutting down"),
            },
        }},
        "/metrics": {"get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "security": _NONE,
            "responses": {"200": {"description": "Prometheus text exposition format 0.0.4",
                                  "content": {"text/plain": {"schema": _str()}}}},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": _NONE,
            "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
        }},
    }


def _console_paths() -> dict[str, Any]:
    """The operator console's reads and the dead-letter replay (bridge/console/)."""
    histogram = _obj({"le": {"type": "array", "items": {"type": "number"}},
                      "cumulative": {"type": "array", "items": {"type": "number"}},
                      "total_s": {"type": "number"}, "count": {"type": "number"}})
    count = {"type": "integer", "minimum": 0}
    no_message = _error("no such message (code E200404)")
    return {
        "/v1/console/stats": {"get": {
            "operationId": "consoleStats",
            "summary": "Counters, backlog and latency histograms (labels summed) for the console's charts",
            "security": _OPERATOR,
            "responses": {
                "200": _json(_obj({
                    "counters": _obj({k: count for k in ("accepted", "submitted", "throttled", "errors",
                                                         "finalised")}),
                    "backlog": _obj({k: count for k in ("queued", "inFlight", "awaitingReceipt", "held",
                                                        "outboxPending", "outboxDead")}),
                    "latency": {"type": "object", "additionalProperties": histogram},
                }), "the snapshot"),
                "401": _unauthorised(),
            },
        }},
        "/v1/console/messages": {"get": {
            "operationId": "consoleMessagesByNumber",
            "summary": "The newest messages (at most 20) to one number",
            "security": _OPERATOR,
            "parameters": [{"name": "number", "in": "query", "required": True, "schema": _str()}],
            "responses": {
                "200": _json(_obj({"number": _str(), "messages": {"type": "array", "items": _obj({
                    "smsMsgId": _str(), "from": _str(), "to": _str(), "carrier": _nullable(_str()),
                    "state": _str(), "status": _nullable(_str()), "total": {"type": "integer"},
                    "createTime": _str(pattern=_ISO_TIME)})}}), "the messages, newest first"),
                "400": _error("not a phone number (code E200016)"),
                "401": _unauthorised(),
            },
        }},
        "/v1/console/message/{smsMsgId}": {"get": {
            "operationId": "consoleMessageTrail",
            "summary": "The receipts matched to a message's segments and its report pushes",
            "security": _OPERATOR,
            "parameters": [{"name": "smsMsgId", "in": "path", "required": True, "schema": _str()}],
            "responses": {
                "200": _json(_obj({
                    "smsMsgId": _str(),
                    "receipts": {"type": "array", "items": _obj({
                        "sequence": {"type": "integer"}, "receiveTime": _str(pattern=_ISO_TIME),
                        "outcome": _str(), "receipt": {"type": "object"}})},
                    "pushes": {"type": "array", "items": _obj({
                        "id": {"type": "integer"}, "kind": _str(), "state": _str(),
                        "attempts": {"type": "integer"}, "createTime": _str(pattern=_ISO_TIME),
                        "ackTime": _nullable(_str(pattern=_ISO_TIME)), "lastError": _nullable(_str())})},
                }), "receipts and pushes"),
                "401": _unauthorised(),
                "404": no_message,
            },
        }},
        "/v1/outbox/{id}/replay": {"post": {
            "operationId": "replayDeadPush",
            "summary": "Put a dead-lettered push back in the queue, with a fresh callbacks.max_age_s",
            "security": _OPERATOR,
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OUTBOX_ID}}],
            "responses": {
                "200": _json(_obj({"code": _str(enum=["000000"]), "description": _str(),
                                   "id": {"type": "integer"}}), "queued"),
                "401": _unauthorised(),
                "404": _error("no dead-lettered push with this id (code E200404)"),
            },
        }},
    }


def _version() -> str:
    try:
        return metadata.version("smpp-bridge")
    except metadata.PackageNotFoundError:  # running from a bare checkout
        return "0+unknown"


def openapi_document(config: BridgeConfig) -> dict[str, Any]:
    """The OpenAPI document for a daemon running ``config`` (limits come from it)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "smpp-bridge HTTP API",
            "version": _version(),
            "description": "Send SMS through the carrier binds, follow their status, administer "
                           "the unsubscribe blacklist. Every error answer is {code, description}; "
                           "the codes are listed in the README.",
        },
        "servers": [{"url": "/"}],
        "security": _ANY,
        "paths": _paths(config),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "appToken": {"type": "http", "scheme": "bearer",
                             "description": "an application's token ([[apps]] token)"},
                "operatorToken": {"type": "http", "scheme": "bearer",
                                  "description": "the operator token (api.operator_token)"},
            },
        },
    }
