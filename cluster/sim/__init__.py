"""The seeded consensus simulator: n cores of kledger.consensus in one process under faults and
Byzantine behaviour, and `kledger sim`."""
