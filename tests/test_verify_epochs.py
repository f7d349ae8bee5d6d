"""The verifier follows epochs (docs/design.md §7.4) over a ledger of three really executed
epochs (tests/epoch_builders.py): bundles in any epoch verify from genesis, or from a checkpoint
exported by an earlier verification; each rule of the epoch chain has a test that breaks
exactly that rule (gap, reordering, a signer outside its epoch, a quorum of the wrong n, a next
set that is not the one named, a link that does not end its epoch, a header above its epoch's
end signed by that epoch's old set); fork evidence names who signed both."""

from __future__ import annotations

import copy
import dataclasses
import json
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from kledger.cluster.client import query_cli
from kledger.consensus.validators import ValidatorSet
from kledger.node.api.access import AccessPolicy
from kledger.node.api.ledger_service import (
    consistency_from_proto,
    epoch_chain_to_proto,
    inclusion_from_proto,
    inclusion_to_proto,
)
from kledger.node.api.registry_service import add_registry_service
from kledger.node.chain.genesis import save_genesis
from kledger.node.chain.header import Header
from kledger.node.commit.certified_state import CertifiedState
from kledger.node.errors import DecodeError
from kledger.node.proof import verify_cli as verify
from kledger.node.proof.bundle import InclusionBundle, bundle_problem
from kledger.node.proof.epochs import EpochLink, TrustedEpoch, members_to_json
from kledger.node.proof.state_proof import build_bundle, state_bundle_problem
from kledger.node.storage import proofs
from kledger.node.storage.proofs import (
    build_consistency_bundle,
    build_epoch_chain,
    build_inclusion_bundle,
)
from kledger.v1 import ledger_pb2
from tests.epoch_builders import (
    EPOCH_KEYS,
    GENESIS,
    SETS,
    EpochLedger,
    build_epoch_ledger,
    sign_with,
)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("epochs")
    save_genesis(root / "genesis.json", GENESIS)
    built = build_epoch_ledger(root / "db")
    yield built, root / "genesis.json"
    built.store.close()


def _run(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = verify.main(argv)
    out, err = capsys.readouterr()
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1, lines
    return status, lines[0]


def _proof(tmp_path: Path, genesis: Path, document: Any, capsys, *extra: str) -> tuple[int, str]:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(document))
    return _run(tmp_path, ["proof", str(path), "--genesis", str(genesis), *extra], capsys)


def _bundle(ledger: EpochLedger, tx_index: int) -> dict[str, Any]:
    return build_inclusion_bundle(ledger.store, ledger.txs[tx_index].tx_hash).to_json()


def _resign(link: dict[str, Any], keys: dict[str, Any]) -> None:
    """Certify a link's (or bundle's) header again with exactly these signers."""
    link["certificate"] = sign_with(Header.from_json(link["header"]), keys).to_json()


# ---- what verifies ---------------------------------------------------------------------------


def test_the_node_serves_the_chain_of_epoch_ends(ledger):
    built, _ = ledger
    assert build_epoch_chain(built.store, 0) == ()
    chain = build_epoch_chain(built.store, 2)
    assert [link.header.height for link in chain] == [3, 6]
    assert [link.next_validators for link in chain] == [SETS[1], SETS[2]]
    assert all(
        link.header.next_validator_set_hash == link.next_validators.digest() for link in chain
    )
    early = build_inclusion_bundle(built.store, built.txs[0].tx_hash, height=2)
    assert early.epoch_chain == () and bundle_problem(early, GENESIS) is None


def test_bundles_of_every_epoch_verify_from_genesis(ledger, tmp_path, capsys):
    built, genesis = ledger
    for tx_index in (0, 7, 12, 14):  # heights 1 (epoch 0), 4 (1), 7 (2), 8 (2)
        bundle = build_inclusion_bundle(built.store, built.txs[tx_index].tx_hash)
        assert bundle.header.epoch == 2 and len(bundle.epoch_chain) == 2
        assert bundle.receipt_header.epoch == built.epoch_of_height(bundle.receipt.height)
        status, line = _proof(tmp_path, genesis, bundle.to_json(), capsys)
        assert status == 0, line
        assert "(epoch 2, followed through 2 epoch changes)" in line
        assert f"status {bundle.receipt.result.status}" in line
    consistency = build_consistency_bundle(built.store, 2, 8)
    assert len(consistency.epoch_chain) == 2 and bundle_problem(consistency, GENESIS) is None


