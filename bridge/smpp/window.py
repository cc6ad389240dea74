"""Outbound transaction table of one SMPP session, keyed by sequence number.

Every request we send (bind, submit_sm, enquire_link, unbind) gets an entry with a
response deadline. All requests of a session share one response timeout, so
deadlines grow with insertion order and the session needs one timer, armed for the
oldest entry, instead of a ``callLater`` per PDU: same per-PDU timeout semantics,
without a heap insert and cancel for every message at thousands per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Transaction", "TransactionTable"]


@dataclass(slots=True, eq=False)
class Transaction:
    sequence: int
    command: str
    deadline: float
    payload: Any = None  # the QueueEntry of a submit_sm


class TransactionTable:
    __slots__ = ("_txns", "submits")

    def __init__(self) -> None:
        self._txns: dict[int, Transaction] = {}
        self.submits = 0

    def __len__(self) -> int:
        return len(self._txns)

    def open(self, sequence: int, command: str, deadline: float, payload: Any = None) -> None:
        self._txns[sequence] = Transaction(sequence, command, deadline, payload)
        if command == "submit_sm":
            self.submits += 1

    def close(self, sequence: int) -> Transaction | None:
        txn = self._txns.pop(sequence, None)
        if txn is not None and txn.command == "submit_sm":
            self.submits -= 1
        return txn

    def oldest(self) -> Transaction | None:
        return next(iter(self._txns.values()), None)

    def expired(self, now: float) -> list[Transaction]:
        return [t for t in self._txns.values() if t.deadline <= now]

    def take_all(self) -> list[Transaction]:
        """Every open transaction in the order it was sent; the table is left empty."""
        txns = list(self._txns.values())
        self._txns.clear()
        self.submits = 0
        return txns
