"""`kledger query ...`: registry questions to any node, answers as JSON, optionally with state
proofs written as files that `kledger verify state FILE --genesis G` checks offline.

    kledger query resolve KIND VALUE [--territory KR] [--date YYYY-MM-DD]
    kledger query shares KIND VALUE --right PR [--territory KR] [--date D]
    kledger query overclaims [--all]
    kledger query unmatched PERIOD [--territory KR]
    kledger query statement PARTY_ID PERIOD
    kledger query distribution DISTRIBUTION_ID [--recompute]
    kledger query ai KIND VALUE [--territory KR] [--date D] [--scope ai_training]
    kledger query persona KIND VALUE
    kledger query state KEY [--height H]   one state key (e.g. s/work/W1) at a certified height
                                           in the node's retention window (default: the latest)
  every command: --proofs DIR (request proofs, write DIR/proof-NNN.json) and the connection
  arguments (--cluster DIR [--member NAME | --public] | --node HOST:PORT --ca FILE --cert FILE
  --cert-key FILE): the certificate decides what may be read (docs/node.md "Access"). KIND: iswc,
  isrc, cid, uci (or work).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import grpc

from kledger.cluster.client.connect import add_connection_args, channel_from_args
from kledger.v1 import registry_pb2, registry_pb2_grpc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger query",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--proofs", type=Path, help="request state proofs and write them into this directory"
        )
        add_connection_args(sub)
        return sub

    def coded(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("kind", choices=["iswc", "isrc", "cid", "uci", "work"])
        sub.add_argument("value")
        sub.add_argument("--territory", default="KR")
        sub.add_argument(
            "--date", default="", help="YYYY-MM-DD (default: the date of the answering header)"
        )

    coded(command("resolve", "the whole rights record behind any code"))
    shares = command("shares", "shares in effect at a date and territory")
    coded(shares)
    shares.add_argument(
        "--right", default="PR", choices=["PR", "MR", "SR", "NR_PRODUCER", "NR_PERFORMER"]
    )
    command("overclaims", "overclaim disputes").add_argument(
        "--all", action="store_true", help="include closed ones"
    )
    unmatched = command("unmatched", "usage lines that match no recording or work")
    unmatched.add_argument("period")
    unmatched.add_argument("--territory", default="KR")
    statement = command("statement", "payouts of a party in a period")
    statement.add_argument("party_id")
    statement.add_argument("period")
    dist = command("distribution", "a distribution run; --recompute re-runs it from state")
    dist.add_argument("distribution_id")
    dist.add_argument("--recompute", action="store_true")
    ai = command("ai", "may this be used for AI training here, on this date?")
    coded(ai)
    ai.add_argument(
        "--scope",
        default="ai_training",
        choices=["ai_training", "ai_generative_training", "ai_inference", "data_mining"],
    )
    persona = command("persona", "persona (voice/likeness) claims against a recording or asset")
    persona.add_argument("kind", choices=["isrc", "cid", "uci"])
    persona.add_argument("value")
    state = command("state", "one state key's value or absence at a certified height")
    state.add_argument("key", help="a registry state key, e.g. s/work/W1")
    state.add_argument(
        "--height", type=int, default=0, help="a certified height (default: the latest)"
    )
    return parser


def request_for(args: argparse.Namespace) -> tuple[str, Any]:
    """(RegistryService method name, request message) for parsed arguments."""
    proof = args.proofs is not None
    match args.command:
        case "resolve":
            return "Resolve", registry_pb2.ResolveRequest(
                kind=args.kind,
                value=args.value,
                territory=args.territory,
                date=args.date,
                with_proof=proof,
            )
        case "shares":
            return "SharesAt", registry_pb2.SharesAtRequest(
                kind=args.kind,
                value=args.value,
                right=args.right,
                territory=args.territory,
                date=args.date,
                with_proof=proof,
            )
        case "overclaims":
            return "Overclaims", registry_pb2.OverclaimsRequest(
                include_closed=args.all, with_proof=proof
            )
        case "unmatched":
            return "UnmatchedUsage", registry_pb2.UnmatchedUsageRequest(
                period=args.period, territory=args.territory, with_proof=proof
            )
        case "statement":
            return "Statement", registry_pb2.StatementRequest(
                party_id=args.party_id, period=args.period, with_proof=proof
            )
        case "distribution":
            return "Distribution", registry_pb2.DistributionRequest(
                distribution_id=args.distribution_id, recompute=args.recompute, with_proof=proof
            )
        case "ai":
            return "AiTraining", registry_pb2.AiTrainingRequest(
                kind=args.kind,
                value=args.value,
                territory=args.territory,
                date=args.date,
                scope=args.scope,
                with_proof=proof,
            )
        case "persona":
            return "PersonaClaims", registry_pb2.PersonaClaimsRequest(
                kind=args.kind, value=args.value, with_proof=proof
            )
        case "state":
            return "StateProof", registry_pb2.StateProofRequest(
                key=args.key.encode(), height=max(0, args.height)
            )
    raise AssertionError(f"unhandled command {args.command}")


def write_proofs(directory: Path, proofs: list[str]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, text in enumerate(proofs):
        path = directory / f"proof-{index:03d}.json"
        path.write_text(json.dumps(json.loads(text), indent=2) + "\n")
        written.append(path)
    return written


def main(argv: list[str], channel: grpc.Channel | None = None) -> int:
    if argv and argv[0] == "query":
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    method, request = request_for(args)
    try:
        own = channel is None
        channel = channel or channel_from_args(args)
    except (OSError, ValueError) as error:
        print(f"kledger query: {error}", file=sys.stderr)
        return 2
    try:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = getattr(stub, method)(request, timeout=args.timeout)
    except grpc.RpcError as error:
        print(f"kledger query: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    finally:
        if own:
            channel.close()
    answer = json.loads(reply.answer_json)
    print(
        json.dumps(
            {"height": reply.height, "state_root": reply.state_root.hex(), "answer": answer},
            indent=2,
            ensure_ascii=False,
        )
    )
    if args.proofs is not None:
        written = write_proofs(args.proofs, list(reply.proofs_json))
        print(
            f"{len(written)} state proofs in {args.proofs} (kledger verify state FILE --genesis G)",
            file=sys.stderr,
        )
    return 0