def test_state_bundles_follow_the_same_chain(ledger):
    built, _ = ledger
    state = CertifiedState(built.store, retention_blocks=100)
    found = state.proof_at(8, b"s/org/MISSING")
    chain = build_epoch_chain(built.store, found.header.epoch)
    document = build_bundle(
        found.key, found.value, found.proof, found.header, found.certificate, epoch_chain=chain
    )
    assert state_bundle_problem(document, GENESIS) is None
    without = build_bundle(found.key, found.value, found.proof, found.header, found.certificate)
    problem = state_bundle_problem(without, GENESIS)
    assert problem is not None and "header of epoch 2" in problem


def test_a_checkpoint_exported_by_one_verification_trusts_the_next(ledger, tmp_path, capsys):
    built, genesis = ledger
    trust = tmp_path / "trust.json"
    status, _ = _proof(tmp_path, genesis, _bundle(built, 14), capsys, "--export-trust", str(trust))
    assert status == 0
    exported = TrustedEpoch.from_json(json.loads(trust.read_text()))
    assert exported.validators == SETS[2] and exported.first_height == 7
    # From the checkpoint the links are not needed, and older ones are skipped.
    short = _bundle(built, 15)
    short["epoch_chain"] = []
    assert _proof(tmp_path, genesis, short, capsys, "--trust-epoch", str(trust))[0] == 0
    assert (
        _proof(tmp_path, genesis, _bundle(built, 15), capsys, "--trust-epoch", str(trust))[0] == 0
    )
    # Without it the same short bundle proves nothing.
    status, line = _proof(tmp_path, genesis, short, capsys)
    assert status == 1 and "links prove the sets of epochs 0..0 only" in line
    # A checkpoint of epoch 1 starts the chain at its link.
    middle = TrustedEpoch(GENESIS.chain_id, SETS[1], 4).to_json()
    (tmp_path / "middle.json").write_text(json.dumps(middle))
    from_middle = _bundle(built, 15)
    from_middle["epoch_chain"] = from_middle["epoch_chain"][1:]
    trusted = ["--trust-epoch", str(tmp_path / "middle.json")]
    assert _proof(tmp_path, genesis, from_middle, capsys, *trusted)[0] == 0
    # A checkpoint with other keys does not certify the real links.
    forged = TrustedEpoch(GENESIS.chain_id, SETS[2], 1).to_json() | {"epoch": 1}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    status, line = _proof(
        tmp_path, genesis, from_middle, capsys, "--trust-epoch", str(tmp_path / "forged.json")
    )
    assert status == 1 and "epoch_chain[0]" in line and "another validator set" in line
    (tmp_path / "bad.json").write_text(json.dumps({"format": "kledger-trusted-epoch/v1"}))
    status, line = _proof(
        tmp_path, genesis, from_middle, capsys, "--trust-epoch", str(tmp_path / "bad.json")
    )
    assert status == 2 and line.startswith("malformed: --trust-epoch")


# ---- each rule of the chain, broken alone ----------------------------------------------------


def test_a_gap_is_refused(ledger, tmp_path, capsys):
    built, genesis = ledger
    document = _bundle(built, 14)
    del document["epoch_chain"][0]
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert status == 1
    assert line.startswith(
        "invalid: epoch_chain[0]: starts at epoch 1 but the trusted set is of epoch 0"
    )


def test_reordered_links_are_refused(ledger, tmp_path, capsys):
    built, genesis = ledger
    document = _bundle(built, 14)
    document["epoch_chain"].reverse()
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert status == 1 and line.startswith(
        "invalid: epoch_chain[1]: header of epoch 0 where epoch 2"
    )
    assert "no gap, no reordering" in line


