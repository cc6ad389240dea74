"""Platform message ids (``smsMsgId``) for downlinks and MO alike."""

from __future__ import annotations

import os

__all__ = ["new_message_id"]

_POOL_BYTES = 4096   # 512 ids per getrandom() call instead of one call per id


class _RandomPool:
    """Bytes from ``os.urandom``, read a page at a time and never handed out twice.

    A forked child starts with an empty pool: it must not hand out its parent's bytes.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        os.register_at_fork(after_in_child=self.clear)

    def clear(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        pos = self._pos
        if pos + n > len(self._buf):
            self._buf = os.urandom(max(_POOL_BYTES, n))
            pos = 0
        self._pos = pos + n
        return self._buf[pos:pos + n]


_POOL = _RandomPool()


def new_message_id(now: float) -> str:
    """Time-ordered, unguessable ids: sortable in exports, useless to enumerate."""
    return f"{int(now * 1000):011x}{_POOL.take(8).hex()}"
