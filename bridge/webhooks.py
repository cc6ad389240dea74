"""Standard Webhooks headers on every push, so receivers can drop duplicates and verify origin.

Delivery is at least once (a crash between a receiver's 2xx and our commit sends the
push again), so each push carries ``webhook-id``, the same on every retry of one report
or uplink (``msg_<smsMsgId>``, ``mo_<id>``; an operator's replay gets its own), and
``webhook-timestamp``. When the application has a ``webhook_secret`` (``whsec_<base64>``)
``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, as the
Standard Webhooks specification defines it (https://www.standardwebhooks.com/).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Protocol

from bridge.config import BridgeConfig
from bridge.models import OutboxItem

__all__ = ["NoKeys", "SigningKeys", "WebhookKeys", "push_headers", "sign", "webhook_id"]

_ID_PREFIX = {"report": "msg_", "uplink": "mo_"}


class SigningKeys(Protocol):
    """The signing secret (raw bytes) of the application a push belongs to, if it has one."""

    def secret_for(self, item: OutboxItem) -> bytes | None: ...


class NoKeys:
    """No application signs its pushes."""

    def secret_for(self, item: OutboxItem) -> bytes | None:
        return None


def webhook_id(item: OutboxItem) -> str:
    """Stable across retries: derived from what the row reports, not from the attempt."""
    prefix = _ID_PREFIX.get(item.kind)
    return f"{prefix}{item.ref_id}" if prefix else f"{item.kind}_{item.id}"


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret (validated by the config loader)."""
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one push."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def push_headers(item: OutboxItem, body: bytes, timestamp: int, key: bytes | None,
                 base: dict[str, list[str]]) -> dict[str, list[str]]:
    """``base`` plus the Standard Webhooks headers of this attempt."""
    msg_id = webhook_id(item)
    headers = dict(base)
    headers["webhook-id"] = [msg_id]
    headers["webhook-timestamp"] = [str(timestamp)]
    if key is not None:
        headers["webhook-signature"] = [sign(key, msg_id, timestamp, body)]
    return headers


@dataclass(frozen=True, slots=True)
class WebhookKeys:
    """Finds a push's application from the config, without asking the store.

    A report (or replay) names its channel number in ``from``; the channel belongs to
    one application. An uplink goes to its application's ``uplink_url``; when several
    applications share that URL with different secrets, the push goes unsigned rather
    than signed with the wrong key.
    """

    by_channel: dict[str, bytes]
    by_uplink_url: dict[str, bytes | None]

    @classmethod
    def from_config(cls, cfg: BridgeConfig) -> WebhookKeys:
        keys = {app.id: decode_secret(app.webhook_secret) for app in cfg.apps.values() if app.webhook_secret}
        by_channel = {number: keys[ch.app] for number, ch in cfg.channels.items() if ch.app in keys}
        by_url: dict[str, bytes | None] = {}
        for app in cfg.apps.values():
            if not app.uplink_url:
                continue
            key = keys.get(app.id)
            by_url[app.uplink_url] = key if by_url.get(app.uplink_url, key) == key else None
        return cls(by_channel=by_channel, by_uplink_url=by_url)

    def secret_for(self, item: OutboxItem) -> bytes | None:
        if item.kind == "uplink":
            return self.by_uplink_url.get(item.url)
        if not self.by_channel:
            return None
        try:
            channel = json.loads(item.payload).get("from")
        except (ValueError, AttributeError):
            return None
        return self.by_channel.get(channel) if isinstance(channel, str) else None