def test_a_signer_outside_its_epoch_is_refused(ledger, tmp_path, capsys):
    built, genesis = ledger
    document = _bundle(built, 14)
    # MCST joins in epoch 1: its signature on epoch 0's last header is not one of epoch 0's.
    _resign(document["epoch_chain"][0], EPOCH_KEYS[0] | {"MCST": EPOCH_KEYS[1]["MCST"]})
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert status == 1 and line.startswith("invalid: epoch_chain[0]: certificate")
    assert "signer 'MCST' is not a validator of epoch 0" in line
    # KMCA left after epoch 1: its signature on an epoch-2 header is refused.
    document = _bundle(built, 14)
    _resign(document, EPOCH_KEYS[2] | {"KMCA": EPOCH_KEYS[1]["KMCA"]})
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert status == 1 and "signer 'KMCA' is not a validator of epoch 2" in line
    # KOMCA's old key signs no header of epoch 1, where its new key is the one named.
    document = _bundle(built, 14)
    _resign(document["epoch_chain"][1], EPOCH_KEYS[1] | {"KOMCA": EPOCH_KEYS[0]["KOMCA"]})
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert (
        status == 1 and "epoch_chain[1]" in line and "signature of 'KOMCA' does not verify" in line
    )


def test_a_quorum_is_counted_against_its_own_epochs_n(ledger, tmp_path, capsys):
    built, genesis = ledger
    document = _bundle(built, 14)
    # Four signatures: a quorum of six (epoch 0), not of seven (epoch 1, q = 5).
    four = {org: EPOCH_KEYS[1][org] for org in ("FKMP", "KEPA", "KMCA", "KOMCA")}
    _resign(document["epoch_chain"][1], four)
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert status == 1 and line.startswith("invalid: epoch_chain[1]: certificate")
    assert "4 signatures, quorum is 5" in line
    five = four | {"MCST": EPOCH_KEYS[1]["MCST"]}
    _resign(document["epoch_chain"][1], five)
    assert _proof(tmp_path, genesis, document, capsys)[0] == 0


def test_a_next_set_other_than_the_one_named_is_refused(ledger, tmp_path, capsys):
    built, genesis = ledger
    document = _bundle(built, 14)
    members = document["epoch_chain"][0]["next_validators"]["validators"]
    document["epoch_chain"][0]["next_validators"]["validators"] = members[:-1]
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert status == 1 and line.startswith(
        "invalid: epoch_chain[0]: next_validators does not match the next_validator_set_hash "
        "of the header at height 3"
    )
    renumbered = _bundle(built, 14)
    renumbered["epoch_chain"][0]["next_validators"]["epoch"] = 5
    status, line = _proof(tmp_path, genesis, renumbered, capsys)
    assert status == 1 and "epoch_chain[0]: next_validators does not match" in line


def test_a_link_whose_header_does_not_end_its_epoch_is_refused(ledger, tmp_path, capsys):
    built, genesis = ledger
    document = _bundle(built, 14)
    inner = built.store.header(2)  # certified by epoch 0, but not its last block
    assert inner is not None
    document["epoch_chain"][0]["header"] = inner.to_json()
    _resign(document["epoch_chain"][0], EPOCH_KEYS[0])
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert status == 1 and line.startswith(
        "invalid: epoch_chain[0]: header at height 2 does not end epoch 0 "
        "(its next_validator_set_hash is zero)"
    )


def test_a_header_above_its_epochs_end_signed_by_the_old_set_is_refused(ledger, tmp_path, capsys):
    """The long-range attack: the validators of an ended epoch sign a header above its end."""
    built, genesis = ledger
    document = _bundle(built, 14)
    real = Header.from_json(document["header"])
    stale = dataclasses.replace(real, epoch=0, validator_set_hash=SETS[0].digest())
    document["header"] = stale.to_json()
    _resign(document, EPOCH_KEYS[0])
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert status == 1 and line.startswith(
        "invalid: certificate: header at height 8 names epoch 0, whose span is heights 1..3"
    )
    # The same forgery as a link: epoch 1 "ending" below epoch 0's end.
    links = _bundle(built, 14)
    early = dataclasses.replace(Header.from_json(links["epoch_chain"][1]["header"]), height=2)
    links["epoch_chain"][1]["header"] = early.to_json()
    _resign(links["epoch_chain"][1], EPOCH_KEYS[1])
    status, line = _proof(tmp_path, genesis, links, capsys)
    assert status == 1 and "epoch_chain[1]: epoch 1 ends at height 2, not above" in line


def test_the_node_bounds_the_chain_it_builds(ledger, monkeypatch):
    built, _ = ledger
    monkeypatch.setattr(proofs, "MAX_EPOCH_LINKS", 1)
    chain = build_epoch_chain(built.store, 2)
    assert [link.header.epoch for link in chain] == [1]  # the last one: a checkpoint covers it
    bundle = build_inclusion_bundle(built.store, built.txs[14].tx_hash)
    problem = bundle_problem(bundle, GENESIS)
    assert problem is not None and "starts at epoch 1" in problem
    middle = TrustedEpoch(GENESIS.chain_id, SETS[1], 4)
    assert bundle_problem(bundle, GENESIS, middle) is None


