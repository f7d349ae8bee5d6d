"""`kledger id check KIND VALUE`: print the canonical form of an identifier (exit 0) or the reason
it is not one (exit 1). KIND is one of iswc, isrc, uci, cid, ipi, isni, territory."""

from __future__ import annotations

import argparse
import sys

from kledger.node.errors import Refused
from kledger.node.registry.identifiers import PARSERS, parse_code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kledger id", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate and normalize one identifier")
    check.add_argument("kind", choices=sorted(PARSERS))
    check.add_argument("value")
    args = parser.parse_args(argv)
    try:
        print(parse_code(args.kind, args.value))
    except Refused as refusal:
        print(f"invalid {args.kind}: {refusal.message}", file=sys.stderr)
        return 1
    return 0
