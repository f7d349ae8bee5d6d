"""`kledger verify`: check proofs offline, trusting nothing but the input (and a genesis file).

    kledger verify merkle FILE                  raw RFC 6962 inclusion or consistency proof
    kledger verify proof FILE --genesis FILE    certified inclusion or consistency bundle
    kledger verify state FILE --genesis FILE    certified registry state proof (presence/absence)

FILE is a path or `-` for stdin. Exit status, the same for every subcommand:

    0  valid      one line on stdout saying what was proven
    1  invalid    one line on stderr naming the first check that failed
    2  malformed  one line on stderr naming the field (bad JSON, missing/ill-typed field, bad hex)

A subcommand is one entry in SUBCOMMANDS: a function adding its arguments to its parser and a
function from the parsed arguments to a Verdict. Malformed input is raised as
node.errors.DecodeError (or Malformed); the runner maps it to exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kledger.node.chain import canonical
from kledger.node.chain.genesis import Genesis, load_genesis
from kledger.node.errors import DecodeError
from kledger.node.proof import merkle
from kledger.node.proof.bundle import (
    MAX_LEAF_BYTES,
    ConsistencyBundle,
    bundle_problem,
    parse_bundle,
    parse_count,
    parse_hash,
    parse_hashes,
    parse_hex,
)
from kledger.node.proof.state_proof import parse_bundle as parse_state_bundle
from kledger.node.proof.state_proof import state_bundle_problem

VALID, INVALID, MALFORMED = 0, 1, 2
MAX_INPUT_BYTES = 16 * 1024 * 1024


class Malformed(Exception):
    """Input that cannot be read or parsed; the message names the file or field."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """None problem = valid; `summary` says what was proven (or checked)."""

    problem: str | None
    summary: str


def read_json(source: str) -> Any:
    """The JSON document at a path, or on stdin for `-`. Raises Malformed."""
    try:
        if source == "-":
            text = sys.stdin.read(MAX_INPUT_BYTES + 1)
        else:
            with Path(source).open(encoding="utf-8") as handle:
                text = handle.read(MAX_INPUT_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise Malformed(f"{source}: cannot read ({exc})") from None
    if len(text) > MAX_INPUT_BYTES:
        raise Malformed(f"{source}: larger than {MAX_INPUT_BYTES} bytes")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Malformed(f"{source}: not JSON ({exc})") from None


def read_genesis(path: str) -> Genesis:
    try:
        return load_genesis(Path(path))
    except ValueError as exc:
        raise Malformed(f"--genesis {exc}") from None


# ---- verify merkle --------------------------------------------------------------------------


def _merkle_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="proof JSON, or - for stdin")


def check_merkle(value: Any) -> Verdict:
    """A raw RFC 6962 proof: {"type": "inclusion", ...} or {"type": "consistency", ...}."""
    if not isinstance(value, dict):
        raise DecodeError("a proof is a JSON object", "proof")
    kind = value.get("type")
    if kind == "inclusion":
        index = parse_count(value, "leaf_index")
        size = parse_count(value, "tree_size")
        if ("leaf_hash" in value) == ("leaf" in value):
            raise DecodeError('exactly one of "leaf_hash" and "leaf" is required', "leaf_hash")
        if "leaf_hash" in value:
            leaf = parse_hash(value["leaf_hash"], "leaf_hash")
        else:
            leaf = merkle.leaf_hash(parse_hex(value["leaf"], "leaf", max_bytes=MAX_LEAF_BYTES))
        path = parse_hashes(value.get("audit_path"), "audit_path")
        root = parse_hash(value.get("root"), "root")
        problem = merkle.inclusion_problem(leaf, index, size, path, root)
        return Verdict(
            problem, f"leaf {index} is in the tree of size {size} with root {root.hex()}"
        )
    if kind == "consistency":
        old_size = parse_count(value, "old_size")
        new_size = parse_count(value, "new_size")
        old_root = parse_hash(value.get("old_root"), "old_root")
        new_root = parse_hash(value.get("new_root"), "new_root")
        proof = parse_hashes(value.get("proof"), "proof")
        problem = merkle.consistency_problem(old_size, new_size, proof, old_root, new_root)
        return Verdict(problem, f"the tree of size {old_size} is a prefix of size {new_size}")
    raise DecodeError('must be "inclusion" or "consistency"', "type")


def _run_merkle(args: argparse.Namespace) -> Verdict:
    return check_merkle(read_json(args.file))


# ---- verify proof ---------------------------------------------------------------------------


def _proof_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="certified bundle JSON, or - for stdin")
    parser.add_argument("--genesis", required=True, help="the genesis file you trust")


def check_bundle(value: Any, genesis: Genesis) -> Verdict:
    bundle = parse_bundle(value)
    problem = bundle_problem(bundle, genesis)
    if isinstance(bundle, ConsistencyBundle):
        old, new = bundle.old_header, bundle.new_header
        summary = (
            f"the log of size {old.tx_log_size} (height {old.height}) is a prefix of the log of "
            f"size {new.tx_log_size} (height {new.height}), both certified on {genesis.chain_id}"
        )
    else:
        signers = len(bundle.certificate.signatures)
        summary = (
            f"tx is leaf {bundle.leaf_index} of the log of size {bundle.tree_size} at height "
            f"{bundle.header.height} of {genesis.chain_id}, certified by {signers} validators"
        )
    return Verdict(problem, summary)


def _run_proof(args: argparse.Namespace) -> Verdict:
    genesis = read_genesis(args.genesis)
    return check_bundle(read_json(args.file), genesis)


# ---- verify state ---------------------------------------------------------------------------


def _state_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="state proof bundle JSON (kledger-state-proof/v2), or -")
    parser.add_argument("--genesis", required=True, help="the genesis file you trust")


def _printable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    return value


def check_state(value: Any, genesis: Genesis) -> Verdict:
    """A registry key's value (or absence) at a certified height (node/proof/state_proof.py)."""
    try:
        key, proven, _, header, _ = parse_state_bundle(value)
    except ValueError as exc:
        raise Malformed(f"state bundle: {exc}") from None
    name = key.decode("utf-8", errors="replace")
    if proven is None:
        summary = f"{name} is absent at height {header.height} of {genesis.chain_id}"
    else:
        decoded = json.dumps(_printable(canonical.decode(proven)), ensure_ascii=False)
        summary = f"{name} at height {header.height} of {genesis.chain_id} = {decoded}"
    return Verdict(state_bundle_problem(value, genesis), summary)