def test_links_beyond_the_maximum_are_malformed(ledger, tmp_path, capsys):
    built, genesis = ledger
    document = _bundle(built, 14)
    document["epoch_chain"] = document["epoch_chain"] * 40
    status, line = _proof(tmp_path, genesis, document, capsys)
    assert status == 2 and line == "malformed: epoch_chain: more than 64 links"


# ---- fork evidence ---------------------------------------------------------------------------


def _certified_file(path: Path, header: Header, keys: dict[str, Any], chain: list[Any]) -> str:
    document = {
        "header": header.to_json(),
        "certificate": sign_with(header, keys).to_json(),
        "epoch_chain": chain,
    }
    path.write_text(json.dumps(document))
    return str(path)


def test_fork_evidence_names_who_signed_both(ledger, tmp_path, capsys):
    built, genesis = ledger
    real = built.store.header(5)
    assert real is not None and real.epoch == 1
    chain = [link.to_json() for link in build_epoch_chain(built.store, 1)]
    first = _certified_file(tmp_path / "a.json", real, EPOCH_KEYS[1], chain)
    other = dataclasses.replace(real, state_root=bytes(32))
    liars = {org: EPOCH_KEYS[1][org] for org in ("FKMP", "KEPA", "KOMCA", "MCST", "RIAK")}
    second = _certified_file(tmp_path / "b.json", other, liars, chain)
    argv = ["fork", first, second, "--genesis", str(genesis)]
    status, line = _run(tmp_path, argv, capsys)
    assert status == 0 and line.startswith("valid: fork at height 5 of kledger-test")
    assert line.endswith("signed both: FKMP, KEPA, KOMCA, MCST, RIAK")
    # The same header twice is no fork; a header not certified is no evidence.
    status, line = _run(tmp_path, ["fork", first, first, "--genesis", str(genesis)], capsys)
    assert status == 1 and "no fork" in line
    few = {org: EPOCH_KEYS[1][org] for org in ("FKMP", "KEPA", "KOMCA", "MCST")}
    weak = _certified_file(tmp_path / "c.json", other, few, chain)
    status, line = _run(tmp_path, ["fork", first, weak, "--genesis", str(genesis)], capsys)
    assert status == 1 and line == "invalid: second: 4 signatures, quorum is 5"
    # Without the chain, an epoch-1 header proves nothing (the verifier trusts genesis only).
    bare = _certified_file(tmp_path / "d.json", other, liars, [])
    status, line = _run(tmp_path, ["fork", first, bare, "--genesis", str(genesis)], capsys)
    assert status == 1 and line.startswith("invalid: second: header of epoch 1")
    later = _certified_file(tmp_path / "e.json", built.store.header(6), EPOCH_KEYS[1], chain)
    status, line = _run(tmp_path, ["fork", first, later, "--genesis", str(genesis)], capsys)
    assert status == 1 and "a fork needs one height" in line


def test_trust_file_round_trips_and_names_its_fields():
    trust = TrustedEpoch(GENESIS.chain_id, SETS[1], 4)
    assert TrustedEpoch.from_json(trust.to_json()) == trust
    broken = trust.to_json() | {"validators": [["KOMCA", "zz"]]}
    with pytest.raises(Exception) as info:
        TrustedEpoch.from_json(broken)
    assert "trust.validators[0]" in str(info.value)
    link = EpochLink(
        Header.from_json(_any_header().to_json()),
        sign_with(_any_header(), EPOCH_KEYS[0]),
        ValidatorSet.of(1, [(v.node_id, v.public_key) for v in SETS[1].validators]),
    )
    assert EpochLink.from_json(copy.deepcopy(link.to_json()), "link") == link
    assert members_to_json(SETS[1])[0] == ["FKMP", SETS[1].validators[0].public_key.hex()]


def _any_header() -> Header:
    return Header(
        GENESIS.chain_id, 0, 3, 3, bytes(32), 0, bytes(32), bytes(32), SETS[0].digest(),
        SETS[1].digest(), bytes(32), "KOMCA", 0,
    )  # fmt: skip


