"""Between nodes: the mutual-TLS peer transport, TLS material, tx gossip and block sync."""
