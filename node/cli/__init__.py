"""Command-line subcommands owned by the node part (verify, id, node start)."""
