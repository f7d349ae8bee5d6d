"""The proposal payload source never re-proposes (or accepts) the txs of a block the consensus
core has just committed but the store has not applied yet (same step: commit, then propose)."""

from __future__ import annotations

from node.mempool import Mempool
from node.payload import encode_payload
from node.proposals import MempoolPayloads
from node.tx import SignedTx, TxBody, sign_tx
from tests.helpers import key, make_genesis


def _txs(count: int, chain_id: str) -> list[SignedTx]:
    signer = key("KOMCA/client")
    return [
        sign_tx(signer, TxBody(chain_id, "RegisterParty", n, {"party_id": f"KOMCA-P{n}"}))
        for n in range(count)
    ]


def _source(deciding: list[bytes]) -> tuple[MempoolPayloads, list[SignedTx]]:
    genesis = make_genesis()
    mempool = Mempool()
    txs = _txs(6, genesis.chain_id)
    for tx in txs:
        mempool.admit(tx.encoding, genesis.chain_id)
    source = MempoolPayloads(mempool, genesis, lambda _h: False, 100, deciding=lambda: deciding)
    return source, txs


def test_txs_of_a_block_being_committed_are_not_proposed_again() -> None:
    deciding: list[bytes] = []
    source, txs = _source(deciding)
    assert source.next_payload([]) == encode_payload(txs)  # nothing deciding: all six
    deciding.append(encode_payload(txs[:4]))
    assert source.next_payload([]) == encode_payload(txs[4:])


def test_a_proposal_repeating_a_deciding_block_is_refused() -> None:
    deciding: list[bytes] = []
    source, txs = _source(deciding)
    repeat = encode_payload(txs[3:])
    assert source.is_valid_payload(repeat, [])
    deciding.append(encode_payload(txs[:4]))
    assert not source.is_valid_payload(repeat, [])
    assert source.is_valid_payload(encode_payload(txs[4:]), [])
