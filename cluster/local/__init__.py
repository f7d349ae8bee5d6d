"""A cluster on this machine: `kledger cluster init` (keys, CA, genesis, node configs), the
launcher that starts and stops node processes, and the `kledger cluster` command."""
