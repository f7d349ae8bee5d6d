"""The validator set of an epoch and its quorum arithmetic (docs/design.md §1).

    f = floor((n - 1) / 3)         faults tolerated
    q = ceil((n + f + 1) / 2)      quorum: any two quorums share at least one honest validator

n=4 -> q=3, n=6 -> q=4, n=7 -> q=5. Never 2f+1: with n > 3f+1 two 2f+1-sets may share only
Byzantine validators.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NewType

NodeId = NewType("NodeId", str)


def faults_tolerated(n: int) -> int:
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    f = faults_tolerated(n)
    return (n + f + 2) // 2  # == ceil((n + f + 1) / 2)


@dataclass(frozen=True, slots=True)
class Validator:
    node_id: NodeId
    public_key: bytes


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """Validators sorted by id; the order is the leader rotation order."""

    epoch: int
    validators: tuple[Validator, ...]
    _keys: dict[NodeId, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = [v.node_id for v in self.validators]
        if not ids:
            raise ValueError("a validator set needs at least one validator")
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise ValueError("validators must be sorted by id and distinct")
        if len({v.public_key for v in self.validators}) != len(ids):
            raise ValueError("validator public keys must be distinct")
        object.__setattr__(self, "_keys", {v.node_id: v.public_key for v in self.validators})

    @staticmethod
    def of(epoch: int, members: Iterable[tuple[str, bytes]]) -> ValidatorSet:
        ordered = sorted(members)
        return ValidatorSet(epoch, tuple(Validator(NodeId(i), k) for i, k in ordered))

    @property
    def size(self) -> int:
        return len(self.validators)

    @property
    def quorum(self) -> int:
        return quorum_size(self.size)

    @property
    def max_faulty(self) -> int:
        return faults_tolerated(self.size)

    @property
    def ids(self) -> tuple[NodeId, ...]:
        return tuple(v.node_id for v in self.validators)

    def public_key(self, node_id: str) -> bytes | None:
        return self._keys.get(NodeId(node_id))

    def contains(self, node_id: str) -> bool:
        return NodeId(node_id) in self._keys

    def digest(self) -> bytes:
        """SHA-256 over a length-prefixed listing of (epoch, id, key): the header's
        `validator_set_hash`. Stdlib only, so the consensus core and the node agree on it."""
        hasher = hashlib.sha256(b"kledger/validator-set/v1\x00")
        hasher.update(self.epoch.to_bytes(8, "big"))
        for validator in self.validators:
            raw_id = validator.node_id.encode("utf-8")
            hasher.update(len(raw_id).to_bytes(2, "big") + raw_id + validator.public_key)
        return hasher.digest()
