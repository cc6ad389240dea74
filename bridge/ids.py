"""Platform message ids (``smsMsgId``) for downlinks and MO alike."""

from __future__ import annotations

import secrets

__all__ = ["new_message_id"]


def new_message_id(now: float) -> str:
    """Time-ordered, unguessable ids: sortable in exports, useless to enumerate."""
    return f"{int(now * 1000):011x}{secrets.token_hex(8)}"
