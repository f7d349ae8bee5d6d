"""`kledger node start --config FILE`: run one node until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from kledger.node.config import load_config
from kledger.node.telemetry.logs import configure_logging


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kledger node", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="run a node in the foreground")
    start.add_argument("--config", type=Path, required=True, help="the node's node.json")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ValueError as exc:
        print(f"kledger node: refusing to start: {args.config}: {exc}", file=sys.stderr)
        return 1
    configure_logging(config.log_level)
    from kledger.node.app import StoreDamaged, run_node  # heavy imports only when it runs
    from kledger.node.runtime import tune_garbage_collector

    tune_garbage_collector()
    try:
        asyncio.run(run_node(config))
    except StoreDamaged as exc:
        # A read met a damaged record while running: the node stopped rather than serve it.
        print(f"kledger node: stopped: damaged store: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        # Bad configuration, a missing key or certificate file, or a store that does not add
        # up (StoreCorrupt is a ValueError): one line naming it, never a traceback.
        print(f"kledger node: refusing to start: {exc}", file=sys.stderr)
        return 1
    return 0
