"""The receipts root a header certifies (docs/design.md §7.2): an RFC 6962 tree (the tx log's
hashing, node/proof/merkle.py) over one block's receipt encodings, in tx order.

Rules kept here:
- The leaves are `Receipt.encode()` bytes, exactly as the store keeps them; a block without txs
  has the empty tree's root, SHA-256(b"").
- A receipt's place in its block's tree is its offset in the block: leaf_index minus the log
  size before the block (header.tx_log_size - txs in the block).
"""

from __future__ import annotations

from collections.abc import Sequence

from kledger.node.chain.receipt import Receipt
from kledger.node.proof import merkle


def receipts_tree(receipts: Sequence[Receipt]) -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for receipt in receipts:
        tree.append(receipt.encode())
    return tree


def receipts_root(receipts: Sequence[Receipt]) -> bytes:
    """The header's receipts_root for a block whose txs got these receipts, in order."""
    return receipts_tree(receipts).root()


def receipt_path(receipts: Sequence[Receipt], offset: int) -> list[bytes]:
    """The audit path of the receipt at `offset` in its block's receipts tree."""
    assert 0 <= offset < len(receipts), f"receipt offset {offset} of {len(receipts)}"
    return receipts_tree(receipts).inclusion_path(offset)
