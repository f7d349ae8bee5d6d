"""Client commands over gRPC: `kledger tx ...`, `kledger proof ...`, `kledger header`.

    kledger tx submit FILE.json (--key KEY | --as ORG) [--wait]   sign and submit, print the hash
    kledger tx get HASH                                          the tx body and its receipt
    kledger proof get HASH [--out FILE]                          certified inclusion bundle
    kledger proof consistency OLD_SIZE NEW_SIZE [--out FILE]     certified consistency bundle
    kledger header [--height H]                                  latest certified header

Every command takes `--cluster DIR` (a local cluster; `--member NAME` or `--public` to read as
another certificate) or `--node HOST:PORT --ca CA.pem --cert FILE --cert-key FILE`
(cluster/client/connect.py); the certificate decides what may be read (docs/node.md "Access").
Output is JSON on stdout; errors are one line on stderr with the gRPC status, exit 1 (refused /
not found) or 2 (bad arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc

from kledger.cluster.client.connect import add_connection_args, channel_from_args
from kledger.cluster.layout import ClusterLayout
from kledger.node.api.ledger_service import (
    consistency_from_proto,
    inclusion_to_json,
    receipt_from_proto,
)
from kledger.node.chain import canonical
from kledger.node.chain.header import CommitCertificate, Header
from kledger.node.chain.keys import load_key
from kledger.node.chain.tx import decode_tx, sign_tx
from kledger.node.errors import Refused
from kledger.node.registry.tx_file import body_from_file
from kledger.v1 import ledger_pb2, ledger_pb2_grpc


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _hex_hash(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a tx hash is 64 hex digits") from None
    if len(raw) != 32:
        raise argparse.ArgumentTypeError("a tx hash is 64 hex digits")
    return raw


def receipt_json(receipt: ledger_pb2.Receipt) -> dict[str, Any]:
    return receipt_from_proto(receipt).to_json()


def certified_json(certified: ledger_pb2.CertifiedHeader) -> dict[str, Any]:
    header = Header.decode(certified.header)
    return {
        "header": header.to_json(),
        "header_hash": header.hash().hex(),
        "certificate": (
            CommitCertificate.decode(certified.certificate).to_json()
            if certified.certificate
            else None
        ),
    }


def _signing_key_path(args: argparse.Namespace) -> Path:
    if args.key:
        return Path(args.key)
    if args.as_org and args.cluster:
        return ClusterLayout(Path(args.cluster)).client_key(args.as_org)
    raise ValueError("give --key KEY (a member key), or --cluster DIR with --as ORG")


def _chain_id(args: argparse.Namespace, stub: ledger_pb2_grpc.LedgerStub) -> str:
    if args.cluster:
        return ClusterLayout(Path(args.cluster)).chain_id()
    header = stub.GetHeader(ledger_pb2.GetHeaderRequest(), timeout=args.timeout)
    return Header.decode(header.header).chain_id


def tx_submit(args: argparse.Namespace, stub: ledger_pb2_grpc.LedgerStub) -> int:
    key = load_key(_signing_key_path(args))
    nonce = args.nonce if args.nonce is not None else int.from_bytes(os.urandom(8), "big")
    body = body_from_file(Path(args.file), _chain_id(args, stub), nonce)
    tx = sign_tx(key, body)
    reply = stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=tx.encoding), timeout=args.timeout)
    result: dict[str, Any] = {"tx_hash": reply.tx_hash.hex(), "type": body.type}
    if args.wait:
        receipt = stub.WaitForCommit(
            ledger_pb2.WaitForCommitRequest(tx_hash=reply.tx_hash, timeout_ms=30_000),
            timeout=args.timeout + 30,
        )
        result["receipt"] = receipt_json(receipt)
    _print(result)
    return 0 if not args.wait or result["receipt"]["status"] == "OK" else 1


def tx_get(args: argparse.Namespace, stub: ledger_pb2_grpc.LedgerStub) -> int:
    reply = stub.GetTx(ledger_pb2.GetTxRequest(tx_hash=args.hash), timeout=args.timeout)
    tx = decode_tx(reply.tx)
    body = canonical.decode(tx.body)
    _print(
        {
            "tx_hash": tx.tx_hash.hex(),
            "signer": tx.signer.hex(),
            "body": json.loads(json.dumps(body, default=lambda b: b.hex())),
            "receipt": receipt_json(reply.receipt),
        }
    )
    return 0


def _write(value: dict[str, Any], out: str | None) -> None:
    if out:
        Path(out).write_text(json.dumps(value, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    else:
        _print(value)


def proof_get(args: argparse.Namespace, stub: ledger_pb2_grpc.LedgerStub) -> int:
    proof = stub.GetInclusionProof(
        ledger_pb2.GetInclusionProofRequest(tx_hash=args.hash), timeout=args.timeout
    )
    _write(inclusion_to_json(proof), args.out)
    return 0


def proof_consistency(args: argparse.Namespace, stub: ledger_pb2_grpc.LedgerStub) -> int:
    proof = stub.GetConsistencyProof(
        ledger_pb2.GetConsistencyProofRequest(old_size=args.old_size, new_size=args.new_size),
        timeout=args.timeout,
    )
    _write(
        consistency_from_proto(proof).to_json(),
        args.out,
    )
    return 0


def header_show(args: argparse.Namespace, stub: ledger_pb2_grpc.LedgerStub) -> int:
    request = ledger_pb2.GetHeaderRequest()
    if args.height is not None:
        request.height = args.height
    _print(certified_json(stub.GetHeader(request, timeout=args.timeout)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kledger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    tx = commands.add_parser("tx", help="submit and fetch transactions")
    tx_commands = tx.add_subparsers(dest="action", required=True)
    submit = tx_commands.add_parser("submit", help="sign FILE.json and submit it")
    submit.add_argument("file", help='{"type": "RegisterWork", "payload": {...}}')
    submit.add_argument("--key", help="member key file (kledger.node.chain.keys format)")
    submit.add_argument("--as", dest="as_org", help="with --cluster: sign as ORG's client key")
    submit.add_argument("--nonce", type=int, help="default: random")
    submit.add_argument("--wait", action="store_true", help="wait for the commit receipt")
    submit.set_defaults(run=tx_submit)
    get = tx_commands.add_parser("get", help="a committed tx and its receipt")
    get.add_argument("hash", type=_hex_hash)
    get.set_defaults(run=tx_get)

    proof = commands.add_parser("proof", help="certified proofs")
    proof_commands = proof.add_subparsers(dest="action", required=True)
    inclusion = proof_commands.add_parser("get", help="inclusion bundle for a tx hash")
    inclusion.add_argument("hash", type=_hex_hash)
    inclusion.add_argument("--out", help="write the bundle to this file")
    inclusion.set_defaults(run=proof_get)
    consistency = proof_commands.add_parser("consistency", help="the log only grew")
    consistency.add_argument("old_size", type=int)
    consistency.add_argument("new_size", type=int)
    consistency.add_argument("--out", help="write the bundle to this file")
    consistency.set_defaults(run=proof_consistency)

    header = commands.add_parser("header", help="the latest certified header")
    header.add_argument("--height", type=int, help="a header by height instead")
    header.set_defaults(run=header_show)

    for sub in (submit, get, inclusion, consistency, header):
        add_connection_args(sub)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        channel = channel_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"kledger {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        with channel:
            stub = ledger_pb2_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            result: int = args.run(args, stub)
            return result
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        print(f"kledger {args.command}: {code.name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    except (ValueError, Refused) as exc:
        print(f"kledger {args.command}: {exc}", file=sys.stderr)
        return 2
