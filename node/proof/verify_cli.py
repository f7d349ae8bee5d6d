"""`kledger verify`: check proofs offline, trusting nothing but the input (and a genesis file).

    kledger verify merkle FILE                  raw RFC 6962 inclusion or consistency proof
    kledger verify proof FILE --genesis FILE    certified inclusion or consistency bundle
    kledger verify state FILE --genesis FILE    certified registry state proof (presence/absence)
    kledger verify fork A B --genesis FILE      two certified headers at one height: who signed both

`proof`, `state` and `fork` follow the bundle's epoch chain from the genesis set, or from a
checkpoint `--trust-epoch FILE` (node/proof/epochs.py); `proof` and `state` write the newest set
they proved as such a checkpoint with `--export-trust FILE`.

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
    followed_epochs,
    parse_bundle,
    parse_count,
    parse_hash,
    parse_hashes,
    parse_hex,
)
from kledger.node.proof.epochs import FollowedEpochs, TrustedEpoch
from kledger.node.proof.fork import fork_evidence, parse_certified
from kledger.node.proof.state_proof import parse_bundle as parse_state_bundle
from kledger.node.proof.state_proof import state_bundle_problem, state_epochs

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


def read_trust(args: argparse.Namespace) -> TrustedEpoch | None:
    """The --trust-epoch checkpoint, or None for the genesis set. Raises Malformed."""
    if args.trust_epoch is None:
        return None
    try:
        return TrustedEpoch.from_json(read_json(args.trust_epoch))
    except DecodeError as exc:
        raise Malformed(f"--trust-epoch {exc.message}") from None


def export_trust(args: argparse.Namespace, followed: FollowedEpochs | str, chain_id: str) -> None:
    """Write the newest proven set as a checkpoint (only for a valid bundle)."""
    if args.export_trust is None or isinstance(followed, str):
        return
    document = json.dumps(followed.trust_after(chain_id).to_json(), indent=2, sort_keys=True)
    try:
        Path(args.export_trust).write_text(document + "\n", encoding="utf-8")
    except OSError as exc:
        raise Malformed(f"--export-trust {args.export_trust}: cannot write ({exc})") from None


def _trust_arguments(parser: argparse.ArgumentParser, *, export: bool) -> None:
    parser.add_argument("--genesis", required=True, help="the genesis file you trust")
    parser.add_argument(
        "--trust-epoch",
        metavar="FILE",
        help="a checkpoint (kledger-trusted-epoch/v1) to start the epoch chain from, "
        "instead of the genesis set",
    )
    if export:
        parser.add_argument(
            "--export-trust",
            metavar="FILE",
            help="when valid, write the newest validator set the bundle proved as a checkpoint",
        )


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
    _trust_arguments(parser, export=True)


def _epoch_words(followed: FollowedEpochs | str, epoch: int) -> str:
    if isinstance(followed, str) or epoch == 0:
        return ""
    return f" (epoch {epoch}, followed through {len(followed.spans) - 1} epoch changes)"


def check_bundle(value: Any, genesis: Genesis, trust: TrustedEpoch | None = None) -> Verdict:
    bundle = parse_bundle(value)
    problem = bundle_problem(bundle, genesis, trust)
    if isinstance(bundle, ConsistencyBundle):
        old, new = bundle.old_header, bundle.new_header
        summary = (
            f"the log of size {old.tx_log_size} (height {old.height}) is a prefix of the log of "
            f"size {new.tx_log_size} (height {new.height}), both certified on {genesis.chain_id}"
        )
    else:
        signers = len(bundle.certificate.signatures)
        result = bundle.receipt.result
        output = json.dumps(result.output, ensure_ascii=False, sort_keys=True)
        message = f" ({result.message})" if result.message else ""
        summary = (
            f"tx is leaf {bundle.leaf_index} of the log of size {bundle.tree_size} at height "
            f"{bundle.header.height} of {genesis.chain_id}, certified by {signers} validators"
            f"{_epoch_words(followed_epochs(bundle, genesis, trust), bundle.header.epoch)}; "
            f"its receipt, certified at height {bundle.receipt.height}: status "
            f"{result.status}{message}, output {output}"
        )
    return Verdict(problem, summary)


def _run_proof(args: argparse.Namespace) -> Verdict:
    genesis = read_genesis(args.genesis)
    trust = read_trust(args)
    value = read_json(args.file)
    verdict = check_bundle(value, genesis, trust)
    if verdict.problem is None:
        export_trust(args, followed_epochs(parse_bundle(value), genesis, trust), genesis.chain_id)
    return verdict


# ---- verify state ---------------------------------------------------------------------------


def _state_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="state proof bundle JSON (kledger-state-proof/v3), or -")
    _trust_arguments(parser, export=True)


def _printable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    return value


def check_state(value: Any, genesis: Genesis, trust: TrustedEpoch | None = None) -> Verdict:
    """A registry key's value (or absence) at a certified height (node/proof/state_proof.py)."""
    try:
        key, proven, _, header, _, _ = parse_state_bundle(value)
    except ValueError as exc:
        raise Malformed(f"state bundle: {exc}") from None
    name = key.decode("utf-8", errors="replace")
    if proven is None:
        summary = f"{name} is absent at height {header.height} of {genesis.chain_id}"
    else:
        decoded = json.dumps(_printable(canonical.decode(proven)), ensure_ascii=False)
        summary = f"{name} at height {header.height} of {genesis.chain_id} = {decoded}"
    return Verdict(state_bundle_problem(value, genesis, trust), summary)


def _run_state(args: argparse.Namespace) -> Verdict:
    genesis = read_genesis(args.genesis)
    trust = read_trust(args)
    value = read_json(args.file)
    verdict = check_state(value, genesis, trust)
    if verdict.problem is None:
        export_trust(args, state_epochs(value, genesis, trust), genesis.chain_id)
    return verdict


# ---- verify fork ----------------------------------------------------------------------------


def _fork_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("first", help="a certified header JSON ({header, certificate}), a bundle")
    parser.add_argument("second", help="the other certified header at the same height")
    _trust_arguments(parser, export=False)


def _run_fork(args: argparse.Namespace) -> Verdict:
    """Valid when the two headers are certified, at one height, with different hashes: the
    summary names the validators whose signatures are on both (each broke safety)."""
    genesis = read_genesis(args.genesis)
    trust = read_trust(args)
    first = parse_certified(read_json(args.first), "first")
    second = parse_certified(read_json(args.second), "second")
    evidence = fork_evidence(first, second, genesis, trust)
    if isinstance(evidence, str):
        return Verdict(evidence, "")
    both = ", ".join(evidence.signed_both) or "nobody (the sets differ)"
    return Verdict(
        None,
        f"fork at height {evidence.height} of {genesis.chain_id}: headers "
        f"{evidence.hashes[0].hex()[:16]}... and {evidence.hashes[1].hex()[:16]}... are both "
        f"certified; signed both: {both}",
    )


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
    "fork": Subcommand(
        "check fork evidence: two certified headers at one height, and who signed both",
        _fork_arguments,
        _run_fork,
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
