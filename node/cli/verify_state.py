"""`kledger verify state FILE --genesis GENESIS`: check a state proof bundle offline, trusting
only the genesis. Prints the proven key and value (decoded) and exits 0, or the problem and
exits 1."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from node import canonical
from node.genesis import load_genesis
from node.state_proof import state_bundle_problem


def _printable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kledger verify state", description=__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--genesis", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        genesis = load_genesis(args.genesis)
        bundle = json.loads(args.bundle.read_text())
    except (OSError, ValueError) as error:
        print(f"cannot read input: {error}", file=sys.stderr)
        return 1
    problem = state_bundle_problem(bundle, genesis)
    if problem is not None:
        print(f"INVALID: {problem}", file=sys.stderr)
        return 1
    key = bytes.fromhex(bundle["key"])
    height = bundle["header"]["height"]
    if bundle["value"] is None:
        print(f"OK: {key.decode(errors='replace')} is absent at height {height}")
    else:
        value = canonical.decode(bytes.fromhex(bundle["value"]))
        print(f"OK: {key.decode(errors='replace')} at height {height} =")
        print(json.dumps(_printable(value), indent=2, ensure_ascii=False))
    return 0
