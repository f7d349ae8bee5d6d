"""`kledger import ...`: bulk-load the societies' files as signed batches, with a progress bar
and a summary (formats: node/registry/formats/, node/registry/bulk.py, docs/registry.md).

    kledger import works FILE  (--key KEY | --as ORG) [--ack ACK] [--cluster DIR | --node ...]
    kledger import usage FILE  --key KEY ...
    kledger import txs   FILE  --key KEY ...
    kledger import ...   FILE  --dry-run [--json]     plan and check only; needs no node

`works` reads CISAC CWR 2.1 and 2.2 (the version from the HDR), `usage` DDEX DSR flat files
(from the HEAD), `txs` JSON lines of {"type", "payload"}; a file of another format is refused
naming what it is. A CWR import writes the acknowledgement a society returns (`--ack`, default
`<FILE name>.ACK` in the current directory): one ACK per transaction with its status, MSG
records for each problem and the ledger's work id, and beside it `<ACK>.json` with the
transactions' hashes and heights, for `kledger proof get`. `--dry-run` prints one JSON object:
`works` and `usage_lines` recognised, `planned` transactions, and `refused` (line, record,
field, reason, level).

Submission goes through the ledger service (cluster/client/submit.py): each batch is sent with one
SubmitBatch call and its txs are waited for until committed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from kledger.cluster.client.connect import add_connection_args
from kledger.cluster.client.submit import make_submitter
from kledger.cluster.layout import ClusterLayout
from kledger.node.chain.genesis import load_genesis
from kledger.node.chain.keys import load_key
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.registry import bulk
from kledger.node.registry.formats import cwr_write
from kledger.node.registry.formats.societies import society_code

Submit = Callable[[list[bytes]], Sequence[TxResult | Receipt]]
SubmitFactory = Callable[[argparse.Namespace], Submit]
KINDS = ("works", "usage", "txs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger import",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("file", type=Path)
    parser.add_argument("--key", type=Path, help="member key file of the submitting org")
    parser.add_argument(
        "--as",
        dest="as_org",
        help="the submitting org (default: the key file's name, e.g. KOMCA.key); with --cluster "
        "and no --key, its client key",
    )
    parser.add_argument("--chain-id", help="default: from the cluster's or --genesis file")
    parser.add_argument("--genesis", type=Path)
    parser.add_argument("--batch", type=int, default=bulk.SUBMIT_BATCH_TXS, help="txs per batch")
    parser.add_argument(
        "--nonce",
        type=int,
        help="first nonce (default: from the clock, so a re-import is not a replay)",
    )
    parser.add_argument("--ack", type=Path, help="where to write the CWR acknowledgement")
    parser.add_argument("--society-code", help="CISAC code the ACK is sent under")
    parser.add_argument("--dry-run", action="store_true", help="plan and check only")
    parser.add_argument("--json", action="store_true", help="JSON on stdout (the default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_connection_args(parser)
    return parser


def _chain_id(args: argparse.Namespace) -> str:
    if args.chain_id:
        return str(args.chain_id)
    path = args.genesis or (ClusterLayout(args.cluster).genesis if args.cluster else None)
    if path is None:
        raise ValueError("give --chain-id, --genesis or --cluster")
    return load_genesis(path).chain_id


def _org(args: argparse.Namespace) -> str:
    if args.as_org:
        return str(args.as_org)
    if args.key is not None:
        return Path(args.key).stem.split("-")[0]
    return "IMPORTER"


def open_lines(path: Path) -> Callable[[], Iterable[bytes]]:
    def lines() -> Iterator[bytes]:
        with path.open("rb") as file:
            yield from file

    return lines


class AckFile:
    """The acknowledgement of one CWR file, written as its transactions are decided."""

    def __init__(self, path: Path, plan: bulk.FilePlan, org: str, code: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.path = path
        self.writer = cwr_write.AckWriter(
            "SO", code, org, plan.header, now.strftime("%Y%m%d"), now.strftime("%Y%m%d%H%M%S")
        )
        self.file: TextIO = path.open("w", encoding="utf-8", newline="\r\n")
        self.references: list[dict[str, Any]] = []
        self._write(self.writer.head())
        if plan.rejected:  # the file as a whole: one ACK for its HDR or TRL
            self._write(
                self.writer.transaction(
                    group_id=0,
                    sequence=0,
                    transaction_type="HDR",
                    title="",
                    submitter_number="",
                    recipient_number="",
                    status="RJ",
                    problems=plan.problems,
                    first_line=1,
                )
            )

    def _write(self, lines: list[str]) -> None:
        for line in lines:
            self.file.write(line + "\n")

    def unit(self, unit: bulk.Unit) -> None:
        tx = unit.transaction
        if tx is None:
            return
        self._write(bulk.ack_lines(self.writer, unit))
        status = bulk.ack_status(unit)[0]
        work = tx.work
        self.references.append(
            {
                "group": tx.group_id,
                "transaction": tx.sequence,
                "submitter_work_number": work.submitter_work_number if work else "",
                "status": status,
                "work_id": unit.work_id,
                "txs": [
                    {
                        "type": t.type,
                        "tx_hash": t.tx_hash,
                        "height": t.height,
                        "status": t.result.status if t.result else "NOT_SENT",
                    }
                    for t in unit.txs
                ],
            }
        )

    def close(self) -> dict[str, Any]:
        self._write(self.writer.tail())
        self.file.close()
        references = self.path.with_name(self.path.name + ".json")
        references.write_text(
            json.dumps({"ack": str(self.path), "transactions": self.references}, indent=1)
        )
        return {"ack": str(self.path), "references": str(references), **self.writer.statuses}


def main(argv: list[str], submit_factory: SubmitFactory | None = None) -> int:
    args = build_parser().parse_args(argv)
    org = _org(args)
    try:
        if not args.file.is_file():
            raise OSError(f"{args.file}: no such file")
        plan = bulk.plan_file(open_lines(args.file), args.kind, org, args.file.name)
    except (OSError, ValueError) as error:
        print(f"kledger import: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        report = bulk.dry_run(plan)
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0 if not report["refused"] else 1
    try:
        if args.key is None and args.as_org and args.cluster:
            args.key = ClusterLayout(Path(args.cluster)).client_key(args.as_org)
        if args.key is None:
            raise ValueError("--key (or --as ORG with --cluster) is required unless --dry-run")
        key = load_key(args.key)
        chain_id = _chain_id(args)
        submit = (submit_factory or make_submitter)(args)
    except (OSError, ValueError) as error:
        print(f"kledger import: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.file}: {plan.format}, {plan.works} works, {plan.usage_lines} usage lines"
        + (" (the file is rejected as a whole)" if plan.rejected else ""),
        file=sys.stderr,
    )
    ack: AckFile | None = None
    if plan.format.startswith("CWR"):
        path = args.ack or Path.cwd() / f"{args.file.name}.ACK"
        ack = AckFile(path, plan, org, args.society_code or society_code(org))
    first_nonce = args.nonce if args.nonce is not None else time.time_ns() // 1000
    summary = bulk.submit_file(
        plan,
        key,
        chain_id,
        submit,
        first_nonce=first_nonce,
        max_batch_txs=args.batch,
        progress=None if args.quiet else sys.stderr,
        on_unit=ack.unit if ack else None,
    )
    report = summary.to_json()
    if ack is not None:
        report["ack"] = ack.close()
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print(
        f"accepted {summary.accepted}, already in the ledger {summary.already}, "
        f"refused {len(summary.refused)}, not sent {len(summary.not_sent)}"
        + (
            f"; {summary.matched_lines} of {summary.usage_lines} usage lines match a registered "
            "recording or work"
            if summary.usage_lines
            else ""
        )
        + (f"; ACK {report['ack']['ack']}" if ack else ""),
        file=sys.stderr,
    )
    return 0 if not summary.refused and not summary.not_sent else 1
