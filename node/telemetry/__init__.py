"""What an operator reads: Prometheus metrics and JSON-lines logs."""
