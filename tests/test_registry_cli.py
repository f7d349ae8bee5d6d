"""The registry's command-line pieces: `kledger query` against a real gRPC server with proofs
written to files and checked by `kledger verify state`; `kledger import` (dry run and a real
signed submission); `kledger tx submit` files, and every transaction example in
docs/registry.md is a valid transaction."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import pytest

from kledger.cluster.client import import_cli, query_cli
from kledger.node.chain.genesis import save_genesis
from kledger.node.chain.keys import save_key
from kledger.node.errors import Refused
from kledger.node.proof import verify_cli as verify
from kledger.node.registry import bulk
from kledger.node.registry.tx_file import body_from_file, body_from_json
from kledger.node.registry.txtypes import TX_TYPES
from tests.helpers import key
from tests.test_import import SAMPLE, USAGE_FILE, WORKS_FILE, submitter
from tests.test_registry import ISRC, Chain, catalog
from tests.test_registry_queries import serve

DOCS = Path(__file__).resolve().parent.parent / "docs" / "registry.md"


def test_every_transaction_type_has_a_valid_example_in_the_docs():
    text = DOCS.read_text()
    examples = re.findall(r"#### (\w+)\n```json\n(.*?)\n```", text, re.S)
    assert sorted(name for name, _ in examples) == sorted(TX_TYPES)
    for name, raw in examples:
        body = body_from_json(json.loads(raw), "kledger-test", 1)
        assert body.type == name


def test_tx_files(tmp_path):
    good = tmp_path / "run.json"
    good.write_text(
        json.dumps(
            {
                "type": "RunDistribution",
                "payload": {
                    "distribution_id": "D1",
                    "period": "2026-01",
                    "territory": "KR",
                    "currency": "KRW",
                },
            }
        )
    )
    assert body_from_file(good, "c", 7).nonce == 7
    cases = {
        "float": ({"type": "SetShares", "payload": {"shares": [{"share": 50.5}]}}, "integers"),
        "type": ({"type": "Nope", "payload": {}}, "unknown transaction type"),
        "shape": ({"type": "RunDistribution"}, "a transaction file is"),
        "field": (
            {
                "type": "RunDistribution",
                "payload": {
                    "distribution_id": "D1",
                    "period": "2026-13",
                    "territory": "KR",
                    "currency": "KRW",
                },
            },
            "payload.period",
        ),
    }
    for name, (document, reason) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        with pytest.raises(Refused, match=reason):
            body_from_file(path, "c", 1)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(Refused, match="cannot read JSON"):
        body_from_file(tmp_path / "broken.json", "c", 1)


def test_query_cli_writes_proofs_that_verify_state_checks(tmp_path, capsys):
    chain = Chain()
    catalog(chain)
    server, port = serve(chain)
    genesis_path = tmp_path / "genesis.json"
    save_genesis(genesis_path, chain.genesis)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        proofs = tmp_path / "proofs"
        assert (
            query_cli.main(
                ["query", "resolve", "isrc", ISRC, "--proofs", str(proofs)], channel=channel
            )
            == 0
        )
        printed = json.loads(capsys.readouterr().out)
        assert printed["answer"]["codes"]["isrc"] == [ISRC]
        files = sorted(proofs.glob("proof-*.json"))
        assert files
        assert verify.main(["state", str(files[0]), "--genesis", str(genesis_path)]) == 0
        assert "valid: s/code/isrc/" + ISRC in capsys.readouterr().out
        bundle = json.loads(files[0].read_text())
        bundle["header"]["state_root"] = "00" * 32
        files[0].write_text(json.dumps(bundle))
        assert verify.main(["state", str(files[0]), "--genesis", str(genesis_path)]) == 1
        assert "state_root" in capsys.readouterr().err
        assert query_cli.main(["ai", "isrc", ISRC, "--territory", "KR"], channel=channel) == 0
        assert json.loads(capsys.readouterr().out)["answer"]["answer"] == "deny"
        assert query_cli.main(["statement", "nobody", "2026-01"], channel=channel) == 1
        assert "NOT_FOUND" in capsys.readouterr().err
        channel.close()
    finally:
        server.stop(None)


def test_import_cli_dry_run_and_signed_submission(tmp_path, capsys, monkeypatch):
    usage = SAMPLE / USAGE_FILE
    assert import_cli.main(["usage", str(usage), "--dry-run", "--json"]) == 1  # one bad ISRC
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "DSR" and report["usage_lines"] == 276
    assert report["planned"] == 2 and report["works"] == 0
    assert [(r["line"], r["record"], r["field"]) for r in report["refused"]] == [
        (367, "AS01.01", "ISRC")
    ]
    assert import_cli.main(["works", str(SAMPLE / WORKS_FILE), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["format"] == "CWR 2.2" and plan["works"] == 35 and plan["refused"] == []
    assert plan["planned_by_type"]["RegisterWork"] == 35
    chain = Chain()
    save_key(tmp_path / "KOMCA.key", key("KOMCA/client"))
    genesis_path = tmp_path / "genesis.json"
    save_genesis(genesis_path, chain.genesis)
    monkeypatch.chdir(tmp_path)
    argv = [
        "works",
        str(SAMPLE / WORKS_FILE),
        "--key",
        str(tmp_path / "KOMCA.key"),
        "--genesis",
        str(genesis_path),
        "--nonce",
        "1",
    ]
    assert import_cli.main(argv, submit_factory=lambda args: submitter(chain)) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["accepted"] == plan["planned"] and summary["refused"] == []
    assert "35/35 works" in captured.err  # the progress bar finished
    ack = tmp_path / f"{WORKS_FILE}.ACK"
    assert summary["ack"]["ack"] == str(ack) and summary["ack"]["AS"] == 35
    statuses = [line[157:159] for line in ack.read_text().splitlines() if line.startswith("ACK")]
    assert statuses == ["AS"] * 35
    references = json.loads((tmp_path / f"{WORKS_FILE}.ACK.json").read_text())
    first = references["transactions"][0]
    assert first["work_id"] == "PB301-HB0001" and len(first["txs"][0]["tx_hash"]) == 64
    # The same file again: nothing changes, every work is a duplicate (DU), nothing is refused.
    argv[-1] = "100000"
    assert import_cli.main(argv, submit_factory=lambda args: submitter(chain)) == 1
    again = json.loads(capsys.readouterr().out)
    assert again["accepted"] == 0 and again["ack"]["DU"] == 35
    assert {r["type"] for r in again["refused"]} == {"RegisterWork"}


def test_export_cli_reads_works_over_grpc(tmp_path, capsys):
    from kledger.cluster.client import export_cli

    chain = Chain()
    plan = bulk.plan_file(
        lambda: (SAMPLE / WORKS_FILE).read_bytes().splitlines(keepends=True), "works", "KOMCA", "w"
    )
    bulk.submit_file(
        plan, key("KOMCA/client"), chain.genesis.chain_id, submitter(chain), first_nonce=1
    )
    server, port = serve(chain)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        out = tmp_path / "out.V22"
        assert export_cli.main(["cwr", "--out", str(out), "--of", "KOMCA"], channel=channel) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary == {"out": str(out), "sender": "PB301", "works": 35, "left_out": []}
        report = bulk.dry_run(
            bulk.plan_file(
                lambda: out.read_bytes().splitlines(keepends=True), "works", "KOMCA", "o"
            )
        )
        assert report["works"] == 35 and report["refused"] == []
        assert report["planned_by_type"] == bulk.dry_run(plan)["planned_by_type"]
        channel.close()
    finally:
        server.stop(None)
