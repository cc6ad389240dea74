"""Throughput of one CarrierLink against ``smsc-sim run`` (not collected by pytest).

    python -m tests.binds.bench_link --window 50 --count 20000 [--binds 2] [--no-receipts]

Prints accepted segments per second (wall clock, bridge side) and this process's CPU
time per segment. The simulator runs in its own process, as against a real SMSC.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import resource
import tempfile
import time
from pathlib import Path

import structlog

from tests.binds.simharness import SIM_CONFIG, LinkRun, spin_until
from tests.sim.simproc import SimProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carrier", default="cmcc")
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--binds", type=int, default=1)
    parser.add_argument("--no-receipts", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sim.toml"
        config.write_text(SIM_CONFIG.replace("max_binds = 8", "max_binds = 16"), encoding="utf-8")
        sim = SimProcess(config, Path(tmp) / "sim.log")
        try:
            run = LinkRun.open(sim.ports, args.carrier,
                               *[{"window": args.window}] * args.binds).start()
            room = run.link.room()
            registered = 0 if args.no_receipts else 1
            pending = run.segments(1, args.count, registered_delivery=registered)
            profiler = cProfile.Profile() if args.profile else None
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            if profiler:
                profiler.enable()

            def fed_and_done() -> bool:
                # Feed like the pipeline does: top up to room() as outcomes come back.
                space = run.link.room()
                if space and pending:
                    batch = pending[:space]
                    del pending[:space]
                    run.link.enqueue(batch)
                return len(run.outcomes) >= args.count

            spin_until(fed_and_done, timeout=600, what="all outcomes")
            elapsed = time.monotonic() - t0
            if profiler:
                profiler.disable()
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            accepted = len(run.accepted_ids())
            print(f"carrier={args.carrier} binds={args.binds} window={args.window} room={room} "
                  f"receipts={'on' if registered else 'off'}")
            print(f"{accepted}/{args.count} accepted in {elapsed:.2f}s = {accepted / elapsed:.0f} seg/s; "
                  f"bridge CPU {cpu:.2f}s = {1e6 * cpu / args.count:.0f} us/seg; "
                  f"receipts received {len(run.delivered)}")
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            run.stop(2.0)
        finally:
            sim.stop()


if __name__ == "__main__":
    main()
