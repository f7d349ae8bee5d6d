"""The node's side of live epochs (docs/design.md §4.8), on a real store: the committer executes
a marker block as the epoch change and hashes each header with its own epoch's set; EpochSets
answers each epoch's set, the height of an epoch's last block and its ending certificate; a
restart after a marker starts the next epoch; block sync stops at an epoch's marker; the
certifier checks each height's signatures with that height's set; the identity check at start
accepts a rotated key, a joining node with a new store, and refuses an unknown org by name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kledger.consensus import Block, Height, NodeId, QuorumCert, Round, genesis_block
from kledger.consensus.types import BlockId, BlockInfo, VoteData
from kledger.consensus.validators import ValidatorSet
from kledger.node.app import NodeIdentity, check_identity, known_validator_keys
from kledger.node.chain.header import CommitCertificate, commit_sign_bytes
from kledger.node.chain.keys import COMMIT_TAG, save_key
from kledger.node.chain.payload import encode_epoch_change, encode_payload
from kledger.node.chain.tx import TxBody, sign_tx
from kledger.node.commit.certifier import Certifier, HeaderSignature
from kledger.node.commit.committer import Committer
from kledger.node.commit.pipeline import CommitPipeline
from kledger.node.config import parse_config
from kledger.node.net.block_sync import BlockSync
from kledger.node.net.peer_transport import SyncedBlockData
from kledger.node.ordering.epochs import EpochSets
from kledger.node.ordering.restore import restored_state
from kledger.node.registry import Registry
from kledger.node.storage.store import LedgerStore
from tests.helpers import key, make_genesis

GENESIS = make_genesis()
SIX = GENESIS.validator_set
FIVE = ValidatorSet.of(
    1, [(v.node_id, v.public_key) for v in SIX.validators if v.node_id != "KEPA"]
)


class Chain:
    """Consensus blocks committed through the real committer into a real store."""

    def __init__(self, path: Path) -> None:
        self.registry = Registry(GENESIS)
        self.store = LedgerStore.open(
            path, GENESIS, self.registry.genesis_writes(), self.registry.genesis_state_root()
        )
        self.committer = Committer(self.store, self.registry, GENESIS)
        root, self.root_qc = genesis_block(GENESIS.chain_id, SIX, GENESIS.genesis_time_ms)
        self.blocks = [root]
        self.nonce = 0

    def tx(self, signer: str, tx_type: str, payload: dict[str, Any]) -> Any:
        self.nonce += 1
        return sign_tx(key(signer), TxBody(GENESIS.chain_id, tx_type, self.nonce, payload))

    def block(self, epoch: int, payload: bytes, qc_commits_height_above: int = 0) -> Block:
        parent = self.blocks[-1]
        block = Block(
            chain_id=GENESIS.chain_id,
            epoch=epoch,
            round=Round(len(self.blocks)),
            height=Height(parent.height + 1),
            parent_id=parent.id,
            proposer=NodeId("KOMCA"),
            timestamp_ms=GENESIS.genesis_time_ms + 1000 * len(self.blocks),
            payload=payload,
            qc=self.root_qc,
        )
        info = block.info
        if qc_commits_height_above:  # a QC whose commit names a block of the empty suffix
            info = BlockInfo(BlockId(block.id[::-1]), Round(99), Height(block.height + 1))
        qc = QuorumCert(VoteData(epoch, info, info, info), ())
        outcome = self.committer.apply_block(block, qc.encode())
        assert outcome is not None
        self.blocks.append(block)
        return block

    def remove_kepa(self) -> None:
        propose = {"proposal_id": "R", "action": {"kind": "remove_org", "org_id": "KEPA"}}
        txs = [self.tx("KOMCA/client", "ProposeGovernance", propose)]
        txs += [
            self.tx(org, "ApproveGovernance", {"proposal_id": "R"})
            for org in ("RIAK/client", "FKMP/client", "KMCA/admin")
        ]
        self.block(0, encode_payload(txs))


@pytest.fixture
def chain(tmp_path: Path):  # type: ignore[no-untyped-def]
    made = Chain(tmp_path / "store")
    yield made
    made.store.close()


def test_the_marker_block_ends_the_epoch_and_headers_carry_their_epochs_set(chain: Chain) -> None:
    epochs = EpochSets(chain.store, chain.registry)
    chain.remove_kepa()
    assert chain.registry.ready_next_set(chain.store.view) == FIVE
    marker = chain.block(0, encode_epoch_change(FIVE))
    epochs.entered(FIVE)
    after = chain.block(1, encode_payload([chain.tx("KOMCA/client", "RegisterParty", {"x": 1})]))
    headers = [chain.store.header(h) for h in (1, 2, 3)]
    assert [h.epoch for h in headers if h] == [0, 0, 1]
    # The marker block's header belongs to the old epoch: the old set certifies it.
    assert [h.validator_set_hash for h in headers if h] == [
        SIX.digest(),
        SIX.digest(),
        FIVE.digest(),
    ]
    assert chain.store.header(2).tx_log_size == chain.store.header(1).tx_log_size  # type: ignore[union-attr]
    assert epochs.set_of(0) == SIX and epochs.set_of(1) == FIVE and epochs.set_of(2) is None
    assert epochs.current == FIVE and epochs.pending_record() is None
    assert epochs.ending_height(0) == marker.height and epochs.ending_height(1) is None
    ending = epochs.ending_qc(0)
    assert ending is not None and ending.commit is not None and ending.commit.id == marker.id
    assert after.epoch == 1


@pytest.mark.parametrize("suffix_qc", [False, True])
def test_a_restart_after_the_marker_starts_the_next_epoch(chain: Chain, suffix_qc: bool) -> None:
    chain.remove_kepa()
    marker = chain.block(0, encode_epoch_change(FIVE), qc_commits_height_above=int(suffix_qc))
    epochs = EpochSets(chain.store, chain.registry)
    restored, validators = restored_state(chain.store, GENESIS, epochs.set_of, 4)
    assert restored.root.id == marker.id and validators == FIVE
    assert epochs.current == FIVE  # read from the executed state at start


def test_joining_orgs_and_the_next_set_while_a_change_is_pending(chain: Chain) -> None:
    new = key("MCST/validator")
    from kledger.node.registry.governance import sign_pop

    action = {
        "kind": "add_org", "org_id": "MCST", "name": "M", "roles": ["AUDITOR"],
        "admin_key": key("MCST/admin").public_key.hex(), "validator_key": new.public_key.hex(),
        "validator_pop": sign_pop(new, GENESIS.chain_id, "MCST").hex(),
        "peer_address": "127.0.0.1:7010", "tls_cert_sha256": "cd" * 32,
    }  # fmt: skip
    txs = [chain.tx("KOMCA/client", "ProposeGovernance", {"proposal_id": "A", "action": action})]
    txs += [
        chain.tx(org, "ApproveGovernance", {"proposal_id": "A"})
        for org in ("RIAK/client", "FKMP/client", "KMCA/admin")
    ]
    chain.block(0, encode_payload(txs))
    epochs = EpochSets(chain.store, chain.registry)
    assert epochs.joining_orgs() == {"MCST"} and epochs.ready_next_set() is None
    known = known_validator_keys(chain.registry, chain.store)
    assert known["MCST"] == {new.public_key}
    chain.block(0, encode_payload([chain.tx("MCST/validator", "ValidatorReady", {"org": "MCST"})]))
    ready = epochs.ready_next_set()
    assert ready is not None and ready.size == 7


@pytest.mark.parametrize(
    ("suffix_qc", "honest_marker"), [(False, True), (True, True), (True, False)]
)
def test_block_sync_stops_at_an_epoch_marker(
    chain: Chain, tmp_path: Path, suffix_qc: bool, honest_marker: bool
) -> None:
    """A marker is applied with a QC committing exactly it, or one of its epoch committing a
    block of its empty suffix, and only when it names the ready next set of the follower's
    executed state; nothing past it is applied."""
    chain.remove_kepa()
    marker = chain.block(0, encode_epoch_change(FIVE), qc_commits_height_above=int(suffix_qc))
    chain.block(1, encode_payload([chain.tx("KOMCA/client", "RegisterParty", {"x": 1})]))
    follower = Chain(tmp_path / "follower")
    applied: list[int] = []

    async def fetch(peer: str, first: int, last: int) -> AsyncIterator[SyncedBlockData]:
        for height in range(first, last + 1):
            record = chain.store.block(height)
            assert record is not None
            yield SyncedBlockData(
                height, record.consensus_block, record.commit_qc, record.header.encode(), b""
            )

    def ready() -> ValidatorSet | None:
        found = follower.registry.ready_next_set(follower.store.view)
        return found if honest_marker else SIX

    async def run() -> Any:
        pipeline = CommitPipeline(follower.committer)
        sync = BlockSync(
            store=follower.store,
            pipeline=pipeline,
            fetch=fetch,
            verify_qc=lambda qc: True,
            on_applied=lambda committed, _cert: applied.append(committed.header.height),
            genesis_id=chain.blocks[0].id,
            ready_marker=ready,
        )
        runner = asyncio.create_task(pipeline.run(lambda _c: None, lambda: None))
        target = QuorumCert.decode(chain.store.block(3).commit_qc)  # type: ignore[union-attr]
        try:
            return await sync.sync(NodeId("KOMCA"), target)
        finally:
            await pipeline.close()
            runner.cancel()

    try:
        result = asyncio.run(run())
        if honest_marker:
            assert result is not None and result[0].id == marker.id  # the run ends at it
            assert applied == [1, 2] and follower.store.last_height() == 2
        else:
            assert applied == [1] and follower.store.last_height() == 1  # refused the marker
    finally:
        follower.store.close()


def _signature(signer: str, header_hash: bytes, height: int, label: str = "") -> HeaderSignature:
    signing = key(label or f"{signer}/validator")
    return HeaderSignature(
        height, header_hash, signer, signing.sign(COMMIT_TAG, commit_sign_bytes(header_hash))
    )


def test_the_certifier_checks_each_height_with_its_epochs_set() -> None:
    rotated = ValidatorSet.of(
        1,
        [
            (v.node_id, key("KEPA/new").public_key if v.node_id == "KEPA" else v.public_key)
            for v in SIX.validators
        ],
    )
    saved: dict[int, CommitCertificate] = {}
    certifier = Certifier(SIX, saved.__setitem__)
    certifier.follow(SIX, rotated)
    header_hash = b"h" * 32
    # Early: held unchecked, then checked with the height's set when it executes.
    certifier.add(_signature("KEPA", header_hash, 1, "KEPA/new"))
    for org in ("KOMCA", "RIAK"):
        certifier.add(_signature(org, header_hash, 1))
    assert certifier.executed(1, header_hash, rotated) is None
    assert certifier.add(_signature("FKMP", header_hash, 1)) is not None
    assert {s for s, _ in saved[1].signatures} == {"KEPA", "KOMCA", "RIAK", "FKMP"}
    # The old key's signature for a height of the new epoch does not verify.
    certifier.executed(2, header_hash, rotated)
    assert certifier.add(_signature("KEPA", header_hash, 2)) is None
    assert certifier.dropped.get("bad_signature") == 1
    certifier.follow(FIVE, None)
    assert certifier.add(_signature("KEPA", header_hash, 3, "KEPA/new")) is None
    assert certifier.dropped.get("not_a_validator") == 1


def _config(tmp_path: Path, **extra: Any) -> Any:
    save_key(tmp_path / "validator.key", key("MCST/validator"))
    save_key(tmp_path / "next.key", key("MCST/next"))
    raw = {"org": "MCST", "peers": {}, **extra}
    return parse_config(json.loads(json.dumps(raw)), tmp_path)


def test_the_identity_check_knows_joiners_and_rotated_keys(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(ValueError, match="org: 'MCST' is not an org of the genesis"):
        check_identity(config, GENESIS, {}, fresh_store=True)
    joining = _config(tmp_path, joining=True)
    assert joining.joining and check_identity(joining, GENESIS, {}, fresh_store=True).org == "MCST"
    with pytest.raises(ValueError, match="org:"):
        check_identity(joining, GENESIS, {}, fresh_store=False)  # joined: the store must know it
    rotated = _config(tmp_path, next_validator_key="next.key")
    identity = check_identity(
        rotated, GENESIS, {"MCST": {key("MCST/next").public_key}}, fresh_store=False
    )
    later = ValidatorSet.of(3, [("MCST", key("MCST/next").public_key), ("X", b"x" * 32)])
    assert identity.key_for(later) == key("MCST/next")
    with pytest.raises(ValueError, match="validator_key:"):
        check_identity(config, GENESIS, {"MCST": {b"z" * 32}}, fresh_store=False)
    with pytest.raises(ValueError, match="joining: must be true or false"):
        _config(tmp_path, joining="yes")
    assert NodeIdentity("MCST", key("MCST/validator")).key_for(later) is None