def test_an_inclusion_bundle_round_trips_with_its_chain(ledger):
    built, _ = ledger
    bundle = build_inclusion_bundle(built.store, built.txs[14].tx_hash)
    assert InclusionBundle.from_json(json.loads(json.dumps(bundle.to_json()))) == bundle


# ---- served over gRPC ------------------------------------------------------------------------


def test_the_chain_survives_the_wire(ledger):
    """InclusionProof / ConsistencyProof carry the links; the client side rebuilds them exactly
    and refuses a link whose set is not well formed, naming the link."""
    built, _ = ledger
    bundle = build_inclusion_bundle(built.store, built.txs[14].tx_hash)
    wire = inclusion_to_proto(bundle)
    assert len(wire.epoch_chain) == 2 and inclusion_from_proto(wire) == bundle
    consistency = build_consistency_bundle(built.store, 2, 8)
    assert (
        consistency_from_proto(
            ledger_pb2.ConsistencyProof.FromString(_consistency_wire(consistency))
        )
        == consistency
    )
    wire.epoch_chain[1].next_validators[0].public_key = b"\x01" * 31
    with pytest.raises(DecodeError) as info:
        inclusion_from_proto(wire)
    assert info.value.field == "epoch_chain[1]"


def _consistency_wire(bundle: Any) -> bytes:
    return ledger_pb2.ConsistencyProof(
        chain_id=bundle.chain_id,
        proof=list(bundle.proof),
        old_header=ledger_pb2.CertifiedHeader(
            header=bundle.old_header.encode(), certificate=bundle.old_certificate.encode()
        ),
        new_header=ledger_pb2.CertifiedHeader(
            header=bundle.new_header.encode(), certificate=bundle.new_certificate.encode()
        ),
        epoch_chain=epoch_chain_to_proto(bundle.epoch_chain),
    ).SerializeToString()


def test_query_state_saves_a_proof_that_follows_the_epochs(ledger, tmp_path, capsys):
    """`kledger query state KEY` over real gRPC against the epoch ledger's store, then
    `kledger verify state` on the saved file: valid from genesis through two epoch changes."""
    built, genesis = ledger
    store = built.store
    certified = CertifiedState(store, retention_blocks=100)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_registry_service(
        server,
        certified.current,
        AccessPolicy(lambda: store.view),
        certified.proof_at,
        lambda epoch: build_epoch_chain(store, epoch),
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        proofs_dir = tmp_path / "proofs"
        argv = ["state", "s/work/NONE", "--height", "8", "--proofs", str(proofs_dir)]
        assert query_cli.main(argv, channel=channel) == 0
        capsys.readouterr()
        [file] = sorted(proofs_dir.glob("proof-*.json"))
        document = json.loads(file.read_text())
        assert document["format"] == "kledger-state-proof/v3"
        assert len(document["epoch_chain"]) == 2 and document["header"]["epoch"] == 2
        assert verify.main(["state", str(file), "--genesis", str(genesis)]) == 0
        assert "valid: s/work/NONE is absent at height 8" in capsys.readouterr().out
        document["epoch_chain"] = document["epoch_chain"][:1]
        file.write_text(json.dumps(document))
        assert verify.main(["state", str(file), "--genesis", str(genesis)]) == 1
        assert "header of epoch 2" in capsys.readouterr().err
    finally:
        channel.close()
        server.stop(None)


def test_old_consistency_and_state_formats_are_refused_by_name(ledger, tmp_path, capsys):
    built, genesis = ledger
    consistency = build_consistency_bundle(built.store, 2, 8).to_json()
    consistency["format"] = "kledger-consistency/v1"
    status, line = _proof(tmp_path, genesis, consistency, capsys)
    assert status == 2 and "kledger-consistency/v1 (v1 headers) is no longer read" in line
    state = CertifiedState(built.store, retention_blocks=100)
    found = state.proof_at(8, b"s/org/MISSING")
    document = build_bundle(found.key, found.value, found.proof, found.header, found.certificate)
    document["format"] = "kledger-state-proof/v2"
    (tmp_path / "state.json").write_text(json.dumps(document))
    argv = ["state", str(tmp_path / "state.json"), "--genesis", str(genesis)]
    status, line = _run(tmp_path, argv, capsys)
    assert status == 2 and "kledger-state-proof/v2 (v1 header, no epoch chain)" in line
