"""Carrier links against the real SMSC simulator, on the real reactor, over loopback.

The simulator runs as ``smsc-sim run`` in a child process (every port 0, one JSON
ready line) through the simulator's own test helper; the links run in this process
on the global reactor, which the tests spin with ``reactor.iterate()`` until a
condition holds or a deadline passes. No sleeps are used for synchronisation.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from bridge.smpp.codec import Pdu
from bridge.smpp.config import BindConfig, LinkPolicy
from bridge.smpp.link import CarrierLink
from bridge.smpp.types import OutboundSegment, SubmitOutcome
from carriers.profiles import load_profiles

__all__ = ["SIM_CONFIG", "LinkRun", "accepted_texts", "counts", "mainland", "spin_for",
           "spin_result", "spin_until", "write_config"]

# One simulator process serves a whole test module; each carrier is set up for the
# tests that use it (cucc has a low TPS for throttling, the others are fast).
SIM_CONFIG = """
[sim]
control_port = 0
receipt_delay_ms = [5, 20]
retry_delay_s = 0.2
response_timeout_s = 2.0
window = 200
max_binds = 8
[sim.carriers.cmcc]
port = 0
tps = 100000
[sim.carriers.cucc]
port = 0
tps = 100
[sim.carriers.ctcc]
port = 0
tps = 100000
[sim.carriers.cbn]
port = 0
tps = 100000
[sim.carriers.intl]
port = 0
"""

MAINLAND_PREFIX = {"cmcc": "138", "cucc": "186", "ctcc": "189", "cbn": "192"}


def mainland(carrier: str, n: int) -> str:
    """A valid number of ``carrier`` ending in 7, so no simulator outcome rule applies."""
    if carrier == "intl":
        return f"+1415{n % 1_000_000:06d}7"
    return f"+86{MAINLAND_PREFIX[carrier]}{n % 10_000_000:07d}7"


def spin_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Run the reactor until ``condition()`` is truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        reactor.iterate(0.002)


def spin_for(seconds: float) -> None:
    """Run the reactor for a measured window (to count events in it, not to wait for one)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reactor.iterate(0.002)


def spin_result(d: Deferred, timeout: float = 10.0, what: str = "Deferred") -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    spin_until(lambda: box, timeout, what)
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


@dataclass
class LinkRun:
    """One CarrierLink bound to the simulator, recording outcomes and deliveries."""

    carrier: str
    link: CarrierLink
    outcomes: list[SubmitOutcome] = field(default_factory=list)
    delivered: list[Pdu] = field(default_factory=list)
    deliver_attempts: int = 0
    fail_deliveries: Callable[[Pdu], bool] = lambda pdu: False

    @classmethod
    def open(cls, ports: dict[str, int], carrier: str, *binds: dict[str, Any],
             policy: LinkPolicy | None = None) -> LinkRun:
        profiles, _ = load_profiles()
        configs = [BindConfig.for_profile(profiles[carrier], host="127.0.0.1", port=ports[carrier],
                                          **{"reconnect_initial_s": 0.05, "reconnect_max_s": 1.0,
                                             "response_timeout_s": 5.0, **b})
                   for b in (binds or ({},))]
        holder: list[LinkRun] = []

        def on_deliver(carrier_id: str, bind_id: str, pdu: Pdu) -> Deferred[int]:
            run = holder[0]
            run.deliver_attempts += 1
            if run.fail_deliveries(pdu):
                return fail(OSError("store unavailable"))
            run.delivered.append(pdu)
            return succeed(0)

        link = CarrierLink(carrier, configs, reactor=reactor,
                           on_outcomes=lambda batch: holder[0].outcomes.extend(batch),
                           on_deliver=on_deliver, policy=policy)
        run = cls(carrier, link)
        holder.append(run)
        return run

    def start(self, timeout: float = 10.0) -> LinkRun:
        self.link.start()
        spin_until(lambda: all(s.state == "bound" for s in self.link.snapshot()), timeout,
                   f"{self.carrier} binds bound")
        return self

    def segments(self, first: int, count: int, **overrides: Any) -> list[OutboundSegment]:
        return [OutboundSegment(segment_id=i, carrier=self.carrier, source_addr="10690001",
                                destination_addr=mainland(self.carrier, i),
                                short_message=f"m{i}".encode(), data_coding=0, esm_class=0,
                                **overrides)
                for i in range(first, first + count)]

    def accepted_ids(self) -> list[int]:
        return [o.segment.segment_id for o in self.outcomes if o.accepted]

    def wait_accepted(self, count: int, timeout: float = 15.0) -> None:
        spin_until(lambda: len(self.accepted_ids()) >= count, timeout,
                   f"{count} accepted on {self.carrier} (have {len(self.accepted_ids())})")

    def stop(self, drain_timeout_s: float = 1.0) -> Any:
        return spin_result(self.link.stop(drain_timeout_s), drain_timeout_s + 10.0, "link stop")


def accepted_texts(submits: dict[str, Any], carrier: str) -> list[str]:
    """Texts of the submits the simulator accepted on ``carrier``, in arrival order."""
    return [s["text"] for s in submits["submits"] if s["carrier"] == carrier and s["status"] == 0]


def counts(items: list[str]) -> collections.Counter[str]:
    return collections.Counter(items)


def write_config(tmp: Path) -> Path:
    path = tmp / "sim.toml"
    path.write_text(SIM_CONFIG, encoding="utf-8")
    return path
