"""Certified proof bundles built from a real store and checked by `kledger verify proof`: a valid
bundle exits 0 and prints the receipt as certified; flipping a bit in ANY byte of the leaf, the
audit path, either header's hash fields, either certificate's header hash or signatures, the
receipt path, or changing any integer or string field (the receipt's status, message and output
included), exits 1 (or 2 where the change breaks the format); malformed input exits 2 naming
the field; bundles of format v1 are refused by name."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kledger.node.chain.genesis import save_genesis
from kledger.node.errors import Refused, Status
from kledger.node.proof import verify_cli as verify
from kledger.node.proof.bundle import InclusionBundle, bundle_problem, parse_bundle
from kledger.node.storage.proofs import build_consistency_bundle, build_inclusion_bundle
from tests.helpers import key, make_genesis
from tests.ledger_builders import certify, commit, make_tx, open_store


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    """A store with 6 certified blocks of 5 txs, then one uncertified block."""
    root = tmp_path_factory.mktemp("ledger")
    genesis = make_genesis()
    save_genesis(root / "genesis.json", genesis)
    store = open_store(root / "db", genesis)
    txs: list[Any] = []
    for _ in range(6):
        batch = [make_tx(len(txs) + i) for i in range(5)]
        header, _ = commit(store, batch)
        store.save_certificate(header.height, certify(header))
        txs += batch
    late = make_tx(999)
    commit(store, [late])
    yield store, txs, late, root / "genesis.json", genesis
    store.close()


def _run(tmp_path: Path, genesis_path: Path, document: Any, capsys) -> tuple[int, str]:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(document))
    status = verify.main(["proof", str(path), "--genesis", str(genesis_path)])
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1, lines
    return status, lines[0]


def test_valid_bundle_is_accepted(ledger, tmp_path, capsys):
    store, txs, _, genesis_path, genesis = ledger
    bundle = build_inclusion_bundle(store, txs[12].tx_hash)
    assert bundle.header.height == 6 and bundle.tree_size == 30 and bundle.leaf_index == 12
    assert bundle_problem(bundle, genesis) is None
    document = bundle.to_json()
    assert parse_bundle(document) == bundle
    assert set(document) == {
        "format",
        "chain_id",
        "leaf",
        "leaf_index",
        "tree_size",
        "audit_path",
        "header",
        "certificate",
        "receipt",
        "receipt_header",
        "receipt_certificate",
        "receipt_count",
        "receipt_path",
        "epoch_chain",
    }
    assert bundle.receipt_header.height == 3 and bundle.receipt_count == 5
    assert bundle.epoch_chain == ()
    status, line = _run(tmp_path, genesis_path, document, capsys)
    assert status == 0 and line.startswith("valid: tx is leaf 12 of the log of size 30")
    assert "its receipt, certified at height 3: status OK, output null" in line


def test_bundle_against_a_historical_certified_header(ledger):
    store, txs, _, _, genesis = ledger
    bundle = build_inclusion_bundle(store, txs[3].tx_hash, height=2)
    assert bundle.tree_size == 10 and bundle_problem(bundle, genesis) is None


def test_unknown_and_uncertified_txs_are_refused(ledger):
    store, _, late, _, _ = ledger
    with pytest.raises(Refused) as caught:
        build_inclusion_bundle(store, make_tx(12345).tx_hash)
    assert caught.value.status is Status.NOT_FOUND
    with pytest.raises(Refused) as caught:
        build_inclusion_bundle(store, late.tx_hash)
    assert caught.value.status is Status.UNAVAILABLE and "does not cover" in caught.value.message


def _byte_flips(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every byte of every hex field, one bit flipped (a different bit per byte)."""

    def flipped(hex_value: str, position: int) -> str:
        raw = bytearray(bytes.fromhex(hex_value))
        raw[position] ^= 1 << (position % 8)
        return raw.hex()

    def at(path: tuple[Any, ...]) -> Any:
        value: Any = document
        for step in path:
            value = value[step]
        return value

    fields: list[tuple[Any, ...]] = [("leaf",)]
    fields += [("audit_path", i) for i in range(len(document["audit_path"]))]
    fields += [("receipt_path", i) for i in range(len(document["receipt_path"]))]
    for header in ("header", "receipt_header"):
        fields += [
            (header, name)
            for name in (
                "parent_hash",
                "tx_log_root",
                "state_root",
                "validator_set_hash",
                "next_validator_set_hash",
                "receipts_root",
            )
        ]
    for certificate in ("certificate", "receipt_certificate"):
        fields += [(certificate, "header_hash")]
        signatures = document[certificate]["signatures"]
        fields += [(certificate, "signatures", i, "signature") for i in range(len(signatures))]
    for path in fields:
        original = at(path)
        for position in range(len(original) // 2):
            changed = copy.deepcopy(document)
            parent: Any = changed
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = flipped(original, position)
            yield f"{'.'.join(map(str, path))} byte {position}", changed


def _other_changes(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every integer and string field changed."""
    edits: list[tuple[tuple[Any, ...], Any]] = [
        (("chain_id",), "kledger-other"),
        (("leaf_index",), document["leaf_index"] + 1),
        (("leaf_index",), document["leaf_index"] - 1),
        (("tree_size",), document["tree_size"] + 1),
        (("tree_size",), document["tree_size"] - 1),
        (("receipt", "leaf_index"), document["receipt"]["leaf_index"] + 1),
        (("receipt", "height"), document["header"]["height"] + 1),
        (("receipt", "height"), 0),
        (("receipt", "height"), document["receipt"]["height"] - 1),
        (("receipt", "status"), "PERMISSION_DENIED"),
        (("receipt", "message"), "forged"),
        (("receipt", "output"), {"work_id": "W-forged"}),
        (("receipt_count",), document["receipt_count"] + 1),
        (("receipt_count",), document["receipt_count"] - 1),
        (("receipt_header", "height"), document["receipt_header"]["height"] + 1),
        (("receipt_header", "tx_log_size"), document["receipt_header"]["tx_log_size"] + 1),
        (("receipt_header", "epoch"), 1),
        (("header", "chain_id"), "kledger-other"),
        (("header", "proposer"), "KOSCAP"),
        (("certificate", "signatures", 0, "validator"), "KOSCAP"),
        (("certificate", "signatures", 0, "validator"), "NOBODY"),
    ]
    for name in ("epoch", "height", "round", "tx_log_size", "timestamp_ms"):
        edits.append((("header", name), document["header"][name] + 1))
    for path, value in edits:
        changed = copy.deepcopy(document)
        parent: Any = changed
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = value
        yield f"{'.'.join(map(str, path))} = {value!r}", changed
    signatures = document["certificate"]["signatures"]
    fewer = copy.deepcopy(document)
    fewer["certificate"]["signatures"] = signatures[:-1]
    yield "one signature below quorum", fewer
    twice = copy.deepcopy(document)
    twice["certificate"]["signatures"] = [signatures[0], *signatures[:-1]]
    yield "a signer counted twice", twice


def test_every_single_byte_tamper_is_rejected(ledger, tmp_path, capsys):
    store, txs, _, genesis_path, _ = ledger
    document = build_inclusion_bundle(store, txs[17].tx_hash).to_json()
    tampered = list(_byte_flips(document)) + list(_other_changes(document))
    assert len(tampered) > 700
    for description, changed in tampered:
        status, line = _run(tmp_path, genesis_path, changed, capsys)
        assert status in (1, 2), f"{description} was accepted: {line}"
        if not description.startswith("leaf byte"):
            # Only the leaf's own encoding can break a format (it is msgpack inside hex).
            assert status == 1, f"{description}: {line}"


def test_a_tampered_receipt_is_named(ledger, tmp_path, capsys):
    """The receipt's result is certified (the receipts_root of its block's header): a changed
    status is refused, naming the receipt and the header."""
    store, txs, _, genesis_path, genesis = ledger
    document = build_inclusion_bundle(store, txs[1].tx_hash).to_json()
    document["receipt"]["status"] = "PERMISSION_DENIED"
    assert bundle_problem(InclusionBundle.from_json(document), genesis) is not None
    status, line = _run(tmp_path, genesis_path, document, capsys)
    assert status == 1
    assert (
        "receipt of leaf 1 (status PERMISSION_DENIED) does not match receipts_root of header 1"
        in line
    )


def test_a_v1_bundle_is_refused_by_name(ledger, tmp_path, capsys):
    store, txs, _, genesis_path, _ = ledger
    document = build_inclusion_bundle(store, txs[2].tx_hash).to_json()
    old = {k: document[k] for k in ("chain_id", "leaf", "leaf_index", "tree_size", "audit_path")}
    old |= {"format": "kledger-proof/v1", "certificate": document["certificate"]}
    old["header"] = {
        k: v
        for k, v in document["header"].items()
        if k not in ("next_validator_set_hash", "receipts_root")
    }
    status, line = _run(tmp_path, genesis_path, old, capsys)
    assert status == 2 and "kledger-proof/v1" in line and "no longer read" in line
    old["format"] = "kledger-proof/v2"  # a v1 header inside a new envelope
    old |= {k: document[k] for k in document if k.startswith("receipt") or k == "epoch_chain"}
    status, line = _run(tmp_path, genesis_path, old, capsys)
    assert status == 2 and "is a v1 header" in line


def test_bundle_of_a_forged_tx_is_rejected(ledger, tmp_path, capsys):
    store, txs, _, genesis_path, _ = ledger
    document = build_inclusion_bundle(store, txs[4].tx_hash).to_json()
    forged = make_tx(4, org="KOSCAP")  # same content, another signer: another leaf
    document["leaf"] = forged.encoding.hex()
    status, line = _run(tmp_path, genesis_path, document, capsys)
    assert status == 1 and "does not lead to the root" in line


def test_other_genesis_is_rejected(ledger, tmp_path, capsys):
    store, txs, _, _, _ = ledger
    document = build_inclusion_bundle(store, txs[0].tx_hash).to_json()
    other = make_genesis(chain_id="kledger-test")
    orgs = tuple(o for o in other.orgs if o.org_id != "KMCA")  # another validator set
    other_path = tmp_path / "other.json"
    save_genesis(other_path, other.__class__(**{**_asdict(other), "orgs": orgs}))
    status, line = _run(tmp_path, other_path, document, capsys)
    assert status == 1 and "another validator set" in line


def _asdict(genesis: Any) -> dict[str, Any]:
    return {name: getattr(genesis, name) for name in genesis.__slots__}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("leaf"), "leaf"),
        (lambda d: d.update(leaf="zz"), "leaf"),
        (lambda d: d.update(leaf_index="3"), "leaf_index"),
        (lambda d: d.update(tree_size=-1), "tree_size"),
        (lambda d: d.update(tree_size=True), "tree_size"),
        (lambda d: d["audit_path"].append("00"), "audit_path[5]"),
        (lambda d: d.update(audit_path="00"), "audit_path"),
        (lambda d: d["header"].pop("state_root"), "header.state_root"),
        (lambda d: d["header"].update(height="1"), "header.height"),
        (lambda d: d["certificate"].update(signatures={}), "certificate.signatures"),
        (lambda d: d["receipt"].update(status=3), "receipt.status"),
        (lambda d: d.update(format="kledger-proof/v0"), "format"),
    ],
)
def test_malformed_bundles_exit_2_naming_the_field(ledger, tmp_path, capsys, edit, field):
    store, txs, _, genesis_path, _ = ledger
    document = build_inclusion_bundle(store, txs[20].tx_hash).to_json()
    edit(document)
    status, line = _run(tmp_path, genesis_path, document, capsys)
    assert status == 2 and line.startswith(f"malformed: {field}"), line


def test_unreadable_inputs_exit_2(ledger, tmp_path, capsys):
    _, _, _, genesis_path, _ = ledger
    (tmp_path / "bad.json").write_text("{")
    assert verify.main(["proof", str(tmp_path / "bad.json"), "--genesis", str(genesis_path)]) == 2
    assert (
        verify.main(["proof", str(tmp_path / "missing.json"), "--genesis", str(genesis_path)]) == 2
    )
    assert verify.main(["proof", str(tmp_path / "bad.json"), "--genesis", str(tmp_path)]) == 2
    assert verify.main(["proof", str(tmp_path / "bad.json")]) == 2  # --genesis is required
    capsys.readouterr()


def test_consistency_bundle(ledger, tmp_path, capsys):
    store, _, _, genesis_path, genesis = ledger
    bundle = build_consistency_bundle(store, 2)
    assert (bundle.old_header.height, bundle.new_header.height) == (2, 6)
    assert bundle_problem(bundle, genesis) is None
    document = bundle.to_json()
    status, line = _run(tmp_path, genesis_path, document, capsys)
    assert status == 0 and "size 10 (height 2) is a prefix of the log of size 30" in line
    for index in range(len(document["proof"])):
        changed = copy.deepcopy(document)
        raw = bytearray(bytes.fromhex(changed["proof"][index]))
        raw[index] ^= 4
        changed["proof"][index] = raw.hex()
        assert _run(tmp_path, genesis_path, changed, capsys)[0] == 1
    swapped = copy.deepcopy(document)
    swapped["old_header"], swapped["new_header"] = document["new_header"], document["old_header"]
    assert _run(tmp_path, genesis_path, swapped, capsys)[0] == 1
    unsigned = copy.deepcopy(document)
    unsigned["new_certificate"] = document["old_certificate"]
    status, line = _run(tmp_path, genesis_path, unsigned, capsys)
    assert status == 1 and "new_certificate" in line
    same = build_consistency_bundle(store, 6, 6)
    assert same.proof == () and bundle_problem(same, genesis) is None
    with pytest.raises(Refused):
        build_consistency_bundle(store, 7)  # not certified


def test_real_subprocess(ledger, tmp_path):
    store, txs, _, genesis_path, _ = ledger
    path = tmp_path / "bundle.json"
    document = build_inclusion_bundle(store, txs[9].tx_hash).to_json()
    path.write_text(json.dumps(document))
    kledger = Path(sys.executable).parent / "kledger"
    run = subprocess.run(
        [str(kledger), "verify", "proof", str(path), "--genesis", str(genesis_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0 and run.stdout.startswith("valid:"), run.stderr
    document["audit_path"][0] = "00" * 32
    path.write_text(json.dumps(document))
    run = subprocess.run(
        [str(kledger), "verify", "proof", str(path), "--genesis", str(genesis_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1 and run.stderr.startswith("invalid: inclusion")


def test_validator_keys_are_the_signers():
    # Guard for the builders: the certificate signers are the genesis validators.
    genesis = make_genesis()
    spec = genesis.org("KOMCA")
    assert spec is not None and spec.validator_key == key("KOMCA/validator").public_key
