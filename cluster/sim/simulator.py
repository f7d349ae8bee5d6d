"""The deterministic simulator: n consensus cores in one process on a seeded network and clock.

The simulator is the second driver of consensus.Core (the asyncio/gRPC node is the first). It
owns ONE seeded random.Random and a virtual clock, so a seed replays a run exactly. It holds each
node's "disk" (persisted SafetyData, committed blocks and their commit QC, the validator set)
across crash and restart; everything else of a crashed node is lost.

Faults (while the fault phase lasts): message drop, long delays, reorder (jitter), duplication,
partitions that form and heal, crash and restart, clock skew, and rollback: a crash whose disk
comes back as it was some Persists earlier (a lost log tail), safety data and committed chain
both, while the node's safety record (docs/design.md §6) survives it unless the test-only
`safety_record=False` leaves it out, which lets the rolled-back node vote twice. Byzantine
validators (at most f keys): Twins (two honest cores sharing one key, put on different sides of
partitions), an equivocating leader, double voting, forged and reused signatures, replayed old
messages, and a "fork" leader that after a timeout proposes on a stale QC. Validators "crashed
for good" never start (they count against f); a restarted core gets back the committed blocks
leader reputation reads.

Live reconfiguration (`reconfigure`, docs/design.md §4.8, payloads in membership.py): decisions
add a spare (a non-voting follower from the start) or a removed node, remove a validator or
rotate a key; the decided node announces its new key; a marker enacts the set. Links follow
peer admission (current set plus NEXT; a removed node is refused), each node signs with the key
its epoch's set names, and execution may trail commit ("exec_lag"). Attacks on the switch:
crashes at each of its steps ("epoch_crash"), forged markers and stale keys (Byzantine).

Invariants, checked after every step (Byzantine keys excluded):
  - no two honest nodes commit different blocks at one height, and every honest committed
    chain is a prefix of the longest (one block per height, heights contiguous);
  - nothing is committed without a certificate: each Commit carries a QC with a quorum of valid
    signatures of the epoch's set whose commit info names the last block, linked by parent ids;
  - no honest node signs two different votes in one round;
  - every honest node runs an epoch with the same set, and no committed marker differs from the
    set its execution decided (the node would stop: StoreCorrupt).
After the fault phase (partitions healed, crashed nodes restarted, no drops) every honest node
must commit `min_new_commits` blocks above the highest height any honest node had then, within
`liveness_bound_ms` of simulated time (so a node left behind must catch up, epochs included);
with reconfiguration, the honest nodes owing it are the newest set's and its NEXT's, and one
more epoch change must complete that all of them follow.

Signatures are HMAC-SHA256 keyed by a per-validator secret; verification recomputes the MAC
with the secret looked up from the public key. That is 50x faster than Ed25519 and as unforgeable
here: Byzantine nodes in the simulator only ever hold their own secret.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import assert_never

from kledger.cluster.sim.membership import (
    CHANGE_OPS,
    MAX_PAYLOAD_BYTES,
    FaultModel,
    Members,
    RegistryState,
    change_problem,
    decode_decide,
    decode_marker,
    decode_ready,
    encode_decide,
    encode_marker,
    encode_ready,
    execute,
    marker_in_flight,
    ready_mac,
    secret_key,
)
from kledger.consensus.core import (
    Applied,
    Broadcast,
    Commit,
    Core,
    CoreConfig,
    Deliver,
    Effect,
    Equivocation,
    Input,
    PayloadAvailable,
    Persist,
    RequestSync,
    RestoredState,
    SaveBlock,
    Send,
    SetTimer,
    SyncDone,
    Timer,
    TimerFired,
)
from kledger.consensus.leader import REPUTATION_LAG_ROUNDS
from kledger.consensus.messages import Message, Proposal, Timeout, proposal_sign_bytes
from kledger.consensus.types import (
    Block,
    BlockId,
    BlockInfo,
    Height,
    QuorumCert,
    Round,
    SafetyData,
    SafetyFloor,
    Vote,
    VoteData,
    genesis_block,
    timeout_sign_bytes,
    vote_sign_bytes,
)
from kledger.consensus.validators import NodeId, ValidatorSet

FAULT_KINDS = (
    "drop", "delay", "reorder", "duplicate", "partition", "crash", "skew", "idle", "rollback",
    "epoch_crash", "exec_lag",
)  # fmt: skip
# A rolled-back node's disk returns to how it was this many Persists ago, at most.
MAX_ROLLBACK_PERSISTS = 12
BYZANTINE_KINDS = (
    "twins", "equivocate", "double_vote", "forge", "replay", "fork", "junk_payload",
    "forged_marker", "stale_key",
)  # fmt: skip
# Execution trails commit by up to this much under the "exec_lag" fault (the commit worker).
MAX_EXEC_LAG_MS = 300
CHAIN_ID = "kledger-sim"

CoreFactory = Callable[..., Core]


@dataclass(frozen=True, slots=True)
class SimConfig:
    nodes: int = 4
    faults: frozenset[str] = frozenset()
    byzantine: frozenset[str] = frozenset()
    fault_phase_ms: int = 20_000  # faults are injected in [0, fault_phase_ms)
    liveness_bound_ms: int = 40_000  # after the fault phase, honest nodes commit within this
    min_new_commits: int = 2
    base_delay_ms: int = 5  # one-way latency without faults: base .. 2 * base
    max_fault_delay_ms: int = 1_500
    drop_probability: float = 0.1
    duplicate_probability: float = 0.05
    max_skew_ms: int = 1_000
    partition_gap_ms: tuple[int, int] = (500, 4_000)  # between partitions forming
    partition_length_ms: tuple[int, int] = (300, 3_000)
    byzantine_keys: int | None = None  # Byzantine validator keys; None = f (the most tolerated)
    # Live reconfiguration (docs/design.md §4.8): leaders now and then propose a decision (add
    # a spare or removed node, remove a validator, rotate one's key); once committed, and the
    # new key announced, a marker ends the epoch and the next set runs the next one.
    reconfigure: bool = False
    reconfigure_probability: float = 0.1  # of a new payload being a decision, if on
    spare_nodes: int = 1  # with reconfigure: honest non-voting followers that may be added
    # One honest validator (the highest id that is neither Byzantine nor dead) is down from the
    # start until the others have started this many epochs more; then it comes back with its
    # genesis disk and the liveness check (from then on) needs it caught up: epochs of
    # certificates, each checked with its own set, and a sync per epoch.
    down_for_epochs: int = 0
    down_phase_max_ms: int = 1_200_000  # the cluster gives up waiting for those epochs then
    # Validators (not Byzantine, highest ids first) that are down from the start and never come
    # back: they count against f like a Byzantine key, and liveness is checked without them.
    crashed_for_good: int = 0
    core: CoreConfig = field(
        default_factory=lambda: CoreConfig(round_timeout_ms=400, max_round_timeout_ms=3_200)
    )
    core_factory: CoreFactory = Core
    # Test only: False leaves out the safety record, so a rollback also rolls back what the
    # node voted (the simulator then catches the double votes that follow).
    safety_record: bool = True
    # Test only: False makes honest replicas vote for any well-formed marker (no check against
    # their executed NEXT), so a Byzantine leader's forged set commits and the simulator says so.
    marker_vote_rule: bool = True

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("SimConfig.nodes must be positive")
        if not 0 <= self.crashed_for_good < self.nodes:
            raise ValueError("SimConfig.crashed_for_good must be in [0, nodes)")
        if self.down_for_epochs < 0 or (self.down_for_epochs and not self.reconfigure):
            raise ValueError("SimConfig.down_for_epochs needs reconfigure (and is >= 0)")
        if self.spare_nodes < 0:
            raise ValueError("SimConfig.spare_nodes must not be negative")
        unknown = (self.faults - set(FAULT_KINDS)) | (self.byzantine - set(BYZANTINE_KINDS))
        if unknown:
            raise ValueError(f"unknown fault or Byzantine kinds: {sorted(unknown)}")


@dataclass(slots=True)
class SimResult:
    seed: int
    nodes: int
    commits: int = 0  # highest committed height among honest nodes
    rounds: int = 0  # highest round reached
    view_changes: int = 0
    epoch: int = 1  # highest epoch an honest node reached
    epochs_missed: int = 0  # down_for_epochs: epochs the down node missed before it returned
    steps: int = 0
    simulated_ms: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    evidence: int = 0  # equivocations the honest cores reported (each checked)
    # Reconfiguration: changes enacted (markers committed), by kind; decisions and ready txs
    # executed as FAILED (guards); markers honest replicas refused: forged (no such decision)
    # or because their own execution had not reached the decision yet.
    membership_changes: Counter[str] = field(default_factory=Counter)
    refused_txs: Counter[str] = field(default_factory=Counter)
    forged_marker_refused: int = 0
    marker_refused_lagging: int = 0
    genesis_validators: tuple[str, ...] = ()
    final_validators: tuple[str, ...] = ()  # the set of the highest epoch reached
    validator_counts: tuple[int, ...] = ()  # n of each epoch's set, in order
    safety_violations: list[str] = field(default_factory=list)
    liveness_failure: str | None = None
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.safety_violations and self.liveness_failure is None


class SimKeys:
    """HMAC-SHA256 "signatures" (see the module docstring). A key is (node, generation):
    generation 0 is the genesis key, a rotation or an add gives the node a new one."""

    def __init__(self, ids: Sequence[NodeId]) -> None:
        self._by_public: dict[bytes, bytes] = {}
        self.public = {i: self.public_key(i, 0) for i in ids}  # the genesis keys

    def secret(self, node: str, generation: int = 0) -> bytes:
        return secret_key(node, generation)

    def public_key(self, node: str, generation: int = 0) -> bytes:
        secret = secret_key(node, generation)
        public = hashlib.sha256(b"pk/" + secret).digest()
        self._by_public[public] = secret
        return public

    def secret_of(self, public_key: bytes) -> bytes | None:
        return self._by_public.get(public_key)

    def signer(self, node: NodeId, generation: int = 0) -> Callable[[bytes], bytes]:
        secret = secret_key(node, generation)
        return lambda message: hmac.digest(secret, message, "sha256")

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        secret = self._by_public.get(public_key)
        if secret is None:
            return False
        return hmac.compare_digest(hmac.digest(secret, message, "sha256"), signature)


class SimPayloads:
    """Small deterministic payloads "p/<node>/<counter>", valid when well-formed, not pending
    and not committed. With `reconfigure`, the live rule of docs/design.md §4.8 (payload kinds
    in membership.py): a leader proposes a decision now and then; with NEXT decided in its
    executed state it proposes the waiting nodes' ready txs, and once NEXT waits for nobody the
    marker as the whole payload; blocks above a marker in flight are empty (the empty suffix).
    A replica votes for a marker only if its own executed state holds exactly that NEXT."""

    def __init__(self, sim: Simulation, node: SimNode) -> None:
        self._sim = sim
        self._node = node

    def next_payload(self, pending: Sequence[bytes]) -> bytes:
        sim = self._sim
        epoch_work = self._epoch_payload(pending)
        if epoch_work is not None:
            return epoch_work
        if sim.idle:
            return b""
        rng = sim.rng
        if rng.random() < 0.2:
            return b""
        self._node.counter += 1
        config = sim.config
        if config.reconfigure and rng.random() < config.reconfigure_probability:
            decision = self._decision(pending)
            if decision is not None:
                return decision
        return f"p/{self._node.label}/{self._node.counter}".encode()

    def _epoch_payload(self, pending: Sequence[bytes]) -> bytes | None:
        """b"" above a marker in flight, the marker once NEXT waits for nobody, a waiting node's
        ready tx; None when the epoch change has nothing to say."""
        sim = self._sim
        if not sim.config.reconfigure:
            return None
        state = sim.state_of(self._node)
        if marker_in_flight(state, pending):
            return b""
        decision = state.next
        if decision is None:
            return None
        if decision.ready:
            return encode_marker(decision.epoch, decision.members)
        for waiting in sorted(decision.waiting_for):
            ready = sim.ready_pool.get((waiting, decision.epoch))
            if ready is not None and ready not in pending and ready not in self._node.disk.payloads:
                return ready
        return None

    def _decision(self, pending: Sequence[bytes]) -> bytes | None:
        """A change the guards allow (checked again at execution), if none is in flight."""
        sim = self._sim
        state = sim.state_of(self._node)
        if state.next is not None or any(decode_decide(p) is not None for p in pending):
            return None
        options = [
            (op, node)
            for op in CHANGE_OPS
            for node in sim.fault_model.nodes
            if change_problem(state, op, node, sim.fault_model) is None
        ]
        if not options:
            return None
        # The kind first, then the node: at n = 4 four rotations must not crowd out the one add.
        op = sim.rng.choice(sorted({op for op, _ in options}))
        node = sim.rng.choice([n for o, n in options if o == op])
        return encode_decide(self._node.label, self._node.counter, op, node)

    def has_payload(self, pending: Sequence[bytes]) -> bool:
        # Between idle periods there is always something to order; an epoch change in progress
        # is always something to order.
        return not self._sim.idle or bool(self._epoch_payload(pending))

    def is_valid_payload(self, payload: bytes, pending: Sequence[bytes]) -> bool:
        if payload == b"":
            return True
        sim = self._sim
        if len(payload) > MAX_PAYLOAD_BYTES:
            return False
        if sim.config.reconfigure and marker_in_flight(sim.state_of(self._node), pending):
            return False  # the empty suffix: nothing but b"" above an unexecuted marker
        if payload.startswith(b"p/"):
            well_formed = len(payload) <= 64
        elif sim.config.reconfigure:
            marker = decode_marker(payload)
            if marker is not None:
                return self._marker_vote(*marker)
            well_formed = decode_decide(payload) is not None or decode_ready(payload) is not None
        else:
            well_formed = False
        return well_formed and payload not in pending and payload not in self._node.disk.payloads

    def _marker_vote(self, epoch: int, members: Members) -> bool:
        """The replica's marker rule: the block's epoch is e (the core's), the marker's e+1, and
        our executed state is in epoch e with NEXT waiting for nobody and exactly this set (no
        marker is in flight: checked before). A laggard refuses and votes in a later round."""
        sim, node = self._sim, self._node
        state = sim.state_of(node)
        core_epoch = node.core.epoch if node.core is not None else state.epoch
        decision = state.next
        if (
            epoch == core_epoch + 1 == state.epoch + 1
            and decision is not None
            and decision.ready
            and (decision.epoch, decision.members) == (epoch, members)
        ):
            return True
        if not sim.config.marker_vote_rule:
            return True  # test only (SimConfig.marker_vote_rule)
        if node.honest:
            decided = sim.decided.get(epoch)
            if decided is not None and decided == members and epoch == core_epoch + 1:
                sim.result.marker_refused_lagging += 1
            else:
                sim.result.forged_marker_refused += 1
        return False

    def validator_set_after(self, block: Block) -> ValidatorSet | None:
        """The marker's set when the block's whole payload is a marker for the next epoch
        (syntactic: a committed marker was checked by the honest voters of its QC)."""
        if not self._sim.config.reconfigure:
            return None
        marker = decode_marker(block.payload)
        if marker is None or marker[0] != block.epoch + 1:
            return None
        return self._sim.validator_set(*marker)

    def epoch_ending_qc(self, epoch: int) -> QuorumCert | None:
        """From this node's disk: the QC that committed the last block of `epoch`."""
        disk = self._node.disk
        for height in range(len(disk.chain) - 1, 0, -1):
            block = disk.chain[height]
            if block.epoch < epoch:
                return None
            if block.epoch == epoch and self._sim.is_epoch_end(block):
                return disk.commit_qc[height]
        return None


@dataclass(slots=True)
class Disk:
    """What survives a crash: the persisted safety data and the committed chain."""

    validators: ValidatorSet
    safety: SafetyData | None = None
    # The safety record, outside the store: a rollback does not touch it.
    record: SafetyFloor | None = None
    # (safety, committed length, validators) at each Persist, newest last: where a rollback
    # can take the disk back to.
    history: list[tuple[SafetyData | None, int, ValidatorSet]] = field(default_factory=list)
    chain: list[Block] = field(default_factory=list)  # index == height
    commit_qc: list[QuorumCert] = field(default_factory=list)  # QC that committed chain[i]
    payloads: set[bytes] = field(default_factory=set)
    blocks: dict[BlockId, Block] = field(default_factory=dict)  # saved uncommitted blocks


@dataclass(slots=True)
class SimNode:
    index: int
    node_id: NodeId
    label: str
    honest: bool
    disk: Disk
    core: Core | None = None
    alive: bool = True
    incarnation: int = 0
    skew_ms: int = 0
    group: int = 0
    counter: int = 0
    executed: int = 0  # height of the last committed block executed (exec_lag: behind commit)


class Simulation:
    def __init__(self, config: SimConfig, seed: int, *, trace: bool = False) -> None:
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        self.tracing = trace
        self.result = SimResult(seed=seed, nodes=config.nodes)
        self.now_ms = 0
        self._queue: list[tuple[int, int, str, tuple[object, ...]]] = []
        self._sequence = 0
        ids = [NodeId(f"n{i}") for i in range(config.nodes)]
        spares = [
            NodeId(f"n{i}")
            for i in range(config.nodes, config.nodes + config.spare_nodes)
            if config.reconfigure
        ]
        self.keys = SimKeys(ids + spares)
        validators = ValidatorSet.of(1, [(i, self.keys.public[i]) for i in ids])
        self.validator_sets: dict[int, ValidatorSet] = {1: validators}
        self._members_through: dict[int, frozenset[str]] = {1: frozenset(ids)}
        self.genesis, self.genesis_qc = genesis_block(CHAIN_ID, validators, 0)
        faulty = self.rng.sample(ids, validators.max_faulty) if config.byzantine else []
        keys = validators.max_faulty if config.byzantine_keys is None else config.byzantine_keys
        self.byzantine_ids = set(faulty[:keys])
        self.dead_ids = set(
            [i for i in reversed(ids) if i not in self.byzantine_ids][: config.crashed_for_good]
        )
        self.nodes: list[SimNode] = []
        for node_id in ids:
            honest = node_id not in self.byzantine_ids and node_id not in self.dead_ids
            self._add_node(node_id, f"{node_id}", honest)
        if "twins" in config.byzantine:
            for node_id in sorted(self.byzantine_ids):
                self._add_node(node_id, f"{node_id}twin", honest=False)
        for node_id in spares:  # non-voting followers until a decision adds them
            self._add_node(node_id, f"{node_id}", honest=True)
        self.canonical: dict[int, BlockId] = {0: self.genesis.id}  # height -> honest commit
        self.votes_signed: dict[tuple[NodeId, int, int], VoteData] = {}
        self._replay_pool: list[tuple[NodeId, Message]] = []
        self._heal_ms = config.fault_phase_ms
        # The node down across epochs (down_for_epochs), until the cluster is that far on: the
        # highest honest genesis validator.
        self._down: SimNode | None = None
        if config.down_for_epochs:
            candidates = [n for n in reversed(self.nodes) if n.honest and n.node_id in ids]
            self._down = candidates[0] if candidates else None
        self.down_node = self._down
        # Membership (membership.py): the executed state after each committed block (a pure
        # function of the block and its parent's state, so one cache serves every node), the
        # decided sets by epoch, and the ready txs the announcing nodes have gossiped.
        down = {self._down.node_id} if self._down is not None else set()
        self.fault_model = FaultModel(
            nodes=tuple(sorted(ids + spares)),
            faulty=frozenset(self.byzantine_ids | self.dead_ids),
            unavailable=frozenset(self.dead_ids | down),
            protected=frozenset(down),
        )
        genesis_state = RegistryState(1, tuple(sorted((i, 0) for i in ids)))
        self._state_after: dict[BlockId, RegistryState] = {self.genesis.id: genesis_state}
        self._newest_state = (0, genesis_state)  # (height, state) of the highest block executed
        self._forged: set[BlockId] = set()  # committed markers that were not the decided set
        self.decided: dict[int, Members] = {}  # epoch -> the set decided for it
        self.ready_pool: dict[tuple[str, int], bytes] = {}  # (node, epoch) -> its ready tx
        self._sets: dict[tuple[int, Members], ValidatorSet] = {}
        self.result.genesis_validators = tuple(validators.ids)
        self.idle = False  # an idle period: no txs to order (fault kind "idle")
        # Committed blocks below the root handed to a restarted core: all leader reputation reads.
        self._recent_blocks = config.core.leader_reputation_window_rounds + REPUTATION_LAG_ROUNDS
        self._healed = False
        self._height_at_heal: dict[int, int] = {}
        self._epoch_at_heal = 1

    # ---- set-up ----------------------------------------------------------------------------

    def _add_node(self, node_id: NodeId, label: str, honest: bool) -> None:
        disk = Disk(validators=self.validator_sets[1], chain=[self.genesis])
        disk.commit_qc.append(self.genesis_qc)
        node = SimNode(len(self.nodes), node_id, label, honest, disk)
        if "skew" in self.config.faults:
            node.skew_ms = self.rng.randint(-self.config.max_skew_ms, self.config.max_skew_ms)
        self.nodes.append(node)

    def _boot(self, node: SimNode) -> None:
        disk = node.disk
        node.core = self.config.core_factory(
            self.config.core,
            CHAIN_ID,
            node.node_id,
            disk.validators,
            self._signer(node),
            self.keys.verify,
            SimPayloads(self, node),
            RestoredState(
                disk.safety,
                disk.chain[-1],
                disk.commit_qc[-1],
                tuple(disk.blocks.values()),
                tuple(disk.chain[-1 - self._recent_blocks : -1]),
                disk.record if self.config.safety_record else None,
            ),
        )
        node.alive = True
        node.executed = len(disk.chain) - 1  # a restarted node executes what it committed
        self._apply(node, node.core.start(self._local_ms(node)))
        self._announce(node)

    # ---- membership --------------------------------------------------------------------------

    def _signer(self, node: SimNode) -> Callable[[bytes], bytes]:
        """The node signs with the key its current epoch's set names for it (a rotated node
        switches keys with the epoch; outside the set, with its genesis key, which no one
        reads)."""

        def sign(message: bytes) -> bytes:
            return hmac.digest(self._secret_now(node), message, "sha256")

        return sign

    def _secret_now(self, node: SimNode) -> bytes:
        validators = node.core.validators if node.core is not None else node.disk.validators
        key = validators.public_key(node.node_id)
        secret = self.keys.secret_of(key) if key is not None else None
        return secret if secret is not None else self.keys.secret(node.node_id, 0)

    def validator_set(self, epoch: int, members: Members) -> ValidatorSet:
        known = self._sets.get((epoch, members))
        if known is None:
            known = ValidatorSet.of(
                epoch, [(node, self.keys.public_key(node, gen)) for node, gen in members]
            )
            self._sets[(epoch, members)] = known
        return known

    def state_of(self, node: SimNode) -> RegistryState:
        """The node's executed committed state (execution may trail commit: exec_lag)."""
        return self._state_after[node.disk.chain[node.executed].id]

    def _executed_state(self, block: Block) -> RegistryState:
        """Execute `block` on its parent's state (once per block id: every node gets the same)."""
        known = self._state_after.get(block.id)
        if known is not None:
            return known
        before = self._state_after[block.parent_id]
        outcome = execute(before, block.payload, block.height, self.fault_model)
        state = outcome.state
        self._state_after[block.id] = state
        if outcome.refused == "forged_marker":
            self._forged.add(block.id)
        elif outcome.refused is not None:
            self.result.refused_txs[outcome.refused] += 1
        if block.height > self._newest_state[0]:
            self._newest_state = (block.height, state)
            step = None
            if outcome.change is not None:
                self.result.membership_changes[outcome.change] += 1
                self.validator_sets.setdefault(
                    state.epoch, self.validator_set(state.epoch, state.members)
                )
                step = "marker_committed"
            elif state.next is not None and state.next != before.next and outcome.refused is None:
                self.decided.setdefault(state.next.epoch, state.next.members)
                step = "decide_committed" if before.next is None else "ready_committed"
            if step is not None:
                self._trace(f"executed {step} at height {block.height}: {block.payload!r}")
                self._switch_step(step, self.rng.choice(self.nodes))
        return state

    def _executed(self, node: SimNode, height: int) -> None:
        """The node's commit worker executed its committed blocks up to `height`."""
        if node.core is None:
            return
        node.executed = max(node.executed, min(height, len(node.disk.chain) - 1))
        self._input(node, Applied(Height(height), self._local_ms(node)))
        self._announce(node)

    def _announce(self, node: SimNode) -> None:
        """A node whose new key NEXT waits for (added or rotated), once its executed state
        holds the decision, submits `ready` signed by that new key (docs/design.md §4.8)."""
        if not self.config.reconfigure or node.core is None:
            return
        decision = self.state_of(node).next
        if decision is None or node.node_id not in decision.waiting_for:
            return
        key = (node.node_id, decision.epoch)
        if key in self.ready_pool:
            return
        generation = dict(decision.members)[node.node_id]
        mac = ready_mac(self.keys.secret(node.node_id, generation), node.node_id, decision.epoch)
        self.ready_pool[key] = encode_ready(node.node_id, decision.epoch, mac)
        self._trace(f"{node.label} announces its key for epoch {decision.epoch}")

    def _admits(self, receiver: SimNode, sender: str) -> bool:
        """Peer admission as the live node does it: the current set, plus NEXT (joiners sync
        as followers); a node that was a validator and is in neither was removed, and its
        links are refused from the first block of the new epoch. A node never seen in a set up
        to the receiver's epoch is not known to be removed (it joined later: the receiver is
        behind and must hear it to catch up)."""
        core = receiver.core
        if not self.config.reconfigure or core is None or core.validators.contains(sender):
            return True
        decision = self.state_of(receiver).next
        if decision is not None and sender in dict(decision.members):
            return True
        return sender not in self._members_through_epoch(core.epoch)

    def _members_through_epoch(self, epoch: int) -> frozenset[str]:
        known = self._members_through.get(epoch)
        if known is None:
            previous = self._members_through_epoch(epoch - 1) if epoch > 1 else frozenset()
            validators = self.validator_sets.get(epoch)
            known = previous | (frozenset(validators.ids) if validators is not None else set())
            if validators is not None:
                self._members_through[epoch] = known
        return known

    def _broadcast_targets(self, node: SimNode) -> list[NodeId]:
        """The sender's current set, plus the joiners its executed NEXT names."""
        core = node.core
        assert core is not None
        targets = set(core.validators.ids)
        decision = self.state_of(node).next if self.config.reconfigure else None
        if decision is not None and decision.epoch == core.epoch + 1:
            targets |= {NodeId(member) for member, _ in decision.members}
        targets.discard(node.node_id)
        return sorted(targets)

    def _must_progress(self, node: SimNode) -> bool:
        """Liveness is owed by honest validators of the newest set and the joiners of its NEXT;
        a removed node or a spare nobody added follows no one."""
        if not node.honest:
            return False
        if not self.config.reconfigure:
            return True
        newest = self.validator_sets[max(self.validator_sets)]
        decision = self._newest_state[1].next
        joining = decision is not None and node.node_id in dict(decision.members)
        return newest.contains(node.node_id) or joining

    def _switch_step(self, step: str, victim: SimNode) -> None:
        """epoch_crash: at each step of an epoch change (decision or marker proposed, decision,
        ready or marker committed, the new epoch's first round), sometimes crash a node — the
        proposer's next leaders when a decision or marker was just proposed, so the rounds
        between the deciding block and its commit time out — and restart it a little later."""
        if not self._faults_active("epoch_crash") or self.rng.random() < 0.4:
            return
        self.result.faults["epoch_crash"] += 1
        self._trace(f"epoch_crash at {step}: {victim.label}")
        self._push(self.now_ms, "crash", (victim.index,))
        restart = min(self.now_ms + self.rng.randint(50, 1_500), self.config.fault_phase_ms)
        self._push(restart, "restart", (victim.index,))

    def _local_ms(self, node: SimNode) -> int:
        skew = node.skew_ms if not self._healed else 0
        return max(0, self.now_ms + skew)

    def _push(self, at_ms: int, kind: str, payload: tuple[object, ...]) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (at_ms, self._sequence, kind, payload))

    def _trace(self, text: str) -> None:
        if self.tracing:
            self.result.trace.append(f"{self.now_ms:>8} {text}")

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> SimResult:
        for node in self.nodes:
            if node.node_id in self.dead_ids or node is self._down:
                node.alive = False
                continue
            self._boot(node)
        self._schedule_faults()
        end_ms = self._heal_ms + self.config.liveness_bound_ms
        while self._queue and not self.result.safety_violations:
            at_ms, _, kind, payload = heapq.heappop(self._queue)
            if self._down is not None:
                end_ms = max(end_ms, at_ms + self.config.liveness_bound_ms)
            if at_ms > end_ms:
                break
            self.now_ms = at_ms
            if not self._healed and at_ms >= self._heal_ms:
                self._heal()
            if self._down is not None and (
                self.result.epoch >= 1 + self.config.down_for_epochs
                or at_ms >= self.config.down_phase_max_ms
            ):
                self._return_down_node()
                end_ms = max(self._heal_ms, at_ms) + self.config.liveness_bound_ms
            self.result.steps += 1
            self._dispatch(kind, payload)
            if self._healed and self._liveness_reached():
                break
        self._finish(end_ms)
        return self.result

    def _dispatch(self, kind: str, payload: tuple[object, ...]) -> None:
        if kind == "deliver":
            index, sender, message = payload
            assert isinstance(index, int) and isinstance(sender, str)
            node = self.nodes[index]
            if node.alive and node.core is not None:
                if not self._admits(node, sender):
                    self.result.faults["link_refused"] += 1
                    return
                self._trace(f"{node.label} <- {sender} {describe(message)}")  # type: ignore[arg-type]
                self._input(node, Deliver(NodeId(sender), message, self._local_ms(node)))  # type: ignore[arg-type]
        elif kind == "timer":
            index, incarnation, timer = payload
            assert isinstance(index, int)
            node = self.nodes[index]
            if node.alive and node.incarnation == incarnation:
                self._input(node, TimerFired(timer, self._local_ms(node)))  # type: ignore[arg-type]
        elif kind == "execute":
            index, incarnation, height = payload
            assert isinstance(index, int) and isinstance(height, int)
            node = self.nodes[index]
            if node.alive and node.incarnation == incarnation:
                self._executed(node, height)
        elif kind == "sync":
            index, incarnation, peer, target = payload
            assert isinstance(index, int) and isinstance(peer, str)
            node = self.nodes[index]
            if node.alive and node.incarnation == incarnation:
                self._sync(node, NodeId(peer), target)  # type: ignore[arg-type]
        elif kind == "crash":
            (index,) = payload
            assert isinstance(index, int)
            self._crash(self.nodes[index])
        elif kind == "rollback":
            (index,) = payload
            assert isinstance(index, int)
            self._rollback(self.nodes[index])
        elif kind == "restart":
            (index,) = payload
            assert isinstance(index, int)
            node = self.nodes[index]
            if not node.alive and node.node_id not in self.dead_ids and node is not self._down:
                self._trace(f"{node.label} restarts")
                self._boot(node)
        elif kind == "partition":
            self._partition()
        elif kind == "heal_partition":
            for node in self.nodes:
                node.group = 0
            self._trace("partition heals")
        elif kind == "replay":
            self._replay()
        elif kind == "idle":
            self.idle = True
            self._trace("idle: no txs to order")
        elif kind == "work":
            # Txs arrive after an idle period: every node's driver says so (PayloadAvailable).
            self.idle = False
            self._trace("txs arrive")
            for node in self.nodes:
                if node.alive and node.core is not None:
                    self._input(node, PayloadAvailable(self._local_ms(node)))

    def _input(self, node: SimNode, event: Input) -> None:
        assert node.core is not None
        self._apply(node, node.core.step(event))

    # ---- effects ---------------------------------------------------------------------------

    def _apply(self, node: SimNode, effects: list[Effect]) -> None:
        if not node.honest:
            effects = self._byzantine(node, effects)
        applied = 0
        for effect in effects:
            match effect:
                case Persist():
                    self._persist(node, effect.safety)  # durable before the sends that follow
                case SaveBlock():
                    node.disk.blocks[effect.block.id] = effect.block
                case Send():
                    self._record_vote(node, effect.message)
                    self._send(node, effect.to, effect.message)
                case Broadcast():
                    self._epoch_switch_proposed(node, effect.message)
                    for node_id in self._broadcast_targets(node):
                        self._send(node, node_id, effect.message)
                case SetTimer():
                    at_ms = effect.at_ms - (node.skew_ms if not self._healed else 0)
                    self._push(
                        max(at_ms, self.now_ms),
                        "timer",
                        (node.index, node.incarnation, effect.timer),
                    )
                case Commit():
                    self._commit(node, effect.blocks, effect.qc)
                    applied = max(applied, effect.blocks[-1].height) if effect.blocks else applied
                case RequestSync():
                    delay = self._delay()
                    self._push(
                        self.now_ms + delay,
                        "sync",
                        (node.index, node.incarnation, effect.peer, effect.target),
                    )
                case Equivocation():
                    self._check_evidence(node, effect)
                case _:
                    assert_never(effect)
        if applied and node.core is not None:
            # The simulator stores a commit at once and executes it at once or, under exec_lag,
            # a little later (the commit worker); the core hears Applied when it is executed.
            if self._faults_active("exec_lag") and self.rng.random() < 0.5:
                self.result.faults["exec_lag"] += 1
                self._push(
                    self.now_ms + self.rng.randint(1, MAX_EXEC_LAG_MS),
                    "execute",
                    (node.index, node.incarnation, applied),
                )
            else:
                self._executed(node, applied)
        if node.core is not None:
            node.disk.validators = node.core.validators
            epoch = node.core.epoch
            known = self.validator_sets.setdefault(epoch, node.core.validators)
            if known != node.core.validators and node.honest:
                self._violation(f"{node.label} runs epoch {epoch} with another validator set")
            self.result.rounds = max(self.result.rounds, node.core.round)
            if node.honest:
                if epoch > self.result.epoch:
                    self._switch_step("epoch_started", self.rng.choice(self.nodes))
                self.result.epoch = max(self.result.epoch, epoch)

    def _epoch_switch_proposed(self, node: SimNode, message: Message) -> None:
        """epoch_crash hook: an honest leader just proposed a decision or a marker; crash one of
        the next two leaders (who collect the votes that would certify and commit it)."""
        if not isinstance(message, Proposal) or not node.honest or node.core is None:
            return
        payload = message.block.payload
        if decode_decide(payload) is not None:
            step = "decide_proposed"
        elif decode_marker(payload) is not None:
            step = "marker_proposed"
        else:
            return
        leader = node.core.leader_of(message.block.round + self.rng.randint(1, 2))
        victims = [n for n in self.nodes if n.node_id == leader]
        self._switch_step(step, victims[0])

    def _persist(self, node: SimNode, safety: SafetyData) -> None:
        disk = node.disk
        disk.safety = safety
        height = len(disk.chain) - 1
        # The set this safety data and chain run under: a Persist that starts an epoch comes in
        # the step that committed the epoch's end, before disk.validators follows the core.
        validators = disk.validators
        core = node.core
        if safety.epoch != validators.epoch and core is not None and core.epoch == safety.epoch:
            validators = core.validators
        disk.history.append((safety, len(disk.chain), validators))
        del disk.history[:-MAX_ROLLBACK_PERSISTS]
        if self.config.safety_record:  # raised before the vote it allows is sent, as a node does
            floor = disk.record
            disk.record = (
                SafetyFloor(
                    safety.epoch, safety.highest_vote_round, safety.highest_qc_round, Height(height)
                )
                if floor is None
                else floor.raised(safety, height)
            )

    def _delay(self) -> int:
        base = self.config.base_delay_ms
        delay = self.rng.randint(base, 2 * base)
        if self._faults_active("delay") and self.rng.random() < 0.1:
            self.result.faults["delay"] += 1
            delay += self.rng.randint(0, self.config.max_fault_delay_ms)
        if self._faults_active("reorder") and self.rng.random() < 0.2:
            self.result.faults["reorder"] += 1
            delay += self.rng.randint(0, 20 * base)
        return delay

    def _faults_active(self, kind: str) -> bool:
        return kind in self.config.faults and not self._healed

    def _send(self, source: SimNode, to: NodeId, message: Message) -> None:
        for target in self.nodes:
            if target.node_id != to or target is source:
                continue
            if target.group != source.group:
                self.result.faults["partitioned_message"] += 1
                continue
            if self._faults_active("drop") and self.rng.random() < self.config.drop_probability:
                self.result.faults["drop"] += 1
                continue
            self._push(
                self.now_ms + self._delay(), "deliver", (target.index, source.node_id, message)
            )
            if (
                self._faults_active("duplicate")
                and self.rng.random() < self.config.duplicate_probability
            ):
                self.result.faults["duplicate"] += 1
                self._push(
                    self.now_ms + self._delay(), "deliver", (target.index, source.node_id, message)
                )
            if (
                "replay" in self.config.byzantine
                and len(self._replay_pool) < 256
                and self.rng.random() < 0.05
            ):
                self._replay_pool.append((source.node_id, message))

    # ---- invariants ------------------------------------------------------------------------

    def _violation(self, text: str) -> None:
        self.result.safety_violations.append(f"t={self.now_ms}ms: {text}")
        self._trace(f"SAFETY VIOLATION: {text}")

    def _check_evidence(self, node: SimNode, evidence: Equivocation) -> None:
        """Evidence a core reports must hold: two different messages of one round, each signed
        by the accused. A false accusation is a safety violation of the reporting core."""
        self.result.evidence += 1
        signed = []
        for message in (evidence.first, evidence.second):
            if isinstance(message, Proposal):
                author, round_ = message.block.proposer, message.block.round
                sign_bytes = proposal_sign_bytes(CHAIN_ID, message.block.id)
            else:
                author, round_ = message.author, message.round
                sign_bytes = vote_sign_bytes(CHAIN_ID, message.data)
            epoch = message.block.epoch if isinstance(message, Proposal) else message.data.epoch
            validators = self.validator_sets.get(epoch)
            key = validators.public_key(author) if validators is not None else None
            signed.append(
                author == evidence.author
                and round_ == evidence.round
                and key is not None
                and self.keys.verify(key, sign_bytes, message.signature)
            )
        if not all(signed) or evidence.first == evidence.second:
            self._violation(f"{node.label} reported false evidence against {evidence.author}")

    def _record_vote(self, node: SimNode, message: Message) -> None:
        if not node.honest or not isinstance(message, Vote):
            return
        key = (node.node_id, message.data.epoch, message.round)
        previous = self.votes_signed.setdefault(key, message.data)
        if previous != message.data:
            self._violation(f"{node.label} signed two different votes in round {message.round}")

    def _certificate_problem(self, qc: QuorumCert, last: Block) -> str | None:
        validators = self.validator_sets.get(qc.epoch)
        if validators is None:
            return f"QC of unknown epoch {qc.epoch}"
        if qc == self.genesis_qc:
            return None
        authors = [author for author, _ in qc.signatures]
        if len(set(authors)) < validators.quorum:
            return "QC without a quorum"
        message = vote_sign_bytes(CHAIN_ID, qc.data)
        for author, signature in qc.signatures:
            key = validators.public_key(author)
            if key is None or not self.keys.verify(key, message, signature):
                return f"QC with a bad signature of {author}"
        if qc.commit is None:
            return "QC without commit info (not a 2-chain)"
        if qc.commit.id != last.id and not self.is_epoch_end(last):
            return "QC's commit info does not name the last committed block"
        return None

    def is_epoch_end(self, block: Block) -> bool:
        if not self.config.reconfigure:
            return False
        marker = decode_marker(block.payload)
        return marker is not None and marker[0] == block.epoch + 1

    def _commit(self, node: SimNode, blocks: Sequence[Block], qc: QuorumCert) -> None:
        disk = node.disk
        self._trace(f"{node.label} commits {[b.height for b in blocks]}")
        if not blocks:
            self._violation(f"{node.label} emitted an empty commit")
            return
        problem = self._certificate_problem(qc, blocks[-1])
        if problem is not None and node.honest:
            self._violation(
                f"{node.label} committed height {blocks[-1].height} without a certificate: "
                + problem
            )
        for block in blocks:
            if block.height != len(disk.chain) or block.parent_id != disk.chain[-1].id:
                if node.honest:
                    self._violation(
                        f"{node.label} committed height {block.height} off its chain"
                        f" (at {len(disk.chain) - 1})"
                    )
                return
            disk.chain.append(block)
            disk.commit_qc.append(qc)
            disk.payloads.add(block.payload)
            disk.blocks.pop(block.id, None)
            self._executed_state(block)
            if node.honest:
                self._check_canonical(node, block)
                if block.id in self._forged:
                    self._violation(
                        f"{node.label} committed a marker that is not the decided set at height"
                        f" {block.height}: {block.payload!r}"
                    )
        height = len(disk.chain) - 1
        for stale in [i for i, b in disk.blocks.items() if b.height <= height]:
            del disk.blocks[stale]

    def _check_canonical(self, node: SimNode, block: Block) -> None:
        known = self.canonical.setdefault(block.height, block.id)
        if known != block.id:
            self._violation(f"{node.label} committed a different block at height {block.height}")
        self.result.commits = max(self.result.commits, block.height)

    def _sync(self, node: SimNode, peer_id: NodeId, target: QuorumCert) -> None:
        """RequestSync: copy committed blocks from a live instance of `peer`, checked by the
        parent-id chain down from the block the target's commit info names."""
        commit = target.commit
        if commit is None:
            return  # only a broken core asks for a sync to an uncommitted QC
        for peer in self.nodes:
            if peer.node_id != peer_id or not peer.alive or peer.group != node.group:
                continue
            if not self._admits(peer, node.node_id):
                self.result.faults["link_refused"] += 1
                continue
            chain = peer.disk.chain
            end = self._committed_end(peer, target)
            if end is None:
                continue
            start = len(node.disk.chain)
            blocks = chain[start : end + 1]
            if not blocks or blocks[0].parent_id != node.disk.chain[-1].id:
                continue
            root_qc = target
            for index, block in enumerate(blocks):
                if self.is_epoch_end(block):  # a sync stops at an epoch end
                    blocks = blocks[: index + 1]
                    root_qc = peer.disk.commit_qc[block.height]
                    break
            self._trace(
                f"{node.label} syncs heights {start}..{blocks[-1].height} from {peer.label}"
            )
            self.result.faults["sync"] += 1
            self._commit(node, blocks, root_qc)
            node.executed = len(node.disk.chain) - 1  # synced blocks are executed as applied
            assert node.core is not None
            self._input(node, SyncDone(blocks[-1], root_qc, self._local_ms(node), tuple(blocks)))
            self._announce(node)
            return

    def _committed_end(self, peer: SimNode, target: QuorumCert) -> int | None:
        """The height of the last block `target` commits in `peer`'s chain: the block its commit
        info names, or, when that block is in the empty suffix past an epoch end (never part of
        the chain), the epoch's last block, which the peer committed with this same commit info
        (docs/design.md §4, epochs)."""
        commit = target.commit
        assert commit is not None
        chain, committed_with = peer.disk.chain, peer.disk.commit_qc
        if len(chain) > commit.height and chain[commit.height].id == commit.id:
            return commit.height
        for height in range(min(commit.height, len(chain) - 1), 0, -1):
            qc = committed_with[height]
            if qc.commit == commit and self.is_epoch_end(chain[height]):
                return height
        return None

    # ---- faults ----------------------------------------------------------------------------

    def _schedule_faults(self) -> None:
        config, rng = self.config, self.rng
        phase = config.fault_phase_ms
        if "partition" in config.faults or "twins" in config.byzantine:
            at = 0
            while True:
                at += rng.randint(*config.partition_gap_ms)
                if at >= phase:
                    break
                self._push(at, "partition", ())
                self._push(at + rng.randint(*config.partition_length_ms), "heal_partition", ())
        if "crash" in config.faults:
            self._schedule_outages("crash", (200, 5_000))
        if "idle" in config.faults:
            # Idle periods (nothing to order), some longer than a heartbeat, then work again.
            at = 0
            while True:
                at += rng.randint(1_000, 8_000)
                if at >= phase:
                    break
                self.result.faults["idle"] += 1
                self._push(at, "idle", ())
                at += rng.randint(500, 2 * max(config.core.idle_heartbeat_ms, 1_000))
                self._push(min(at, phase), "work", ())
        if "rollback" in config.faults:
            self._schedule_outages("rollback", (50, 2_000))
        if "replay" in config.byzantine:
            at = 0
            while at < phase + config.liveness_bound_ms:
                at += rng.randint(100, 1_000)
                self._push(at, "replay", ())

    def _schedule_outages(self, kind: str, down_ms: tuple[int, int]) -> None:
        """One to three outages of `kind` ("crash" or "rollback") at random nodes and times in
        the fault phase, each followed by a restart `down_ms` later (within the phase)."""
        rng, phase = self.rng, self.config.fault_phase_ms
        candidates = self.nodes
        if kind == "rollback" and self.dead_ids:
            # A rollback loses what a node had stored, so beside validators down for good it is
            # one more fault: only as many nodes as f leaves may roll back. Otherwise every live
            # node may lose the only copies of a block a QC certifies (the dead ones never held
            # them), and no BFT protocol promises liveness then (n=4 seed 6 with one validator
            # crashed for good: all three live nodes rolled back and every round timed out).
            budget = self.validator_sets[1].max_faulty - len(self.dead_ids)
            candidates = [n for n in self.nodes if n.node_id not in self.dead_ids][:budget]
            if not candidates:
                return
        for _ in range(rng.randint(1, 3)):
            node = rng.choice(candidates)
            at = rng.randint(0, phase)
            self._push(at, kind, (node.index,))
            self._push(min(at + rng.randint(*down_ms), phase), "restart", (node.index,))

    def _partition(self) -> None:
        for node in self.nodes:
            node.group = self.rng.randint(0, 1)
        for node_id in sorted(self.byzantine_ids):  # Twins: one key on both sides
            twins = [n for n in self.nodes if n.node_id == node_id]
            if len(twins) == 2:
                twins[0].group, twins[1].group = 0, 1
        self.result.faults["partition"] += 1
        self._trace(f"partition {[(n.label, n.group) for n in self.nodes]}")

    def _crash(self, node: SimNode) -> None:
        if not node.alive:
            return
        self.result.faults["crash"] += 1
        self._trace(f"{node.label} crashes")
        node.alive = False
        node.core = None
        node.incarnation += 1

    def _rollback(self, node: SimNode) -> None:
        """A crash that loses the disk's newest writes: safety data, committed blocks and saved
        blocks go back to how they were some Persists ago; the safety record does not."""
        if not node.alive or not node.disk.history:
            return
        self._crash(node)
        disk = node.disk
        back = self.rng.randint(1, len(disk.history))
        safety, length, validators = disk.history[-back]
        del disk.history[-back:]
        disk.safety, disk.validators = safety, validators
        del disk.chain[length:]
        del disk.commit_qc[length:]
        node.executed = min(node.executed, length - 1)
        disk.payloads = {block.payload for block in disk.chain}
        disk.blocks = {}
        self.result.faults["rollback"] += 1
        self._trace(f"{node.label} rolls back {back} persists, to height {length - 1}")

    def _replay(self) -> None:
        if not self._replay_pool:
            return
        sender, message = self.rng.choice(self._replay_pool)
        target = self.rng.choice(self.nodes)
        if target.node_id != sender:
            self.result.faults["replay"] += 1
            self._push(self.now_ms + 1, "deliver", (target.index, sender, message))

    def _heal(self) -> None:
        self._healed = True
        self._trace("faults stop; network heals")
        for node in self.nodes:
            node.group = 0
            if not node.alive and node.node_id not in self.dead_ids and node is not self._down:
                self._boot(node)
        self._mark_heights()

    def _return_down_node(self) -> None:
        """down_for_epochs: the cluster is far enough on (or gave up); the down node comes back
        (at once if the faults are over, else with the heal) and must catch up from there."""
        node, self._down = self._down, None
        assert node is not None
        self._trace(f"{node.label} returns at epoch {self.result.epoch}")
        self.result.epochs_missed = self.result.epoch - 1
        if self._healed:
            self._boot(node)
            self._mark_heights()

    def _mark_heights(self) -> None:
        """Every honest node must get past the highest height any honest node had committed when
        the faults stopped (or the down node returned): a node left behind, even epochs behind,
        has to catch up, not just commit a block or two of its own."""
        top = max((len(n.disk.chain) - 1 for n in self.nodes if n.honest), default=0)
        for node in self.nodes:
            if node.honest:
                self._height_at_heal[node.index] = top
        self._epoch_at_heal = max(self.validator_sets)

    def _liveness_reached(self) -> bool:
        """Every honest node that owes progress passed the mark; with reconfigure, also at
        least one epoch change after the mark, which all of them followed (so a change stuck
        half-way, or a joiner that never catches up, is a liveness failure)."""
        need = self.config.min_new_commits
        newest = max(self.validator_sets)
        return (
            self._down is None
            and (not self.config.reconfigure or newest > self._epoch_at_heal)
            and all(
                len(node.disk.chain) - 1 >= self._height_at_heal[node.index] + need
                and (not self.config.reconfigure or self._epoch_of(node) == newest)
                for node in self.nodes
                if self._must_progress(node)
            )
        )

    def _epoch_of(self, node: SimNode) -> int:
        return node.core.epoch if node.core is not None else node.disk.validators.epoch

    def _finish(self, end_ms: int) -> None:
        result = self.result
        result.simulated_ms = self.now_ms
        result.final_validators = tuple(self.validator_sets[max(self.validator_sets)].ids)
        result.validator_counts = tuple(
            self.validator_sets[e].size for e in sorted(self.validator_sets)
        )
        for node in self.nodes:
            if node.core is not None:
                result.dropped.update(node.core.dropped)
                if node.honest:
                    result.view_changes = max(result.view_changes, node.core.view_changes)
        if result.safety_violations:
            return
        if not self._healed:
            self._heal()
        if not self._liveness_reached():
            newest = max(self.validator_sets)
            lagging = [
                f"{n.label}@{len(n.disk.chain) - 1}/e{self._epoch_of(n)}"
                for n in self.nodes
                if self._must_progress(n)
                and (
                    len(n.disk.chain) - 1
                    < self._height_at_heal[n.index] + self.config.min_new_commits
                    or (self.config.reconfigure and self._epoch_of(n) != newest)
                )
            ]
            stuck = (
                f"; no epoch change since epoch {newest}"
                if self.config.reconfigure and newest <= self._epoch_at_heal
                else ""
            )
            result.liveness_failure = (
                f"no progress within {self.config.liveness_bound_ms} ms after the faults stopped: "
                + ", ".join(lagging)
                + stuck
            )

    # ---- Byzantine behaviour -----------------------------------------------------------------

    def _byzantine(self, node: SimNode, effects: list[Effect]) -> list[Effect]:
        kinds = self.config.byzantine
        core = node.core
        if core is None:
            return effects
        sign = self._signer(node)
        stale_sign = self._stale_signer(node) if "stale_key" in kinds else None
        out: list[Effect] = []
        skip_vote_round = -1
        for effect in effects:
            message = effect.message if isinstance(effect, Send | Broadcast) else None
            if isinstance(message, Proposal) and isinstance(effect, Broadcast):
                if "fork" in kinds and message.last_tc is not None:
                    forked = self._fork_proposal(core, message, sign)
                    if forked is not None:
                        # Propose on the stale QC and vote for it ourselves, not for the
                        # block our core built (its vote follows in this batch).
                        self.result.faults["fork"] += 1
                        out.append(Broadcast(forked))
                        block = forked.block
                        data = VoteData(core.epoch, block.info, block.qc.data.certified, None)
                        vote = Vote(data, node.node_id, sign(vote_sign_bytes(CHAIN_ID, data)))
                        out.append(Send(core.leader_of(block.round + 1), vote))
                        skip_vote_round = block.round
                        continue
                if "forged_marker" in kinds and self.config.reconfigure and self.rng.random() < 0.3:
                    # A correctly signed proposal whose payload is a marker for a set nobody
                    # decided: honest replicas refuse it (forged_marker_refused).
                    self.result.faults["forged_marker"] += 1
                    forged = self._forged_marker(node, core)
                    out.append(Broadcast(self._with_payload(message, forged, sign)))
                    continue
                if "junk_payload" in kinds and self.rng.random() < 0.5:
                    # A correctly signed proposal whose payload no honest replica accepts
                    # (the real node's kind: a tx that can never be valid). It gets no vote:
                    # the round times out and the next leader proposes.
                    self.result.faults["junk_payload"] += 1
                    out.append(Broadcast(self._junk_proposal(message, sign)))
                    continue
                if "equivocate" in kinds:
                    self.result.faults["equivocate"] += 1
                    other = self._twin_proposal(message, sign)
                    for target in core.validators.ids:
                        if target == node.node_id:
                            continue
                        if self.rng.random() < 0.7:
                            out.append(Send(target, message))
                        if self.rng.random() < 0.7:
                            out.append(Send(target, other))
                    continue
            if isinstance(message, Vote) and message.round == skip_vote_round:
                continue
            if isinstance(message, Vote) and isinstance(effect, Send) and stale_sign is not None:
                # Rotated: the same vote again, signed with the key of the epoch before.
                self.result.faults["stale_key"] += 1
                stale = Vote(
                    message.data, node.node_id, stale_sign(vote_sign_bytes(CHAIN_ID, message.data))
                )
                out.append(Send(effect.to, stale))
            if isinstance(message, Vote) and isinstance(effect, Send):
                if "double_vote" in kinds:
                    self.result.faults["double_vote"] += 1
                    fake = BlockInfo(
                        BlockId(hashlib.sha256(message.data.encode()).digest()),
                        message.round,
                        message.data.certified.height,
                    )
                    data = replace(message.data, certified=fake)
                    out.append(
                        Send(
                            effect.to,
                            Vote(data, node.node_id, sign(vote_sign_bytes(CHAIN_ID, data))),
                        )
                    )
                if "forge" in kinds:
                    self.result.faults["forge"] += 1
                    fake = BlockInfo(
                        BlockId(hashlib.sha256(b"forged" + message.data.encode()).digest()),
                        message.round,
                        message.data.certified.height,
                    )
                    data = replace(message.data, certified=fake)
                    # a reused signature (over other data) and a forged QC in a timeout
                    out.append(Send(effect.to, Vote(data, node.node_id, message.signature)))
                    forged_qc = QuorumCert(
                        data,
                        tuple(sorted((a, message.signature) for a in core.validators.ids))[
                            : core.validators.quorum
                        ],
                    )
                    out.append(
                        Broadcast(
                            Timeout(
                                core.epoch,
                                core.round,
                                forged_qc,
                                None,
                                None,
                                node.node_id,
                                sign(
                                    timeout_sign_bytes(
                                        CHAIN_ID, core.epoch, core.round, forged_qc.round
                                    )
                                ),
                            )
                        )
                    )
            out.append(effect)
        return out

    def _twin_proposal(self, proposal: Proposal, sign: Callable[[bytes], bytes]) -> Proposal:
        block = proposal.block
        other = Block(
            block.chain_id, block.epoch, block.round, block.height, block.parent_id,
            block.proposer, block.timestamp_ms, b"", block.qc,
        )  # fmt: skip
        return Proposal(
            other,
            proposal.last_tc,
            proposal.commit_qc,
            sign(proposal_sign_bytes(CHAIN_ID, other.id)),
        )

    def _stale_signer(self, node: SimNode) -> Callable[[bytes], bytes] | None:
        """A signer with the node's key of the previous epoch, if its key changed since."""
        core = node.core
        before = self.validator_sets.get(core.epoch - 1) if core is not None else None
        if core is None or before is None:
            return None
        old, new = before.public_key(node.node_id), core.validators.public_key(node.node_id)
        secret = self.keys.secret_of(old) if old is not None else None
        if secret is None or new is None or old == new:
            return None
        return lambda message: hmac.digest(secret, message, "sha256")

    def _forged_marker(self, node: SimNode, core: Core) -> bytes:
        """A marker for the next epoch naming a set no decision made: NEXT (or the current set)
        with a member's key swapped for one nobody decided, or a member left out, or the
        current set unchanged when nothing was decided."""
        state = self.state_of(node)
        decision = state.next
        members = list(decision.members if decision is not None else state.members)
        choice = self.rng.randrange(3)
        index = self.rng.randrange(len(members))
        if choice == 0 or (choice == 1 and len(members) == 1):
            member, _ = members[index]
            members[index] = (member, 10**9 + self.rng.randrange(10**6))
        elif choice == 1:
            del members[index]
        forged = (core.epoch + 1, tuple(members))
        if decision is not None and forged == (decision.epoch, decision.members):
            member, _ = members[index]
            members[index] = (member, 10**9)
        return encode_marker(core.epoch + 1, tuple(members))

    def _with_payload(
        self, proposal: Proposal, payload: bytes, sign: Callable[[bytes], bytes]
    ) -> Proposal:
        block = proposal.block
        other = Block(
            block.chain_id, block.epoch, block.round, block.height, block.parent_id,
            block.proposer, block.timestamp_ms, payload, block.qc,
        )  # fmt: skip
        return Proposal(
            other,
            proposal.last_tc,
            proposal.commit_qc,
            sign(proposal_sign_bytes(CHAIN_ID, other.id)),
        )

    def _junk_proposal(self, proposal: Proposal, sign: Callable[[bytes], bytes]) -> Proposal:
        block = proposal.block
        junk = self.rng.choice([b"junk/", b"p/" + b"x" * 80, bytes(self.rng.randbytes(12))])
        other = Block(
            block.chain_id, block.epoch, block.round, block.height, block.parent_id,
            block.proposer, block.timestamp_ms, junk, block.qc,
        )  # fmt: skip
        return Proposal(
            other,
            proposal.last_tc,
            proposal.commit_qc,
            sign(proposal_sign_bytes(CHAIN_ID, other.id)),
        )

    def _fork_proposal(
        self, core: Core, proposal: Proposal, sign: Callable[[bytes], bytes]
    ) -> Proposal | None:
        """After a TC, propose on the oldest uncommitted QC we know instead of the high QC."""
        block = proposal.block
        parent = core.block(block.parent_id)
        if parent is None or parent.id == core.root.id:
            return None
        grandparent = core.block(parent.parent_id)
        if grandparent is None:
            return None
        height = Height(grandparent.height + 1)
        stale = Block(
            block.chain_id, block.epoch, block.round, height, grandparent.id, block.proposer,
            max(block.timestamp_ms, grandparent.timestamp_ms + 1), b"", parent.qc,
        )  # fmt: skip
        return Proposal(
            stale,
            proposal.last_tc,
            proposal.commit_qc,
            sign(proposal_sign_bytes(CHAIN_ID, stale.id)),
        )


def describe(message: Message) -> str:
    match message:
        case Proposal():
            b = message.block
            short = b.id.hex()[:8]
            return f"Proposal(e={b.epoch} r={b.round} h={b.height} id={short} qc={b.qc.round})"
        case Vote():
            short = message.data.certified.id.hex()[:8]
            return f"Vote(e={message.data.epoch} r={message.round} by={message.author} id={short})"
        case Timeout():
            commit = message.commit_qc
            done = f"e{commit.epoch}/h{commit.commit.height}" if commit and commit.commit else "-"
            return (
                f"Timeout(e={message.epoch} r={message.round} by={message.author} "
                f"hqc={message.high_qc.round} cqc={done})"
            )
        case _:
            return type(message).__name__


def run_seed(config: SimConfig, seed: int, *, trace: bool = False) -> SimResult:
    return Simulation(config, seed, trace=trace).run()


__all__ = [
    "BYZANTINE_KINDS", "FAULT_KINDS", "Round", "SimConfig", "SimResult", "Simulation",
    "Timer", "run_seed",
]  # fmt: skip
