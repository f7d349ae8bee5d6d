"""Leader election: round-robin, optionally skipping leaders that recently failed (reputation).

Rules kept here:
- Pure and deterministic: the leader of a round is a function of the sorted validator ids, the
  quorum size, the round and a record of COMMITTED blocks only (no clock, no randomness, no
  uncommitted data), so honest nodes that agree on the committed chain agree on every leader.
- A committed block at round k whose parent is at round j < k - 1 proves that rounds j+1..k-1
  produced no block on the committed chain. The rule blames only the round-robin leader of
  round k - 1: in 2-chain HotStuff the block of round x is certified by the leader of x + 1
  (votes go to the next leader), so one crashed leader at round x also orphans the block of
  x - 1 and leaves the gap {x - 1, x}; blaming every gap round would also exclude the innocent
  leader of x - 1, and with n = 4 that leaves fewer than a quorum of candidates. The leader of
  k - 1 is the one whose failure the gap proves: the leader of k was alive and collected no
  QC(k - 1). Two failed leaders in a row are found one after the other. The blamed leader is
  the plain round-robin one (never the outcome of this rule), so the blame needs no history
  older than the window.
- Only blocks at round <= r - REPUTATION_LAG_ROUNDS count for round r, and only gap rounds in
  the `window` rounds before that: by the time a replica checks a proposal of round r or sends
  a vote to the leader of r + 1 in a run of successful rounds, it has committed every block of
  round <= r - 3 (the proposal of r - 1 carried QC(r - 2), which commits round r - 3), so the
  lag keeps the common case free of disagreement.
- Leader of round r: the round-robin leader ids[r mod n] unless it failed in the window; then
  the (r mod m)-th of the m validators that did not fail. If fewer than a quorum did not fail
  the rule falls back to plain round-robin (a window full of failures is a network problem,
  not a few crashed leaders, and shrinking the rotation would only concentrate the load).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kledger.consensus.validators import NodeId

# Blocks committed at rounds within this many rounds of the current round are ignored (see the
# module docstring for why 3 would do in the steady state; one more absorbs a late proposal).
REPUTATION_LAG_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class CommittedRound:
    """What the rule needs of one committed block: its epoch, its round and its parent's round
    (the round of the QC it carries)."""

    epoch: int
    round: int
    parent_round: int


def round_robin_leader(ids: Sequence[NodeId], round: int) -> NodeId:
    return ids[round % len(ids)]


def failed_leaders(
    ids: Sequence[NodeId],
    history: Iterable[CommittedRound],
    epoch: int,
    round: int,
    window_rounds: int,
) -> frozenset[NodeId]:
    """Round-robin leaders of the last gap round before each committed block of `epoch` at a
    round in (round - lag - window, round - lag] (see the module docstring)."""
    newest = round - REPUTATION_LAG_ROUNDS
    oldest = newest - window_rounds
    failed: set[NodeId] = set()
    for entry in history:
        if entry.epoch != epoch or entry.round > newest or entry.round <= oldest:
            continue
        if entry.parent_round < entry.round - 1:
            failed.add(round_robin_leader(ids, entry.round - 1))
    return frozenset(failed)


def choose_leader(
    ids: Sequence[NodeId],
    quorum: int,
    history: Iterable[CommittedRound],
    *,
    epoch: int,
    round: int,
    window_rounds: int,
) -> NodeId:
    """The leader of `round`; `window_rounds == 0` is plain round-robin."""
    leader = round_robin_leader(ids, round)
    if window_rounds == 0:
        return leader
    failed = failed_leaders(ids, history, epoch, round, window_rounds)
    if leader not in failed:
        return leader
    candidates = [node for node in ids if node not in failed]
    if len(candidates) < quorum:
        return leader
    return candidates[round % len(candidates)]


__all__ = [
    "REPUTATION_LAG_ROUNDS",
    "CommittedRound",
    "choose_leader",
    "failed_leaders",
    "round_robin_leader",
]
