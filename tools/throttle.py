"""Throughput against a throttling SMSC, measured where the SMSC sees it.

Starts the simulator with one carrier (cucc) limited to ``--smsc-tps`` and the daemon
(lab setup: one transceiver bind, window 50, ``--tps`` or no configured limit), sends
long messages through the HTTP API, and reads the simulator's own submit log: the
accepted rate over a steady window, the throttled answers, and how many messages had
their parts accepted out of order.

    python -m tools.throttle --smsc-tps 15 --seconds 30
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from smpplib import consts

from tools.lab import (
    APP_TOKEN,
    CHANNEL,
    LabConfig,
    Receiver,
    http_json,
    start_bridge,
    start_sim,
    write_bridge_config,
)

WARMUP_S = 5.0


def _parts(submit: dict[str, Any]) -> dict[str, Any]:
    return submit["sar"] or submit["udh"] or {"ref": None, "seq": 1}


def measure(workdir: Path, smsc_tps: int, tps: float | None, seconds: float) -> str:
    cfg = LabConfig(workdir=workdir, sim_extra={"cucc": f"tps = {smsc_tps}"}, tps=tps)
    receiver = Receiver()
    sim = start_sim(cfg)
    bridge = None
    try:
        bridge = start_bridge(cfg, write_bridge_config(cfg, sim.ready["ports"], receiver))
        api = f"http://127.0.0.1:{bridge.ready['api']}"
        wanted = int(smsc_tps * (seconds + WARMUP_S) * 1.5)  # segments: more than the SMSC can take
        sent = 0
        batch = 0
        while sent < wanted:
            to = [f"+86186{batch * 50 + i:07d}7" for i in range(50)]
            status, body = http_json("POST", f"{api}/v1/sms", {"from": CHANNEL, "to": to, "body": "a" * 500},
                                     token=APP_TOKEN)
            if status != 200:
                raise SystemExit(f"POST /v1/sms answered {status}: {body}")
            sent += len(to) * 4  # at least four parts each
            batch += 1
        end = time.monotonic() + WARMUP_S + seconds + 1.0
        while time.monotonic() < end:  # a measured window, not a wait for an event
            time.sleep(0.5)
        control = f"http://127.0.0.1:{sim.ready['control']}"
        _, log = http_json("GET", f"{control}/submits?carrier=cucc&limit=1000000")
    finally:
        if bridge is not None:
            bridge.stop()
        sim.stop()
        receiver.close()
    accepted = [s for s in log["submits"] if s["status"] == 0]
    throttled = sum(1 for s in log["submits"] if s["status"] == consts.SMPP_ESME_RTHROTTLED)
    if not accepted:
        return "nothing accepted"
    start = accepted[0]["time"] + WARMUP_S
    steady = sum(1 for s in accepted if start <= s["time"] < start + seconds)
    parts: dict[tuple[str, Any], list[int]] = {}
    for s in accepted:
        parts.setdefault((s["destination_addr"], _parts(s)["ref"]), []).append(_parts(s)["seq"])
    disordered = sum(1 for seqs in parts.values() if seqs != sorted(seqs))
    return (f"SMSC limit {smsc_tps}/s, bridge tps {tps or 'unset'}: accepted {steady / seconds:.1f}/s "
            f"({100 * steady / seconds / smsc_tps:.0f} %) over {seconds:g} s after {WARMUP_S:g} s warm-up; "
            f"{throttled} throttled answers for {len(accepted)} accepted; "
            f"{disordered} of {len(parts)} messages with parts out of order")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smsc-tps", type=int, default=15)
    parser.add_argument("--tps", type=float, default=None, help="the bind's configured tps (default: unset)")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="throttle-") as tmp:
        print(measure(Path(tmp), args.smsc_tps, args.tps, args.seconds))


if __name__ == "__main__":
    main()
