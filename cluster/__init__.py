"""Many nodes at once: cluster generation, the local launcher, the deterministic simulator."""
