"""The kledger node: ledger store, Merkle log, registry state machine, gRPC services, driver."""
