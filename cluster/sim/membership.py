"""The simulator's registry for live reconfiguration: payload kinds and what executing them does.

The live rule (docs/design.md §4.8) in miniature, so the simulator attacks the same two steps
the node runs:
1. Decide: a committed `decide/<proposer>/<n>/<op>/<node>` (op add, remove or rotate), executed
   in epoch e, fixes the next set as NEXT (epoch e+1), waiting for the new key of an added or
   rotated node; `ready/<node>/<epoch>/<mac>`, signed by exactly that new key, clears the wait.
2. Enact: the marker `epoch/<e+1>/<node>.<generation>,...` is a block's whole payload; it ends
   epoch e and executing it moves NEXT to the current set.
Rules kept here:
- Execution is a pure function of the parent's state and the block, so every node that commits
  a block computes the same state (the simulator caches it by block id).
- Guards, at proposal time (`change_problem`) and again at execution: one pending change at a
  time, never fewer than MIN_VALIDATORS, and the change keeps the run inside the fault model
  (Byzantine or dead members at most f of the next set; no change waits on a node that cannot
  answer). A refused decision or ready leaves the state as it was (a FAILED receipt).
- A key is (node, generation); an added or rotated node's generation is the height of the block
  that decided it, so a new key never repeats an old one.
- Every decoder is total: a payload that is not exactly well formed decodes to None.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

MIN_VALIDATORS = 4  # the contract's floor: n >= 4 after any change
MAX_PAYLOAD_BYTES = 160  # marker of up to ~12 members; anything longer is refused
CHANGE_OPS = ("add", "remove", "rotate")

Members = tuple[tuple[str, int], ...]  # (node id, key generation), sorted by id


def faults_tolerated(n: int) -> int:
    return (n - 1) // 3


@dataclass(frozen=True, slots=True)
class Decision:
    """NEXT (`s/validators/next` in the node): the set of `epoch`, and whose new key has not
    announced itself yet."""

    epoch: int
    members: Members
    waiting_for: frozenset[str]
    decided_height: int

    @property
    def ready(self) -> bool:
        return not self.waiting_for


@dataclass(frozen=True, slots=True)
class RegistryState:
    """The executed committed state after a block, as far as membership goes."""

    epoch: int
    members: Members
    next: Decision | None = None

    def generation(self, node: str) -> int | None:
        return dict(self.members).get(node)


@dataclass(frozen=True, slots=True)
class FaultModel:
    """What the simulated governance may decide without leaving the fault model the invariants
    are checked under: `faulty` (Byzantine and dead) stay at most f of every set, and no change
    waits for a node in `unavailable` (dead, or kept down across epochs)."""

    nodes: tuple[str, ...]  # every node of the run, spares included
    faulty: frozenset[str]
    unavailable: frozenset[str]
    protected: frozenset[str]  # never removed (the node kept down across epochs)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: RegistryState
    # "decide" / "ready": the tx executed as FAILED; "forged_marker": a marker that is not the
    # decided set was committed (never with the vote rule in place)
    refused: str | None = None
    change: str | None = None  # "add" / "remove" / "rotate": a marker enacted it


# ---- encodings -----------------------------------------------------------------------------


def encode_decide(proposer: str, counter: int, op: str, node: str) -> bytes:
    return f"decide/{proposer}/{counter}/{op}/{node}".encode()


def decode_decide(payload: bytes) -> tuple[str, str] | None:
    """(op, node) of a decision payload, or None."""
    parts = _parts(payload, b"decide/", 5)
    if parts is None or parts[3] not in CHANGE_OPS or not parts[2].isdigit():
        return None
    return parts[3], parts[4]


def ready_mac(secret: bytes, node: str, epoch: int) -> str:
    return hmac.digest(secret, f"kledger-sim/ready/{node}/{epoch}".encode(), "sha256").hex()


def encode_ready(node: str, epoch: int, mac: str) -> bytes:
    return f"ready/{node}/{epoch}/{mac}".encode()


def decode_ready(payload: bytes) -> tuple[str, int, str] | None:
    parts = _parts(payload, b"ready/", 4)
    if parts is None or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2]), parts[3]


def encode_marker(epoch: int, members: Members) -> bytes:
    listing = ",".join(f"{node}.{generation}" for node, generation in members)
    return f"epoch/{epoch}/{listing}".encode()


def decode_marker(payload: bytes) -> tuple[int, Members] | None:
    """(epoch, members) of an epoch-change marker, or None for anything not exactly one (sorted,
    distinct members, canonical numbers)."""
    parts = _parts(payload, b"epoch/", 3)
    if parts is None or not _canonical_number(parts[1]):
        return None
    members: list[tuple[str, int]] = []
    for item in parts[2].split(","):
        node, dot, generation = item.partition(".")
        if not dot or not node or not _canonical_number(generation):
            return None
        members.append((node, int(generation)))
    ids = [node for node, _ in members]
    if ids != sorted(set(ids)):
        return None
    return int(parts[1]), tuple(members)


def _canonical_number(text: str) -> bool:
    return text.isdigit() and text.isascii() and (text == "0" or not text.startswith("0"))


def _parts(payload: bytes, prefix: bytes, count: int) -> list[str] | None:
    if len(payload) > MAX_PAYLOAD_BYTES or not payload.startswith(prefix):
        return None
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.split("/")
    if len(parts) != count or not all(parts):
        return None
    return parts


def marker_in_flight(state: RegistryState, pending: Sequence[bytes]) -> bool:
    """Does a block in flight (uncommitted, or committed and not yet executed) carry a marker
    that `state` has not executed? Then the block on top belongs to the empty suffix."""
    for payload in pending:
        marker = decode_marker(payload)
        if marker is not None and marker[0] > state.epoch:
            return True
    return False


# ---- guards and execution ------------------------------------------------------------------


def change_problem(state: RegistryState, op: str, node: str, model: FaultModel) -> str | None:
    """Why the decision (op, node) may not be made in `state`, or None."""
    if state.next is not None:
        return f"a validator-set change is pending for epoch {state.next.epoch}"
    if node not in model.nodes:
        return f"unknown node {node}"
    ids = [member for member, _ in state.members]
    if op == "add":
        if node in ids:
            return f"{node} is already a validator"
        after = [*ids, node]
    elif node not in ids:
        return f"{node} is not a validator"
    elif op == "remove":
        if node in model.protected:
            return f"{node} is kept by the test"
        after = [member for member in ids if member != node]
    else:
        after = ids
    if op in ("add", "rotate") and node in model.unavailable:
        return f"{node} cannot announce a new key"
    if len(after) < MIN_VALIDATORS:
        return f"a set needs at least {MIN_VALIDATORS} validators"
    if len([m for m in after if m in model.faulty]) > faults_tolerated(len(after)):
        return "the next set would hold more than f faulty validators"
    return None


def execute(
    state: RegistryState,
    payload: bytes,
    height: int,
    model: FaultModel,
) -> Outcome:
    """The state after a committed block with `payload` at `height` (docs/design.md §4.8)."""
    decide = decode_decide(payload)
    if decide is not None:
        return _execute_decide(state, *decide, height, model)
    ready = decode_ready(payload)
    if ready is not None:
        return _execute_ready(state, *ready)
    marker = decode_marker(payload)
    if marker is not None:
        return _execute_marker(state, *marker)
    return Outcome(state)


def _execute_decide(
    state: RegistryState, op: str, node: str, height: int, model: FaultModel
) -> Outcome:
    if change_problem(state, op, node, model) is not None:
        return Outcome(state, refused="decide")
    members = dict(state.members)
    if op == "remove":
        del members[node]
    else:
        members[node] = height
    waiting = frozenset() if op == "remove" else frozenset({node})
    decision = Decision(state.epoch + 1, tuple(sorted(members.items())), waiting, height)
    return Outcome(RegistryState(state.epoch, state.members, decision))


def _execute_ready(state: RegistryState, node: str, epoch: int, mac: str) -> Outcome:
    """Valid only signed by exactly the new key NEXT names for `node`, which it waits for."""
    decision = state.next
    generation = dict(decision.members).get(node) if decision is not None else None
    if (
        decision is None
        or generation is None
        or node not in decision.waiting_for
        or epoch != decision.epoch
        or not hmac.compare_digest(ready_mac(secret_key(node, generation), node, epoch), mac)
    ):
        return Outcome(state, refused="ready")
    waiting = decision.waiting_for - {node}
    after = Decision(decision.epoch, decision.members, waiting, decision.decided_height)
    return Outcome(RegistryState(state.epoch, state.members, after))


def _execute_marker(state: RegistryState, epoch: int, members: Members) -> Outcome:
    decision = state.next
    if (
        decision is None
        or not decision.ready
        or (epoch, members)
        != (
            decision.epoch,
            decision.members,
        )
    ):
        # The vote rule lets no other marker commit: this is our bug, where the node stops
        # (StoreCorrupt); the simulator reports it as a safety violation.
        return Outcome(state, refused="forged_marker")
    if len(members) > len(state.members):
        change = "add"
    elif len(members) < len(state.members):
        change = "remove"
    else:
        change = "rotate"
    return Outcome(RegistryState(epoch, members), change=change)


@cache
def secret_key(node: str, generation: int) -> bytes:
    """The simulator's per-key secret (generation 0: the genesis key)."""
    suffix = b"" if generation == 0 else f"/{generation}".encode()
    return hashlib.sha256(b"kledger-sim-secret/" + node.encode() + suffix).digest()
