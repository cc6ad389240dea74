"""The daemon's reactor: Twisted's epoll reactor, with less work around each event.

Two costs of ``EPollReactor`` that a message pays five or six times over:

- Every ready descriptor goes to ``_doReadOrWrite`` through ``log.callWithLogger``, which
  pushes a ``{"system": logPrefix()}`` context for twisted.python.log (four nested calls
  and a logPrefix per event). The bridge logs with structlog and never reads it.
- A ``write()`` on an idle connection registers the socket for writability (an
  ``epoll_ctl``), the next poll reports it writable at once, ``doWrite`` sends, and the
  socket is unregistered again (another ``epoll_ctl``): two system calls and a dispatch
  to learn what is nearly always true, that an idle socket's buffer has room.

:class:`LeanEPollReactor` dispatches directly, and flushes the connections written to
since the last poll before polling again (the same point in the loop at which the poll
would have reported them writable); only a connection whose data did not all fit is
registered with epoll, as before. Everything else (descriptor bookkeeping, disconnect
handling, ``doWrite`` itself, errors logged through ``log.err``) is Twisted's own.

Only the daemon's entry point installs it (:func:`install`), before anything imports
``twisted.internet.reactor``; tests and tools keep Twisted's default.
"""

from __future__ import annotations

import errno
import sys
from select import EPOLLOUT
from typing import Any

from twisted.internet.epollreactor import EPollReactor

__all__ = ["LeanEPollReactor", "install"]


class LeanEPollReactor(EPollReactor):
    """``EPollReactor`` that writes before it asks epoll, and dispatches without a log context."""

    def __init__(self) -> None:
        self._unflushed: dict[Any, None] = {}   # writers not yet tried since they asked to write
        super().__init__()

    def addWriter(self, writer: Any) -> None:  # noqa: N802 (Twisted API)
        """Remember the writer; :meth:`_flush` tries it before the next poll."""
        if writer.fileno() not in self._writes:
            self._unflushed[writer] = None

    def removeWriter(self, writer: Any) -> None:  # noqa: N802 (Twisted API)
        if self._unflushed.pop(writer, self) is self:
            super().removeWriter(writer)

    def getWriters(self) -> list[Any]:  # noqa: N802 (Twisted API)
        return super().getWriters() + list(self._unflushed)

    def removeAll(self) -> list[Any]:  # noqa: N802 (Twisted API)
        removed = super().removeAll()
        removed += [writer for writer in self._unflushed if writer not in removed]
        self._unflushed.clear()
        return removed

    def _flush(self) -> None:
        """``doWrite`` each writer once; register with epoll those whose data did not all fit.

        A writer that wrote everything called ``stopWriting`` (leaving ``_unflushed``); one
        still there has bytes left, and waits for epoll to say the socket has room. Writers
        added while flushing are tried at the next pass.
        """
        unflushed, dispatch = self._unflushed, self._doReadOrWrite
        for writer in list(unflushed):
            if writer in unflushed:
                dispatch(writer, writer.fileno(), EPOLLOUT)
                if unflushed.pop(writer, self) is not self:
                    super().addWriter(writer)

    def doPoll(self, timeout: float | None) -> None:  # noqa: N802 (Twisted API)
        """Flush pending writes, poll once and hand each ready descriptor to ``_doReadOrWrite``."""
        if self._unflushed:
            self._flush()
            # Flushing ran protocol code: it may have written more or scheduled a call.
            due = 0.0 if self._unflushed else self.timeout()
            if due is not None and (timeout is None or due < timeout):
                timeout = due
        try:
            ready = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables, dispatch = self._selectables, self._doReadOrWrite
        for fd, event in ready:
            selectable = selectables.get(fd)
            if selectable is not None:
                dispatch(selectable, fd, event)

    doIteration = doPoll


def install() -> EPollReactor:
    """Install :class:`LeanEPollReactor` as the global reactor, or keep one already there."""
    from twisted.internet.main import installReactor

    existing = sys.modules.get("twisted.internet.reactor")
    if existing is not None:
        return existing  # type: ignore[return-value]
    reactor = LeanEPollReactor()
    installReactor(reactor)
    return reactor
