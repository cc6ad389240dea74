"""SMSC simulator of the Chinese carriers and the international route (issue 3).

``service.start_simulator`` embeds it in a running reactor; ``cli.main`` is
``smsc-sim run``. Modules: config (settings), stat (receipt status tables),
outcomes (what happens to a submit), receipts (receipt PDUs per dialect), limits,
delivery (deliver_sm queue with redelivery), submits (decoded submit log), faults,
smsc (the SMPP server), mo (MO injection), control (HTTP control API).
"""

from __future__ import annotations

__all__: list[str] = []
