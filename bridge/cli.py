"""``smpp-bridge`` command line: the daemon and the operator tools."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from bridge.config import DEFAULT_CONFIG_PATH, BridgeConfig, ConfigError, load_config

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the problem, exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


_RELATIVE_TIME = re.compile(r"-\d+(\.\d+)?[smhd]")
_TIME_OPTIONS = ("--since", "--until")


def _attach_relative_times(argv: Sequence[str]) -> list[str]:
    """``--since -2h`` as ``--since=-2h``: argparse would take ``-2h`` for an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _TIME_OPTIONS and _RELATIVE_TIME.fullmatch(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="smpp-bridge",
        description="SMPP 3.4 carrier bridge: intake API, durable store, carrier binds, receipts, reports.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, default=None,
                     help=f"TOML config (default: {DEFAULT_CONFIG_PATH.relative_to(DEFAULT_CONFIG_PATH.parents[1])})")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="run N cluster members behind one API port, restarting any that dies (PostgreSQL only)")
    # Set by the --workers supervisor for each worker it starts.
    run.add_argument("--node", default=None, help=argparse.SUPPRESS)
    run.add_argument("--shared-port", type=int, default=None, help=argparse.SUPPRESS)
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", type=Path, default=None)
    db = sub.add_parser("db", help="store maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    migrate = db_sub.add_parser("migrate", help="create or migrate the store's schema and exit")
    migrate.add_argument("--config", type=Path, default=None)
    try:
        from bridge.tools_cli import add_tool_commands
    except ImportError:
        pass
    else:
        add_tool_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_attach_relative_times(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"smpp-bridge: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{config.path}: ok ({len(config.carriers)} carriers, {len(config.apps)} apps, "
              f"{len(config.channels)} channels, {len(config.templates)} templates)")
        return 0
    if args.command == "db":
        return _migrate(config)
    if args.command == "run":
        if args.workers is not None:
            from bridge.cluster.workers import run_workers
            return run_workers(config, args.workers)
        from bridge.daemon import run_daemon
        return run_daemon(config, node=args.node, shared_port=args.shared_port)
    from bridge.logs import configure_logging
    from bridge.tools_cli import run_tool

    configure_logging("warning", None, config.logging.redact, channels=config.channels)
    return run_tool(args.handler, config, args)


def _migrate(config: BridgeConfig) -> int:
    """Open the store once: opening creates or migrates the schema (under a lock)."""
    from bridge.store import StoreError, open_store, result_of

    try:
        store = open_store(config.store, inline=True)
    except StoreError as exc:
        print(f"smpp-bridge: {exc}", file=sys.stderr)
        return 1
    result_of(store.close())
    print(f"{store.description}: schema up to date")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
