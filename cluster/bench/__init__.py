"""Benchmarks: the cluster benchmark (`kledger bench`), its clients, workload, probes, proofs,
preload and report, the in-process pipeline benchmark and the Merkle log benchmark."""
