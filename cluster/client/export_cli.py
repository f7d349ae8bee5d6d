"""`kledger export cwr`: the registry's works as a CISAC CWR 2.2 registration file
(node/registry/formats/cwr_write.py), read page by page from any node.

    kledger export cwr --out FILE [--of ORG] [--sender SENDER] [--name NAME]
                       [--cluster DIR | --node HOST:PORT --ca CA]

The file is written as the works' CWR sender would send it (the HDR names that sender, the
transactions carry its submitter work numbers and interested party numbers), so importing it
into a fresh ledger gives the same works, parties, shares and links. Works from several senders
need `--sender` (the error lists them); works registered otherwise (JSON) count as their org's.
An AI-generated work has no CWR form (CWR registers authorship) and is left out, named in the
summary printed on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from kledger.cluster.client.connect import add_connection_args, channel_from_args
from kledger.node.registry.formats import cwr_write

Fetch = Callable[[str, str, str], dict[str, Any]]  # (org, sender, after) -> a Works answer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=["cwr"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--of", dest="registered_by", default="", help="works of this org only")
    parser.add_argument("--sender", default="", help="works of this CWR sender only (PB301)")
    parser.add_argument("--name", default="", help="the sender's name in the HDR")
    add_connection_args(parser)
    return parser


def grpc_fetch(args: argparse.Namespace, channel: grpc.Channel | None = None) -> Fetch:
    from kledger.v1 import registry_pb2, registry_pb2_grpc

    stub = registry_pb2_grpc.RegistryServiceStub(channel or channel_from_args(args))  # type: ignore[no-untyped-call]

    def fetch(org: str, sender: str, after: str) -> dict[str, Any]:
        request = registry_pb2.WorksRequest(
            registered_by=org, sender=sender, after=after, limit=200
        )
        reply = stub.Works(request, timeout=max(args.timeout, 30.0))
        answer: dict[str, Any] = json.loads(reply.answer_json)
        return answer

    return fetch


def works(fetch: Fetch, org: str, sender: str) -> Iterator[dict[str, Any]]:
    after = ""
    while True:
        page = fetch(org, sender, after)
        yield from page["works"]
        after = page["next"]
        if not after:
            return


def senders(fetch: Fetch, org: str) -> list[str]:
    return sorted({item["work"]["submitter"]["sender"] for item in works(fetch, org, "")})


def export(fetch: Fetch, out: Path, org: str, sender: str, name: str) -> dict[str, Any]:
    """Write the file; returns the summary (works written, works left out and why)."""
    if not sender:
        found = senders(fetch, org)
        if len(found) > 1:
            raise ValueError(f"works from {len(found)} senders ({', '.join(found)}): give --sender")
        if not found:
            raise ValueError("no works to export")
        sender = found[0]
    written = 0
    left_out: list[dict[str, str]] = []

    def kept() -> Iterator[dict[str, Any]]:
        nonlocal written
        for item in works(fetch, org, sender):
            work = item["work"]
            if work["provenance"]["creation_type"] == "ai_generated" or not work["creators"]:
                left_out.append(
                    {
                        "work_id": work["work_id"],
                        "reason": "AI-generated: no authorship to register",
                    }
                )
                continue
            written += 1
            yield item

    created = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    with out.open("w", encoding="utf-8", newline="\r\n") as file:
        for line in cwr_write.registration_lines(
            kept(), sender=sender, sender_name=name or sender, created=created
        ):
            file.write(line + "\n")
    return {"out": str(out), "sender": sender, "works": written, "left_out": left_out}


def main(argv: list[str], fetch: Fetch | None = None, channel: grpc.Channel | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = export(
            fetch or grpc_fetch(args, channel), args.out, args.registered_by, args.sender, args.name
        )
    except (OSError, ValueError) as error:
        print(f"kledger export: {error}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"kledger export: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0
