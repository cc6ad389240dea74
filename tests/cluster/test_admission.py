"""Admission: the rules' reads and the insert are one transaction, serialised per recipient."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from bridge.config import StoreConfig
from bridge.models import MessageState, NewMessage
from bridge.store import Store, open_store, result_of
from bridge.store.records import AdmissionFacts, AdmissionQuery
from tests.conftest import Backend

T0 = 1_800_000_000.0
LIMIT = 15


def _message(mid: str, number: str, counted: bool) -> NewMessage:
    return NewMessage(id=mid, app_id="a", channel="10690001", recipient=number, carrier="cmcc", klass="otp",
                      text="t", content_hash=mid, status_callback="", extend="", created_at=T0,
                      state=MessageState.QUEUED, status=None, org_code=None, release_at=None, segments=(),
                      counted=counted)


def _admit(store: Store, mid: str, number: str = "+8613812345678") -> bool:
    """One request: accepted while fewer than LIMIT counted sends exist (a pure decision)."""
    def decide(facts: AdmissionFacts) -> tuple[Sequence[NewMessage], bool]:
        ok = number not in facts.blacklisted and len(facts.history) < LIMIT
        return (_message(mid, number, ok),), ok
    query = AdmissionQuery("10690001", (number,), (number,), T0 - 60)
    return result_of(store.messages.admit(query, decide))


class TestAdmit:
    def test_facts_count_what_was_admitted_before(self, store_backend: Backend) -> None:
        """The 16th request to a number sees 15 counted sends; the blacklist is read too."""
        store = open_store(store_backend.config, inline=True)
        assert [_admit(store, f"m{i}") for i in range(LIMIT + 1)] == [True] * LIMIT + [False]
        result_of(store.blacklist.add("10690001", "+8613800000001", T0, None))
        assert _admit(store, "b1", "+8613800000001") is False
        result_of(store.close())

    def test_concurrent_requests_from_many_members_are_exact(self, pg_server) -> None:  # noqa: ANN001
        """Four members admit five requests each to one number at once: exactly 15 pass."""
        config = StoreConfig(url=pg_server.new_database())
        stores = [open_store(config, inline=True, node=f"n{i}") for i in range(4)]
        start = threading.Barrier(len(stores))
        results: list[bool] = []
        lock = threading.Lock()

        def member(store: Store, k: int) -> None:
            start.wait()
            for i in range(5):
                ok = _admit(store, f"m{k}-{i}")
                with lock:
                    results.append(ok)
        threads = [threading.Thread(target=member, args=(s, k)) for k, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [False] * 5 + [True] * 15
        for s in stores:
            result_of(s.close())
