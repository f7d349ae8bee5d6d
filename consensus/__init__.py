"""The BFT protocol (2-chain HotStuff / Jolteon / DiemBFT v4) as a deterministic, I/O-free core."""
