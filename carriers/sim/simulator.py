"""The five simulated carriers together, plus the submit log they share.

This is what the control API acts on and what ``service`` puts behind listeners;
it owns no sockets, so tests can build it on a ``task.Clock`` and drive it directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from carriers.sim.config import SimConfig
from carriers.sim.faults import parse_fault
from carriers.sim.smsc import CarrierSmsc
from carriers.sim.submits import SubmitLog

__all__ = ["FaultResult", "Simulator", "UnknownCarrierError"]


class UnknownCarrierError(KeyError):
    """A carrier id the simulator does not run."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class FaultResult:
    """What a ``POST /faults`` did: carriers touched and sessions dropped or unbound."""

    carriers: tuple[str, ...]
    mode: str
    dropped: int = 0
    unbound: int = 0


class Simulator:
    """All carriers of one simulator run."""

    def __init__(self, config: SimConfig, clock: IReactorTime) -> None:
        self.config = config
        self.clock = clock
        self.submits = SubmitLog(config.submits_log_size)
        self.carriers: dict[str, CarrierSmsc] = {
            c.id: CarrierSmsc(c, clock, self.submits) for c in config.carriers
        }

    def carrier(self, carrier_id: str) -> CarrierSmsc:
        try:
            return self.carriers[carrier_id]
        except KeyError:
            raise UnknownCarrierError(
                f"carrier: unknown carrier {carrier_id!r} (expected one of "
                f"{', '.join(self.carriers)})") from None

    def _targets(self, carrier_id: object) -> list[CarrierSmsc]:
        if carrier_id == "*":
            return list(self.carriers.values())
        if not isinstance(carrier_id, str):
            raise UnknownCarrierError(f"carrier: expected a carrier id or \"*\", got {carrier_id!r}")
        return [self.carrier(carrier_id)]

    def apply_fault(self, carrier_id: object, mode: object, latency_ms: object = None,
                    status: object = None, receipts_first: object = None) -> FaultResult:
        """Switch a fault mode on (or ``none`` off), or run a one-shot action."""
        targets = self._targets(carrier_id)
        ids = tuple(c.id for c in targets)
        if mode == "drop":
            return FaultResult(ids, "drop", dropped=sum(c.drop_connections() for c in targets))
        if mode == "unbind":
            return FaultResult(ids, "unbind", unbound=sum(c.unbind_all() for c in targets))
        fault = parse_fault(mode, latency_ms, status, receipts_first)
        for c in targets:
            c.set_fault(fault)
        return FaultResult(ids, fault.mode)

    def faults(self) -> dict[str, dict[str, object]]:
        return {cid: c.fault.as_json() for cid, c in self.carriers.items()}

    def reset(self) -> None:
        """Clear the submit log, counters, pending receipts and faults; binds stay up."""
        self.submits.clear()
        for c in self.carriers.values():
            c.reset()

    def stats(self) -> dict[str, object]:
        return {
            "carriers": {cid: c.stats() for cid, c in self.carriers.items()},
            "submits_total": self.submits.total,
        }

