"""The safety record (node/storage/safety_record.py) and the core's floor (consensus
SafetyFloor): the file's format and its refusal when damaged, that it only rises, that a node
finds its store behind it at start, and, on real LevelDB files, that a write-ahead log cut at
every byte of a vote's and a block's writes never lets the restarted core sign a second vote
for a round it voted in (without the record, the same cuts do: the control)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from kledger.consensus import (
    Core,
    Deliver,
    Persist,
    RestoredState,
    SafetyData,
    SafetyFloor,
    Send,
    Vote,
)
from kledger.consensus.types import Height, Round
from kledger.consensus.validators import NodeId
from kledger.node.errors import StoreCorrupt
from kledger.node.ordering.restore import load_floor
from kledger.node.storage.safety_record import (
    RECORD_BYTES,
    SafetyRecord,
    decode_record,
    encode_record,
)
from kledger.node.storage.store_parts import STATE_PART
from tests.ledger_builders import commit, make_tx, open_store
from tests.test_consensus_rules import (
    CHAIN,
    CONFIG,
    GENESIS,
    GENESIS_QC,
    KEYS,
    NOW,
    VALIDATORS,
    Payloads,
    block_on,
    propose,
    qc_on,
)

ME = NodeId("n0")  # leads neither round 1 (n1) nor 2 (n2), nor collects their votes


def test_record_round_trips_and_refuses_damage(tmp_path):
    floor = SafetyFloor(3, Round(41), Round(40), Height(1234))
    data = encode_record(floor)
    assert len(data) == RECORD_BYTES and decode_record(data) == floor
    for index in range(len(data)):
        damaged = bytearray(data)
        damaged[index] ^= 0x01
        assert decode_record(bytes(damaged)) is None
    assert decode_record(data[:-1]) is None
    record = SafetyRecord(tmp_path / "safety.bin")
    assert record.load() is None  # a new node
    record.save(floor)
    assert SafetyRecord(tmp_path / "safety.bin").load() == floor
    assert not (tmp_path / "safety.bin.tmp").exists()
    (tmp_path / "safety.bin").write_bytes(data[:30])
    with pytest.raises(StoreCorrupt, match="safety record damaged"):
        SafetyRecord(tmp_path / "safety.bin").load()


def test_record_only_rises(tmp_path):
    record = SafetyRecord(tmp_path / "safety.bin")

    def safety(epoch: int, vote_round: int, qc_round: int) -> SafetyData:
        return SafetyData(epoch, Round(vote_round), Round(qc_round), None, None, None)

    assert record.raise_to(safety(1, 5, 4), 10)
    assert not record.raise_to(safety(1, 5, 4), 10)  # nothing rose: no write
    assert not record.raise_to(safety(1, 3, 2), 8)  # lower (a rolled-back store): kept
    assert record.floor == SafetyFloor(1, Round(5), Round(4), Height(10))
    assert record.raise_to(safety(1, 6, 5), 9)
    assert record.floor == SafetyFloor(1, Round(6), Round(5), Height(10))
    assert record.raise_to(safety(2, 1, 0), 11)  # a new epoch starts its rounds again
    assert record.floor == SafetyFloor(2, Round(1), Round(0), Height(11))
    assert not record.raise_to(safety(1, 99, 98), 11)  # an older epoch never lowers it
    assert SafetyRecord(tmp_path / "safety.bin").load() == record.floor
    assert record.writes == 3


def test_start_says_when_the_store_is_behind_its_record(tmp_path, caplog):
    store = open_store(tmp_path / "data")
    record = SafetyRecord(tmp_path / "safety.bin")
    assert load_floor(store, record) == SafetyFloor(0, Round(0), Round(0), Height(0))
    assert (tmp_path / "safety.bin").exists()  # a new node has a record before it votes
    record.save(SafetyFloor(1, Round(9), Round(8), Height(5)))
    with caplog.at_level(logging.WARNING):
        floor = load_floor(store, SafetyRecord(tmp_path / "safety.bin"))
    assert floor.committed_height == 5
    assert "store_behind_safety_record" in caplog.text
    store.close()


def _core(safety: SafetyData | None, floor: SafetyFloor | None) -> Core:
    core = Core(
        CONFIG, CHAIN, ME, VALIDATORS, KEYS.signer(ME), KEYS.verify, Payloads(),
        RestoredState(safety, GENESIS, GENESIS_QC, floor=floor),
    )  # fmt: skip
    core.start(NOW)
    return core


def _votes(effects: Sequence[object]) -> list[Vote]:
    return [e.message for e in effects if isinstance(e, Send) and isinstance(e.message, Vote)]


def _persist_like_the_node(store, record, effects) -> None:
    """What node/app.py does with the core's Persist: the store's synced batch, then the
    record raised (both before the vote is sent)."""
    for effect in effects:
        if isinstance(effect, Persist):
            store.save_consensus(effect.safety.encode(), [])
            record.raise_to(effect.safety, store.last_height())


def _cut_everywhere(tmp_path: Path, stride: int) -> None:
    """Vote in round 1, commit a block, vote in round 2 (each write synced, as a node does);
    then cut the write-ahead log at every byte of those writes. Whatever the cut, the store
    opens clean, and a core restored from it with the safety record signs no vote for rounds
    1 and 2 again, not even for other blocks (an equivocating leader's), and follows without
    voting while the store is behind. Without the record, some cut makes it sign a second,
    different vote: the test has teeth."""
    data, record_path = tmp_path / "data", tmp_path / "safety.bin"
    store = open_store(data)
    record = SafetyRecord(record_path)
    load_floor(store, record)
    commit(store, [make_tx(1)])
    (log,) = (data / STATE_PART).glob("*.log")  # state/: safety data and the commit point
    start = log.stat().st_size
    core = _core(None, record.floor)
    first = block_on(GENESIS_QC, GENESIS, 1)
    effects = core.step(Deliver(NodeId("n1"), propose(first), NOW + 1))
    _persist_like_the_node(store, record, effects)
    assert len(_votes(effects)) == 1
    commit(store, [make_tx(2)])
    second = block_on(qc_on(first), first, 2)
    effects = core.step(Deliver(NodeId("n2"), propose(second), NOW + 2))
    _persist_like_the_node(store, record, effects)
    signed = {1: first.id, 2: second.id}
    assert len(_votes(effects)) == 1 and record.floor is not None
    assert record.floor.highest_vote_round == 2 and record.floor.committed_height == 2
    end = log.stat().st_size
    store.close()

    # Other blocks for the same rounds, as an equivocating leader would send them.
    other_first = block_on(GENESIS_QC, GENESIS, 1, payload=b"other")
    other_second = block_on(qc_on(other_first), other_first, 2, payload=b"other")
    double_votes_without_record = 0
    cuts = sorted(set(range(start, end + 1, stride)) | set(range(max(start, end - 8), end + 1)))
    for cut in cuts:
        work = tmp_path / "cut"
        shutil.copytree(data, work)
        with open(work / STATE_PART / log.name, "r+b") as file:
            file.truncate(cut)
        shutil.copy(record_path, tmp_path / "cut.safety")
        reopened = open_store(work)
        raw = reopened.load_safety()
        safety = SafetyData.decode(raw) if raw is not None else None
        floor = load_floor(reopened, SafetyRecord(tmp_path / "cut.safety"))
        assert floor == record.floor  # the record is what the cut cannot roll back
        # The record as the node uses it; its rounds alone (as if the store were caught up,
        # so the core does not just follow); no record at all (the control).
        rounds_only = SafetyFloor(
            floor.epoch, floor.highest_vote_round, floor.highest_qc_round, Height(0)
        )
        for mode, given in (("record", floor), ("rounds", rounds_only), ("none", None)):
            restarted = _core(safety, given)
            # Its root is the genesis block (height 0), below the record's height 2: with the
            # whole record it only follows.
            assert restarted.following == (mode == "record")
            votes: list[Vote] = []
            for sender, block in (("n1", other_first), ("n2", other_second)):
                votes += _votes(restarted.step(Deliver(NodeId(sender), propose(block), NOW + 5)))
            twice = [v for v in votes if signed.get(v.round) not in (None, v.data.certified.id)]
            if given is not None:
                assert not twice, f"{mode}, cut at byte {cut}: a 2nd vote in round {twice[0].round}"
            else:
                double_votes_without_record += len(twice)
        reopened.close()
        shutil.rmtree(work)
    assert double_votes_without_record > 0


def test_no_double_vote_after_the_log_is_cut_at_any_point(tmp_path):
    _cut_everywhere(tmp_path, stride=5)


@pytest.mark.slow
def test_no_double_vote_after_the_log_is_cut_at_every_byte(tmp_path):
    _cut_everywhere(tmp_path, stride=1)
