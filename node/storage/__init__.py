"""The node's LevelDB store: the key families, the append-only Merkle log, the state tree's
records, blocks, txs with receipts, certificates and safety data; and the proofs read from it."""
