"""Clients of a node: how to reach one (`--cluster` or `--node --ca`), and the tx, proof,
header, query, import and id commands."""
