"""Message ids: time-ordered, random after the time, never repeated, not shared with a fork."""

from __future__ import annotations

import os

from bridge.ids import new_message_id


def test_ids_are_time_ordered_and_distinct() -> None:
    ids = [new_message_id(1_796_290_227.5) for _ in range(5000)]   # several pool refills
    assert len(set(ids)) == 5000
    assert all(len(i) == 27 and i.startswith(f"{1_796_290_227_500:011x}") for i in ids)
    assert new_message_id(1_796_290_227.4) < min(ids) < max(ids) < new_message_id(1_796_290_227.6)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_message_id(0.0)                  # the pool holds bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                          # the child: write its next id and leave at once
        os.write(write, new_message_id(0.0).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child != new_message_id(0.0)
