"""Group a py-spy raw profile (collapsed stacks) by self time into the issue-13 groups.

``python tools/bench.py --py-spy prof.txt`` writes collapsed stacks: one line per
distinct stack, frames joined by ``;``, the sample count last. A sample's self time
belongs to its innermost frame; that frame's file decides the group. Reactor frames
(Deferreds, timers, transports) keep their time, so writing a PDU counts as reactor.
Files shared by the server and the client side of twisted.web are charged to the
outbox if an outbox frame is up the stack, else to intake; library code of no group
(copy, generated dataclass methods, idna) goes to its nearest caller's group.

    python tools/profile_groups.py prof.txt [other.txt ...]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

GROUPS = ("Twisted reactor/transports", "HTTP intake (twisted.web)", "store/SQLite",
          "smpplib + codec", "outbox HTTP client", "pipeline modules", "JSON", "logging", "other",
          "store threads (COMMIT, checkpoint)")
# Samples of the store's worker threads: mostly waiting for fsync, beside the reactor thread.
_THREAD = re.compile(r"^threading\.py$")

# (pattern on the frame's file, group); first match wins, checked innermost frame first.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), g) for p, g in (
    (r"bridge/(outbox|pushclient)\.py|^httptools/|^treq/|twisted/web/(client|_newclient|iweb)\.py|hyperlink/",
     "outbox HTTP client"),
    (r"twisted/web/(server|resource)\.py|^email/|^urllib/|bridge/api\.py|^cgi\.py", "HTTP intake (twisted.web)"),
    (r"bridge/store|sqlite_utils/|^sqlite3/", "store/SQLite"),
    (r"^smpplib/|bridge/smpp/(codec|hotcodec)\.py", "smpplib + codec"),
    (r"^json/|orjson|bridge/jsonfast\.py", "JSON"),
    # (twisted/python/log.py's callWithLogger wraps every I/O event: reactor time, not logging.)
    (r"structlog/|^logging/|bridge/logs\.py|twisted/logger/", "logging"),
    (r"bridge/(dispatcher|inbound|finaliser|receipts|intake|mo|encoder|textcodec|gsm7|routing|rules"
     r"|template|numbers|models|ids|metrics|replay|unsubscribe|urlpolicy|daemon|matching|latency"
     r"|gauges|retention|webhooks)\.py|bridge/cluster/"
     r"|bridge/smpp/|prometheus_client/|gsm0338/", "pipeline modules"),
))
# Reactor frames keep their own self time: running Deferreds, timers and transports.
_REACTOR = re.compile(r"^twisted/|^zope/|^selectors\.py|^socket\.py|bridge/reactor\.py")
# twisted.web files used by both the server and the client: resolved by the nearest caller.
_SHARED_WEB = re.compile(r"^twisted/web/")
_FRAME = re.compile(r"\((?P<file>[^():]+)(?::\d+)?\)$")


def _file(frame: str) -> str:
    m = _FRAME.search(frame.strip())
    name = m.group("file") if m else frame
    # py-spy prints paths relative to sys.path; strip any venv prefix that remains.
    return re.sub(r"^.*?site-packages/", "", name)


def _rule(path: str) -> str | None:
    for pattern, group in _RULES:
        if pattern.search(path):
            return group
    return None


def group_of(frames: list[str]) -> str:
    """The group of a sample whose stack is ``frames`` (outermost first)."""
    if any(_THREAD.search(_file(frame)) for frame in frames[:2]):
        return "store threads (COMMIT, checkpoint)"
    leaf = _file(frames[-1])
    group = _rule(leaf)
    if group is not None:
        return group
    if _SHARED_WEB.search(leaf):
        for frame in reversed(frames[:-1]):
            if _rule(_file(frame)) == "outbox HTTP client":
                return "outbox HTTP client"
        return "HTTP intake (twisted.web)"
    if _REACTOR.search(leaf):
        return "Twisted reactor/transports"
    # Library code of no group (copy, dataclass __init__, idna...): its nearest caller's group.
    for frame in reversed(frames[:-1]):
        group = _rule(_file(frame))
        if group is not None:
            return group
    return "other"


@dataclass(frozen=True)
class Breakdown:
    samples: int
    by_group: dict[str, int]

    def share(self, group: str) -> float:
        return 100.0 * self.by_group.get(group, 0) / max(1, self.samples)


def breakdown(path: Path) -> Breakdown:
    counts: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[group_of(stack.split(";"))] += int(n)
    return Breakdown(sum(counts.values()), dict(counts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profiles", nargs="+", type=Path)
    args = p.parse_args(argv)
    results = [(prof.name, breakdown(prof)) for prof in args.profiles]
    width = max(len(g) for g in GROUPS)
    print(f"{'group':<{width}} " + " ".join(f"{name[:14]:>14}" for name, _ in results))
    for group in GROUPS:
        print(f"{group:<{width}} " + " ".join(f"{b.share(group):13.1f}%" for _, b in results))
    print(f"{'samples':<{width}} " + " ".join(f"{b.samples:>14}" for _, b in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
