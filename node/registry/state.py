"""The registry's state families under keyspace.STATE and the per-transaction write buffer.

Every value is canonical msgpack (node/chain/canonical.py). Keys are `s/<family>/<part>/...`;
parts are canonical identifiers or id tokens, which never contain "/", so families cannot collide.

A transaction reads through `TxState`: the committed store, then the writes of earlier
transactions of the same block, then its own writes. Its own writes join the block only when
every rule passed, so a refused transaction changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kledger.node.chain import canonical
from kledger.node.storage import keyspace
from kledger.node.storage.keyspace import OverlayView, ReadView, WriteSet

S = keyspace.STATE


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What the block header gives execution. Time comes ONLY from here."""

    chain_id: str
    epoch: int
    height: int
    timestamp_ms: int


def _key(*parts: str) -> bytes:
    for part in parts:
        assert "/" not in part and part, f"bad key part {part!r}"
    return S + "/".join(parts).encode()


def org_key(org: str) -> bytes:
    return _key("org", org)


def member_key(public_key: bytes) -> bytes:
    return _key("member", public_key.hex())


VALIDATORS_KEY = S + b"validators"
# The set a governance decision chose for the next epoch, until its marker block executes
# (docs/design.md §4.8); and every epoch's set, genesis included, by 8-byte big-endian epoch.
NEXT_VALIDATORS_KEY = S + b"validators/next"


def epoch_validators_key(epoch: int) -> bytes:
    assert 0 <= epoch < 1 << 64, f"bad epoch {epoch}"
    return S + b"validators/" + epoch.to_bytes(8, "big")


def party_key(party_id: str) -> bytes:
    return _key("party", party_id)


def ipi_key(ipi: str) -> bytes:
    return _key("ipi", ipi)


def work_key(work_id: str) -> bytes:
    return _key("work", work_id)


def recording_key(isrc: str) -> bytes:
    return _key("recording", isrc)


def code_key(kind: str, value: str) -> bytes:
    """Index: iswc/isrc/uci/cid -> the work or recording that registered it."""
    return _key("code", kind, value)


def link_key(link_id: str) -> bytes:
    return _key("link", link_id)


def links_of_key(kind: str, value: str) -> bytes:
    return _key("links", kind, value)


def shares_key(kind: str, subject_id: str, right: str) -> bytes:
    return _key("shares", kind, subject_id, right)


def dispute_key(dispute_id: str) -> bytes:
    return _key("dispute", dispute_id)


def disputes_of_key(kind: str, subject_id: str) -> bytes:
    return _key("disputes-of", kind, subject_id)


def report_key(report_id: str) -> bytes:
    return _key("report", report_id)


def usage_prefix(period: str, territory: str) -> bytes:
    return _key("usage", period, territory) + b"/"


def usage_key(period: str, territory: str, report_id: str, line_id: str) -> bytes:
    return _key("usage", period, territory, report_id, line_id)


def tariff_key(version: int) -> bytes:
    return _key("tariff", f"{version:08d}")


TARIFF_PREFIX = S + b"tariff/"
DISPUTE_PREFIX = S + b"dispute/"


def distribution_key(distribution_id: str) -> bytes:
    return _key("distribution", distribution_id)


def distribution_scope_key(period: str, territory: str, currency: str) -> bytes:
    return _key("distribution-scope", period, territory, currency)


def statement_key(party_id: str, period: str) -> bytes:
    return _key("statement", party_id, period)


def ai_policy_key(kind: str, subject_id: str) -> bytes:
    return _key("ai", kind, subject_id)


def persona_consent_key(party_id: str) -> bytes:
    return _key("persona-consent", party_id)


def persona_claim_key(claim_id: str) -> bytes:
    return _key("persona-claim", claim_id)


def persona_of_key(kind: str, subject_id: str) -> bytes:
    return _key("persona-of", kind, subject_id)


def proposal_key(proposal_id: str) -> bytes:
    return _key("proposal", proposal_id)


class StateReader:
    """Decoded reads over a view of this node's own registry state (execution, queries,
    distribution re-runs). Its values were written by canonical.encode, so they are decoded
    without re-proving their canonical form (canonical.decode_stored)."""

    def __init__(self, view: ReadView) -> None:
        self.view = view

    def get(self, key: bytes) -> Any:
        raw = self.get_raw(key)
        return None if raw is None else canonical.decode_stored(raw)

    def get_raw(self, key: bytes) -> bytes | None:
        """The stored bytes of a key (for callers that cache what they decode from them)."""
        return self.view.get(key)

    def has(self, key: bytes) -> bool:
        """Whether the key holds a value: `get(key) is not None` without decoding the value."""
        return self.get_raw(key) is not None

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, Any]]:
        for key, raw in self.view.iterate(prefix):
            yield key, canonical.decode_stored(raw)


class TxState(StateReader):
    """One transaction's view: reads see the block so far, writes stay here until it passes."""

    def __init__(self, base: ReadView, block_writes: WriteSet) -> None:
        self.writes: WriteSet = {}
        self._block = OverlayView(base, block_writes)
        super().__init__(OverlayView(self._block, self.writes))

    def put(self, key: bytes, value: Any) -> None:
        assert key.startswith(S)
        self.writes[key] = canonical.encode(value)

    def delete(self, key: bytes) -> None:
        assert key.startswith(S)
        self.writes[key] = None
