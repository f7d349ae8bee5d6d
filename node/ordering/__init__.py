"""Ordering transactions: the mempool, the payload source the consensus core proposes from
and checks proposals with, and the asyncio driver that runs the core's effects."""