def _run_state(args: argparse.Namespace) -> Verdict:
    genesis = read_genesis(args.genesis)
    return check_state(read_json(args.file), genesis)


# ---- the command ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Verdict]


SUBCOMMANDS: dict[str, Subcommand] = {
    "merkle": Subcommand(
        "check a raw RFC 6962 inclusion or consistency proof", _merkle_arguments, _run_merkle
    ),
    "proof": Subcommand(
        "check a certified proof bundle against a genesis", _proof_arguments, _run_proof
    ),
    "state": Subcommand(
        "check a certified state proof (registry key present or absent)",
        _state_arguments,
        _run_state,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger verify",
        description="Check proofs offline. Exit 0 valid, 1 invalid, 2 malformed input.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, sub in SUBCOMMANDS.items():
        sub.add_arguments(commands.add_parser(name, help=sub.help, description=sub.help))
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors are malformed input
        return VALID if exc.code == 0 else MALFORMED
    try:
        verdict = SUBCOMMANDS[args.command].run(args)
    except Malformed as exc:
        print(f"malformed: {exc}", file=sys.stderr)
        return MALFORMED
    except DecodeError as exc:
        print(f"malformed: {exc.message}", file=sys.stderr)
        return MALFORMED
    if verdict.problem is not None:
        print(f"invalid: {verdict.problem}", file=sys.stderr)
        return INVALID
    print(f"valid: {verdict.summary}")
    return VALID
