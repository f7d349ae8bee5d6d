"""The chain's signed data and its one byte form: canonical msgpack, transactions, block
payloads, headers and commit certificates, receipts, the genesis file, Ed25519 keys and tags.
Pure: no store, no network. Everything else in the node builds on it."""
