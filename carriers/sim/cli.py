"""``smsc-sim``: run the simulator alone, for any ESME to bind to.

``smsc-sim run [--config PATH]`` logs structlog JSON (console on a terminal) to
stderr and prints exactly one JSON line on stdout when every port listens:
``{"event": "ready", "ports": {...}, "control": N}``. SIGINT/SIGTERM unbind the
sessions and exit 0; a bad config exits 2 with one ``file: key: problem`` line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import structlog

__all__ = ["main"]

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smsc-sim",
        description="SMSC simulator of China Mobile, China Unicom, China Telecom, "
                    "China Broadnet and an international route (SMPP 3.4).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="start the five SMPP listeners and the control API",
                         description="Start the five SMPP listeners and the control API; "
                                     "print one JSON 'ready' line on stdout when listening.")
    run.add_argument("--config", type=Path, metavar="PATH",
                     help="TOML overrides ([sim], [sim.carriers.<id>]); default: profile defaults")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.add_argument("--log-format", choices=("json", "console"),
                     help="default: console on a terminal, JSON otherwise")
    return parser


def _configure_logging(level: str, fmt: str | None) -> None:
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _forward_twisted_errors() -> None:
    """Twisted's own warnings and errors (unhandled failures) go to structlog too."""
    from twisted.logger import LogLevel, formatEvent, globalLogBeginner

    tlog = structlog.get_logger("twisted")

    def observer(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text = f"{text}\n{failure.getTraceback()}"
            tlog.warning("twisted.log", message=text)

    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False, discardBuffer=True)


def _run(config_path: Path | None, log_level: str, log_format: str | None) -> int:
    from carriers.sim.config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"smsc-sim: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(log_level, log_format)

    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError

    from carriers.sim.service import start_simulator

    _forward_twisted_errors()
    try:
        running = start_simulator(config, reactor)
    except CannotListenError as exc:
        print(f"smsc-sim: cannot listen on {exc.interface or '*'}:{exc.port}: {exc.socketError}",
              file=sys.stderr)
        return EXIT_RUNTIME
    reactor.addSystemEventTrigger("before", "shutdown", running.stop)

    def announce() -> None:
        # Only once the reactor runs are its SIGINT/SIGTERM handlers installed: a parent
        # that signals right after reading this line gets a clean stop, not a kill.
        sys.stdout.write(json.dumps(running.ready_event()) + "\n")
        sys.stdout.flush()

    reactor.callWhenRunning(announce)
    reactor.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args.config, args.log_level, args.log_format)
    return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
