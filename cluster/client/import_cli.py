"""`kledger import ...`: bulk-load a CWR-style works file, a DSR-style usage file or a JSON-lines
transaction file as signed batches, with a progress bar and a summary of accepted and refused
lines with reasons (formats: node/registry/bulk.py, docs/registry.md).

    kledger import works FILE.cwr  --key KEY [--cluster DIR | --node H:P --ca CA] [--dry-run]
    kledger import usage FILE.tsv  --key KEY ...
    kledger import txs   FILE.jsonl --key KEY ...

Submission goes through the ledger service (cluster/client/submit.py): each batch is sent with one
SubmitBatch call and its txs are waited for until committed. --dry-run only plans and checks,
and needs no node.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kledger.cluster.client.connect import add_connection_args
from kledger.cluster.client.submit import make_submitter
from kledger.cluster.layout import ClusterLayout
from kledger.node.chain.genesis import load_genesis
from kledger.node.chain.keys import load_key
from kledger.node.chain.receipt import TxResult
from kledger.node.registry import bulk

Submit = Callable[[list[bytes]], list[TxResult]]
SubmitFactory = Callable[[argparse.Namespace], Submit]
PLANNERS = {"works": bulk.plan_cwr, "usage": bulk.plan_dsr, "txs": bulk.plan_jsonl}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger import",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=sorted(PLANNERS))
    parser.add_argument("file", type=Path)
    parser.add_argument("--key", type=Path, help="member key file of the submitting org")
    parser.add_argument("--chain-id", help="default: from the cluster's or --genesis file")
    parser.add_argument("--genesis", type=Path)
    parser.add_argument("--batch", type=int, default=bulk.SUBMIT_BATCH_TXS, help="txs per batch")
    parser.add_argument(
        "--nonce",
        type=int,
        help="first nonce (default: from the clock, so a re-import is not a replay)",
    )
    parser.add_argument("--dry-run", action="store_true", help="plan and check only")
    add_connection_args(parser)
    return parser


def _chain_id(args: argparse.Namespace) -> str:
    if args.chain_id:
        return str(args.chain_id)
    path = args.genesis or (ClusterLayout(args.cluster).genesis if args.cluster else None)
    if path is None:
        raise ValueError("give --chain-id, --genesis or --cluster")
    return load_genesis(path).chain_id


def main(argv: list[str], submit_factory: SubmitFactory | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        text = args.file.read_text(encoding="utf-8")
        plan = PLANNERS[args.kind](text, args.file.name)
    except (OSError, ValueError) as error:
        print(f"kledger import: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.file}: {len(plan.txs)} transactions planned, "
        f"{len(plan.problems)} lines refused before sending",
        file=sys.stderr,
    )
    if args.dry_run:
        summary = bulk.Summary(not_sent=list(plan.problems))
        print(
            json.dumps(
                {"planned": len(plan.txs), **summary.to_json()}, indent=2, ensure_ascii=False
            )
        )
        return 0 if not plan.problems else 1
    try:
        if args.key is None:
            raise ValueError("--key is required unless --dry-run")
        key = load_key(args.key)
        chain_id = _chain_id(args)
        submit = (submit_factory or make_submitter)(args)
    except (OSError, ValueError) as error:
        print(f"kledger import: {error}", file=sys.stderr)
        return 2
    first_nonce = args.nonce if args.nonce is not None else time.time_ns() // 1000
    summary = bulk.submit_plan(
        plan,
        key,
        chain_id,
        submit,
        first_nonce=first_nonce,
        max_batch_txs=args.batch,
        progress=sys.stderr,
    )
    print(json.dumps(summary.to_json(), indent=2, ensure_ascii=False))
    print(
        f"accepted {summary.accepted}, refused {len(summary.refused)}, "
        f"not sent {len(summary.not_sent)}",
        file=sys.stderr,
    )
    return 0 if not summary.refused and not summary.not_sent else 1
