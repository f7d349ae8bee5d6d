"""The consensus core: 2-chain HotStuff (Jolteon / DiemBFT v4) as a pure state machine.

One entry point, `step(input) -> effects`, in the shape of etcd raft's Ready: the caller does
all I/O. Rules kept here:
- Effects are ordered. A `Persist` is durable before any `Send`/`Broadcast` after it in the same
  list (votes and timeouts are always preceded by the safety data they imply).
- Peer input never raises: a message from a non-member, with a bad signature or certificate, for
  another chain or epoch, for an old round or too far ahead, or a duplicate is dropped and counted
  in `dropped[reason]`. Our own bugs are assertions.
- Memory is bounded against a flooding peer: per-round vote and timeout maps are keyed by author
  (at most n entries) for a window of rounds, proposals waiting for a parent sit in a bounded
  buffer, the block tree holds at most `max_tree_blocks` uncommitted blocks and is pruned below
  the committed root.
- Timers are never cancelled: each carries its epoch and round, stale ones are ignored.
- Handlers read like the paper: on_proposal, on_vote, on_timeout, on_local_timeout,
  process_qc / process_tc (pacemaker: enter round k+1 on QC(k) or TC(k)), commit (2-chain rule).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, assert_never

from kledger.consensus.leader import REPUTATION_LAG_ROUNDS, CommittedRound, choose_leader
from kledger.consensus.messages import (
    MAX_EPOCH_PROOF_QCS,
    BlockRequest,
    BlockResponse,
    EpochProof,
    EpochRequest,
    Message,
    Proposal,
    Timeout,
    proposal_sign_bytes,
)
from kledger.consensus.safety import SafetyRules, consecutive
from kledger.consensus.types import (
    Block,
    BlockId,
    BlockInfo,
    Height,
    QuorumCert,
    Round,
    SafetyData,
    SafetyFloor,
    TimeoutCert,
    Vote,
    VoteData,
    epoch_root_qc,
    timeout_sign_bytes,
    vote_sign_bytes,
)
from kledger.consensus.validators import NodeId, ValidatorSet


class PayloadSource(Protocol):
    def next_payload(self, pending: Sequence[bytes]) -> bytes:
        """A batch for a new block; `pending` holds the payloads of the new block's uncommitted
        ancestors, so the source leaves out what is in flight. b"" means nothing to propose."""
        ...

    def is_valid_payload(self, payload: bytes, pending: Sequence[bytes]) -> bool: ...

    def has_payload(self, pending: Sequence[bytes]) -> bool:
        """Is anything waiting to be ordered that `pending` does not hold? (A pure query: with
        nothing, the node is idle and its rounds wait up to idle_heartbeat_ms.)"""
        ...

    def validator_set_after(self, block: Block) -> ValidatorSet | None:
        """Called on commit, in order. A set ends the epoch at `block`; the next epoch runs it."""
        ...

    def epoch_ending_qc(self, epoch: int) -> QuorumCert | None:
        """The commit certificate (of `epoch`'s set) that committed `epoch`'s last block, from
        the node's store, or None if that epoch has not ended here. Answers EpochRequest."""
        ...


@dataclass(frozen=True, slots=True)
class CoreConfig:
    round_timeout_ms: int = 1_000  # base; doubles per consecutive timeout
    max_round_timeout_ms: int = 30_000
    empty_block_delay_ms: int = 200
    # With nothing to order and no block carrying txs left to commit, a leader proposes only
    # this often (a heartbeat), and replicas wait that long plus a round timeout before they
    # time out; txs arriving (PayloadAvailable) end the wait at once. 0: never idle (a leader
    # proposes an empty block after empty_block_delay_ms in every round).
    idle_heartbeat_ms: int = 30_000
    max_rounds_ahead: int = 64  # votes and timeouts further ahead are dropped
    max_payload_bytes: int = 1024 * 1024
    max_blocks_per_response: int = 32
    max_pending_messages: int = 32  # proposals waiting for a parent, outstanding fetches
    max_tree_blocks: int = 1024  # uncommitted blocks held
    max_clock_skew_ms: int = 5_000  # a proposal's timestamp may be this far ahead of our clock
    # Leader reputation (consensus/leader.py): skip round-robin leaders whose rounds failed in
    # this many rounds of committed history. 0 = strict round-robin.
    leader_reputation_window_rounds: int = 0

    def __post_init__(self) -> None:
        for name in (
            "round_timeout_ms",
            "max_round_timeout_ms",
            "max_rounds_ahead",
            "max_payload_bytes",
            "max_blocks_per_response",
            "max_pending_messages",
            "max_tree_blocks",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"CoreConfig.{name} must be positive")
        for name in (
            "empty_block_delay_ms",
            "idle_heartbeat_ms",
            "max_clock_skew_ms",
            "leader_reputation_window_rounds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"CoreConfig.{name} must not be negative")
        if self.max_round_timeout_ms < self.round_timeout_ms:
            raise ValueError("CoreConfig.max_round_timeout_ms must be >= round_timeout_ms")


@dataclass(frozen=True, slots=True)
class RestoredState:
    safety: SafetyData | None
    root: Block  # last committed block (the genesis block on a fresh node)
    root_qc: QuorumCert  # the QC that committed root (the genesis QC for genesis)
    blocks: tuple[Block, ...] = ()  # uncommitted blocks saved by SaveBlock (any order)
    # Committed blocks just below root (any order; the last leader_reputation_window_rounds + 4
    # suffice). Only leader reputation reads them; without them a restarted node may name other
    # leaders than its peers for a while, which costs timeouts, never safety.
    recent_committed: tuple[Block, ...] = ()
    # The validator's safety record (docs/design.md §6), kept apart from the store the rest
    # comes from: the core never votes below it, and while its committed chain is below the
    # record's height (the store was rolled back) it follows without voting. None: no record.
    floor: SafetyFloor | None = None


# Timers (opaque to drivers, hashable; the core ignores stale ones).
@dataclass(frozen=True, slots=True)
class RoundTimer:
    epoch: int
    round: Round


@dataclass(frozen=True, slots=True)
class ProposeTimer:
    epoch: int
    round: Round


Timer = RoundTimer | ProposeTimer


# Inputs
@dataclass(frozen=True, slots=True)
class Deliver:
    sender: NodeId
    message: Message
    now_ms: int


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: Timer
    now_ms: int


@dataclass(frozen=True, slots=True)
class PayloadAvailable:
    now_ms: int


@dataclass(frozen=True, slots=True)
class SyncDone:
    root: Block
    root_qc: QuorumCert
    now_ms: int
    blocks: tuple[Block, ...] = ()  # the synced blocks (optional; read by leader reputation)


@dataclass(frozen=True, slots=True)
class Applied:
    """The driver applied every committed block up to `height`: stored, and its txs no longer
    held anywhere as waiting (etcd raft's Advance). Until then the core counts the payloads of
    blocks it committed as in flight, so no proposal or vote repeats their txs while the node
    is still executing them."""

    height: Height
    now_ms: int


Input = Deliver | TimerFired | PayloadAvailable | SyncDone | Applied


# Effects
@dataclass(frozen=True, slots=True)
class Persist:
    """Durable (synced) BEFORE any Send or Broadcast that follows it in the same effect list."""

    safety: SafetyData


@dataclass(frozen=True, slots=True)
class SaveBlock:
    """Store this uncommitted block durably, like Persist: before any Send or Broadcast that
    follows it in the same list. Hand saved blocks back in RestoredState.blocks; blocks at or
    below the committed height may be deleted. Without them, a quorum of crashed voters could
    lose the only copies of the block a lock points at (DiemBFT keeps its block tree on disk
    for the same reason)."""

    block: Block


@dataclass(frozen=True, slots=True)
class Send:
    to: NodeId
    message: Message


@dataclass(frozen=True, slots=True)
class Broadcast:
    """To every other validator of the current epoch."""

    message: Message


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: Timer
    at_ms: int


@dataclass(frozen=True, slots=True)
class Commit:
    """Newly committed blocks in height order; qc's commit info names blocks[-1], except at an
    epoch end, where blocks[-1] is the last block of the epoch and qc commits a descendant."""

    blocks: tuple[Block, ...]
    qc: QuorumCert


@dataclass(frozen=True, slots=True)
class RequestSync:
    """Fetch committed blocks root.height+1 .. target.commit.height from `peer`'s store, check
    the parent-id chain down from target.commit.id, apply them and feed SyncDone."""

    peer: NodeId
    target: QuorumCert


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Evidence: `author` signed two different proposals (or votes) for one round. Both messages
    are signed and checked, so anyone can verify the evidence. Reported once per author, round
    and kind; the driver logs it (no ordering rule: it is information, not protocol)."""

    author: NodeId
    round: Round
    first: Proposal | Vote
    second: Proposal | Vote


Effect = Persist | SaveBlock | Send | Broadcast | SetTimer | Commit | RequestSync | Equivocation

_VERIFIED_CACHE_ITEMS = 512
# Peers tracked per epoch table (asked, answered, held certificates per epoch): EpochRequest
# and EpochProof come from any admitted peer, members or not, so each table has a bound.
_EPOCH_PEERS = 64
_LEADER_CACHE_ROUNDS = 256


class Core:
    def __init__(  # noqa: PLR0917 (the driver contract fixes this signature)
        self,
        config: CoreConfig,
        chain_id: str,
        me: NodeId,
        validators: ValidatorSet,
        sign: Callable[[bytes], bytes],
        verify: Callable[[bytes, bytes, bytes], bool],
        payloads: PayloadSource,
        restored: RestoredState,
    ) -> None:
        if restored.root_qc.commit is None or restored.root_qc.commit.height < restored.root.height:
            raise ValueError("RestoredState.root_qc must commit RestoredState.root")
        self.config = config
        self.chain_id = chain_id
        self.me = me
        self._sign = sign
        self._verify = verify
        self._payloads = payloads
        self._validators = validators
        self._root = restored.root
        self._root_qc = restored.root_qc
        self._now_ms = 0
        self.view_changes = 0
        self.dropped: dict[str, int] = {}
        self._verified: set[QuorumCert] = set()
        # Committed rounds for leader reputation; rounds are distinct, so the newest
        # window + lag entries hold every block the rule can read.
        self._history: deque[CommittedRound] = deque(
            maxlen=config.leader_reputation_window_rounds + REPUTATION_LAG_ROUNDS
        )
        self._leaders: dict[int, NodeId] = {}  # round -> leader, for the current history
        self._record_committed(
            [b for b in restored.recent_committed if b.height < restored.root.height]
            + [restored.root]
        )
        # (height, payload) of blocks committed and not yet applied by the driver (Applied);
        # kept across an epoch change, whose last blocks may still be executing.
        self._unapplied: list[tuple[int, bytes]] = []
        # Catching up across epochs (EpochRequest/EpochProof): when we last asked, when we last
        # answered each peer, and epoch-ending certificates received ahead of the set that
        # checks them (epoch -> QC), held until we reach that epoch.
        self._epoch_requested_ms: dict[NodeId, int] = {}
        self._epoch_answered_ms: dict[NodeId, int] = {}
        # Kept per sender, so a liar's junk for an epoch cannot displace an honest peer's.
        self._epoch_backlog: dict[int, dict[NodeId, QuorumCert]] = {}
        self._fetch_turn = 0  # rotates the signer asked for a missing block (_some_signer)
        self._reset_epoch_state()
        epoch = validators.epoch
        # The unsigned QC that anchors this epoch: the genesis QC, or the one derived from the
        # committed block that ended the previous epoch.
        self._anchor_qc: QuorumCert | None = None
        if not restored.root_qc.signatures:
            self._anchor_qc = restored.root_qc
        elif restored.root_qc.epoch < epoch:
            self._anchor_qc = epoch_root_qc(restored.root, epoch)
        self._commit_qc: QuorumCert = restored.root_qc
        self._floor = restored.floor
        safety = restored.safety
        if safety is None or safety.epoch != epoch:
            safety = SafetyData(epoch, Round(0), Round(0), None, None, None)
        self._safety = self.make_safety_rules(self._floored(safety))
        start_qc = self._anchor_qc if self._anchor_qc is not None else restored.root_qc
        self._high_qc: QuorumCert = start_qc
        if safety.high_qc is not None and safety.high_qc.round > start_qc.round:
            self._high_qc = safety.high_qc
        self._last_tc: TimeoutCert | None = safety.last_tc
        last_tc_round = self._last_tc.round if self._last_tc is not None else 0
        self._start_round = Round(max(self._high_qc.round, last_tc_round) + 1)
        for block in sorted(restored.blocks, key=lambda b: b.height):
            parent = self._blocks.get(block.parent_id)
            if parent is not None and self._valid_child(block, parent):
                self._blocks[block.id] = block

    def make_safety_rules(self, data: SafetyData) -> SafetyRules:
        return SafetyRules(data)

    def _floored(self, safety: SafetyData) -> SafetyData:
        return safety if self._floor is None else self._floor.applied_to(safety)

    @property
    def following(self) -> bool:
        """True while the committed chain is behind the safety record (epoch or height): the
        store was rolled back, and the core only follows (processes certificates, commits,
        syncs) without voting, timing out or proposing, until it is back (docs/design.md §6)."""
        floor = self._floor
        return floor is not None and (
            self.epoch < floor.epoch or self._root.height < floor.committed_height
        )

    def _reset_epoch_state(self) -> None:
        self._round = Round(0)
        self._consecutive_timeouts = 0
        self._blocks: dict[BlockId, Block] = {self._root.id: self._root}
        self._votes: dict[Round, dict[NodeId, Vote]] = {}
        self._timeouts: dict[Round, dict[NodeId, Timeout]] = {}
        # Per round and proposer: leader reputation reads committed history, so the leader a
        # node sees for a round can change once it learns older commits, and the new leader's
        # first proposal is no equivocation of the old one's (n=6 seed 37 with reputation).
        self._seen_proposals: dict[Round, dict[NodeId, set[BlockId]]] = {}
        # The first correctly signed proposal of each round, and the rounds whose equivocation
        # (by proposal, by vote author) was reported: evidence needs the first message, and
        # reporting once bounds the signature checks an equivocator can make us do.
        self._first_proposals: dict[Round, dict[NodeId, Proposal]] = {}
        self._idle_round: Round | None = None  # the round whose timer includes the heartbeat
        # The latest proposal accepted (sent to a validator found behind) and to whom it was
        # sent, per round. A core that accepted none yet never waits idle: after a restart it
        # times out at once, so its peers find it behind and bring it up.
        self._latest_proposal: Proposal | None = None
        self._latest_round_seen = -1
        self._helped: dict[Round, set[NodeId]] = {}
        self._reported: dict[Round, set[tuple[str, NodeId]]] = {}
        self._pending: list[tuple[NodeId, Proposal]] = []
        self._requested: dict[BlockId, int] = {}
        self._sync_requested_ms: int | None = None
        self._proposed_round = Round(0)
        self._empty_ok_round = Round(0)
        self._my_timeout: Timeout | None = None

    # ---- read-only views -------------------------------------------------------------------

    @property
    def round(self) -> Round:
        return self._round

    @property
    def epoch(self) -> int:
        return self._validators.epoch

    @property
    def validators(self) -> ValidatorSet:
        return self._validators

    @property
    def committed_height(self) -> Height:
        return self._root.height

    @property
    def root(self) -> Block:
        return self._root

    @property
    def root_qc(self) -> QuorumCert:
        return self._root_qc

    @property
    def high_qc_round(self) -> Round:
        return self._high_qc.round

    @property
    def safety(self) -> SafetyData:
        return self._safety.data

    def block(self, block_id: BlockId) -> Block | None:
        """A block of the tree (the committed root or an uncommitted descendant)."""
        return self._blocks.get(block_id)

    @property
    def high_qc(self) -> QuorumCert:
        return self._high_qc

    def leader_of(self, round: int) -> NodeId:
        """Round-robin over the validator set, one leader per round; with
        `leader_reputation_window_rounds`, recently failed leaders are skipped (leader.py)."""
        leader = self._leaders.get(round)
        if leader is None:
            validators = self._validators
            leader = choose_leader(
                validators.ids,
                validators.quorum,
                self._history,
                epoch=validators.epoch,
                round=round,
                window_rounds=self.config.leader_reputation_window_rounds,
            )
            if len(self._leaders) >= _LEADER_CACHE_ROUNDS:
                self._leaders.clear()
            self._leaders[round] = leader
        return leader

    def _record_committed(self, blocks: Iterable[Block]) -> None:
        """Remember committed blocks (in height order) for leader reputation."""
        if self.config.leader_reputation_window_rounds == 0:
            return
        for block in sorted(blocks, key=lambda b: b.height):
            if self._history and (block.epoch, block.round) <= (
                self._history[-1].epoch,
                self._history[-1].round,
            ):
                continue  # already recorded (a restored or synced block seen twice)
            self._history.append(CommittedRound(block.epoch, block.round, block.qc.round))
            self._leaders.clear()

    # ---- entry points ----------------------------------------------------------------------

    def start(self, now_ms: int) -> list[Effect]:
        self._now_ms = now_ms
        out: list[Effect] = []
        self._enter_round(self._start_round, via_tc=False, out=out)
        return out

    def step(self, event: Input) -> list[Effect]:
        out: list[Effect] = []
        self._now_ms = max(self._now_ms, event.now_ms)
        match event:
            case Deliver():
                self._on_message(event.sender, event.message, out)
            case TimerFired():
                self._on_timer(event.timer, out)
            case PayloadAvailable():
                if self._empty_ok_round != self._round:
                    self._empty_ok_round = self._round
                if self._idle_round == self._round:
                    # Work arrived in an idle round: from now on a silent leader costs one
                    # ordinary round timeout, not a heartbeat (timers are never cancelled; the
                    # long one is ignored once the round has moved on).
                    self._idle_round = None
                    out.append(
                        SetTimer(
                            RoundTimer(self.epoch, self._round),
                            self._now_ms + self._round_timeout_ms(),
                        )
                    )
                self._try_propose(out)
            case SyncDone():
                self._on_sync_done(event.root, event.root_qc, event.blocks, out)
            case Applied():
                self._unapplied = [(h, p) for h, p in self._unapplied if h > event.height]
            case _:
                assert_never(event)
        return out

    # ---- helpers ---------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _report(self, evidence: Equivocation, out: list[Effect]) -> None:
        kind = "proposal" if isinstance(evidence.second, Proposal) else "vote"
        reported = self._reported.setdefault(evidence.round, set())
        if (kind, evidence.author) not in reported:
            reported.add((kind, evidence.author))
            out.append(evidence)

    def _round_timeout_ms(self) -> int:
        doubled = self.config.round_timeout_ms << min(self._consecutive_timeouts, 20)
        return min(doubled, self.config.max_round_timeout_ms)

    def _send(self, to: NodeId, message: Message, out: list[Effect]) -> None:
        if to == self.me:
            self._on_message(self.me, message, out)
        else:
            out.append(Send(to, message))

    def _pending_payloads(self, tip: Block) -> list[bytes]:
        """Payloads in flight below a new block on `tip`: `tip` and its uncommitted ancestors
        (the root excluded), then the blocks committed but not yet applied (see Applied)."""
        payloads: list[bytes] = []
        block: Block | None = tip
        while block is not None and block.id != self._root.id:
            payloads.append(block.payload)
            block = self._blocks.get(block.parent_id)
        payloads += [payload for _, payload in self._unapplied]
        return payloads

    def _committed(self, blocks: Sequence[Block], qc: QuorumCert, out: list[Effect]) -> None:
        """Emit the Commit of `blocks`; their payloads stay in flight until Applied."""
        out.append(Commit(tuple(blocks), qc))
        self._unapplied += [(b.height, b.payload) for b in blocks if b.payload]
        self._record_committed(blocks)

    # ---- certificates ----------------------------------------------------------------------

    def verify_qc(self, qc: QuorumCert) -> bool:
        """Whether `qc` is a quorum certificate of the current epoch (signatures checked). The
        node's block sync uses it to accept a peer's committed blocks."""
        return self._valid_qc(qc)

    def _valid_qc(self, qc: QuorumCert) -> bool:
        if qc in self._verified or qc == self._anchor_qc:
            return True
        if qc.epoch != self.epoch or not qc.signatures:
            return False
        sign_bytes = vote_sign_bytes(self.chain_id, qc.data)
        if not self._valid_signers(
            [(author, sign_bytes, signature) for author, signature in qc.signatures]
        ):
            return False
        if len(self._verified) >= _VERIFIED_CACHE_ITEMS:
            self._verified.clear()
        self._verified.add(qc)
        return True

    def _valid_tc(self, tc: TimeoutCert) -> bool:
        if tc.epoch != self.epoch or tc.high_qc.round != tc.max_high_qc_round:
            return False
        if tc.high_qc.epoch != self.epoch or not self._valid_qc(tc.high_qc):
            return False
        return self._valid_signers(
            [
                (author, timeout_sign_bytes(self.chain_id, tc.epoch, tc.round, qc_round), signature)
                for author, qc_round, signature in tc.entries
            ]
        )

    def _valid_signers(self, items: list[tuple[NodeId, bytes, bytes]]) -> bool:
        """A quorum of distinct members, sorted by id, each signature valid."""
        authors = [author for author, _, _ in items]
        if len(authors) < self._validators.quorum or authors != sorted(set(authors)):
            return False
        for author, message, signature in items:
            key = self._validators.public_key(author)
            if key is None or not self._verify(key, message, signature):
                return False
        return True

    def _valid_signature(self, author: NodeId, message: bytes, signature: bytes) -> bool:
        key = self._validators.public_key(author)
        return key is not None and self._verify(key, message, signature)

    def committed_by(self, qc: QuorumCert) -> BlockInfo | None:
        """The 2-chain commit rule: a QC on B with B.round == B.parent.round + 1 commits B's
        parent. Voters set the commit info only in that case, so it is read from the QC."""
        return qc.commit

    # ---- pacemaker -------------------------------------------------------------------------

    def _process_qc(self, qc: QuorumCert, source: NodeId | None, out: list[Effect]) -> None:
        """A verified QC: raise the high QC, commit what it commits, enter round qc.round + 1."""
        if qc.round > self._high_qc.round:
            self._high_qc = qc
        committed = self.committed_by(qc)
        if committed is not None and committed.height > self._root.height:
            if committed.height > self._commit_height():
                self._commit_qc = qc
            self._try_commit(source, out)
        if qc.epoch == self.epoch and qc.round >= self._round:
            self._enter_round(Round(qc.round + 1), via_tc=False, out=out)

    def _commit_height(self) -> int:
        committed = self.committed_by(self._commit_qc)
        return committed.height if committed is not None else -1

    def _process_tc(self, tc: TimeoutCert, out: list[Effect]) -> None:
        if tc.high_qc.round > self._high_qc.round:
            self._high_qc = tc.high_qc
        if self._last_tc is None or tc.round > self._last_tc.round:
            self._last_tc = tc
        if tc.round >= self._round:
            self._enter_round(Round(tc.round + 1), via_tc=True, out=out)

    def _enter_round(self, round: Round, *, via_tc: bool, out: list[Effect]) -> None:
        if round <= self._round:
            return
        self._round = round
        if via_tc:
            self._consecutive_timeouts += 1
            self.view_changes += 1
        else:
            self._consecutive_timeouts = 0
        tables = (
            self._votes,
            self._timeouts,
            self._seen_proposals,
            self._first_proposals,
            self._reported,
            self._helped,
        )
        for table in tables:
            for old in [r for r in table if r < round - 1]:
                del table[old]
        timeout_ms = self._round_timeout_ms()
        self._idle_round = None
        if self._is_idle():
            # Nothing to wait for: the leader proposes at the heartbeat, or as soon as txs come.
            self._idle_round = round
            timeout_ms += self.config.idle_heartbeat_ms
        out.append(SetTimer(RoundTimer(self.epoch, round), self._now_ms + timeout_ms))
        self._try_propose(out)
        self._retry_pending(out)

    def _is_idle(self) -> bool:
        """No txs to order and no block carrying txs waiting for descendants to commit — and
        not behind: a node missing the block its high QC names, or one its commit QC commits,
        or still fetching blocks, times out as usual so that its peers bring it up (waiting for
        the heartbeat instead once cost a restarted node 30 s of an idle cluster)."""
        if not self.config.idle_heartbeat_ms or self._latest_proposal is None:
            return False
        tip = self._blocks.get(self._high_qc.block_id)
        fetching = any(
            self._now_ms - asked_ms < self.config.round_timeout_ms
            for asked_ms in self._requested.values()
        )
        if tip is None or fetching or self._commit_height() > self._root.height:
            return False
        pending = self._pending_payloads(tip)
        return not any(pending) and not self._payloads.has_payload(pending)

    def _on_timer(self, timer: Timer, out: list[Effect]) -> None:
        if timer.epoch != self.epoch or timer.round != self._round:
            return  # stale: drivers never cancel timers
        match timer:
            case RoundTimer():
                self._on_local_timeout(out)
                out.append(
                    SetTimer(
                        RoundTimer(self.epoch, self._round),
                        self._now_ms + self._round_timeout_ms(),
                    )
                )
            case ProposeTimer():
                self._empty_ok_round = self._round
                self._try_propose(out)
            case _:
                assert_never(timer)

    def _on_local_timeout(self, out: list[Effect]) -> None:
        """docs/design.md §4: on local timeout in round r, if safe_to_timeout: raise
        highest_vote_round to r, persist, broadcast Timeout(r, high_qc). A repeated timeout in
        the same round re-sends the stored message (retransmission under loss)."""
        round = self._round
        if self._my_timeout is not None and self._my_timeout.round == round:
            out.append(Broadcast(self._my_timeout))
            return
        if not self._validators.contains(self.me):
            return  # a follower outside the set has no timeout to sign
        if self.following:
            self._drop("following")
            return
        if not self._safety.is_safe_to_timeout(round, self._high_qc.round, self._last_tc):
            self._drop("unsafe_timeout")
            return
        out.append(Persist(self._safety.record_timeout(round, self._high_qc, self._last_tc)))
        sign_bytes = timeout_sign_bytes(self.chain_id, self.epoch, round, self._high_qc.round)
        timeout = Timeout(
            self.epoch,
            round,
            self._high_qc,
            self._last_tc,
            self._commit_qc,
            self.me,
            self._sign(sign_bytes),
        )
        self._my_timeout = timeout
        out.append(Broadcast(timeout))
        self._on_message(self.me, timeout, out)

    # ---- leader ----------------------------------------------------------------------------

    def _try_propose(self, out: list[Effect]) -> None:
        round = self._round
        if self.leader_of(round) != self.me or self._proposed_round >= round:
            return
        if self.following:
            return  # a follower proposes nothing (it may not vote for its own block)
        if round <= self._safety.data.highest_vote_round:
            # We voted in this round (for our own proposal, before a restart): a new proposal
            # would be a second one for the round (as Diem's safety rules refuse to sign).
            return
        parent = self._blocks.get(self._high_qc.block_id)
        if parent is None:
            self._request_block(self._high_qc.block_id, self._some_signer(self._high_qc), out)
            return
        tc: TimeoutCert | None = None
        if not consecutive(round, self._high_qc.round):
            if self._last_tc is None or not consecutive(round, self._last_tc.round):
                return  # nothing lets this round extend the high QC; wait for the round timer
            tc = self._last_tc
        pending = self._pending_payloads(parent)
        payload = self._payloads.next_payload(pending)
        assert len(payload) <= self.config.max_payload_bytes, "payload source exceeded the limit"
        if not payload and not any(pending) and self._empty_ok_round != round:
            # Nothing to order and nothing in flight to commit: wait a little for transactions,
            # or, idle, until the heartbeat (PayloadAvailable proposes at once).
            idle = self.config.idle_heartbeat_ms and not self._payloads.has_payload(pending)
            delay_ms = self.config.idle_heartbeat_ms if idle else self.config.empty_block_delay_ms
            out.append(SetTimer(ProposeTimer(self.epoch, round), self._now_ms + delay_ms))
            return
        block = Block(
            chain_id=self.chain_id,
            epoch=self.epoch,
            round=round,
            height=Height(parent.height + 1),
            parent_id=parent.id,
            proposer=self.me,
            timestamp_ms=max(self._now_ms, parent.timestamp_ms + 1),
            payload=payload,
            qc=self._high_qc,
        )
        proposal = Proposal(
            block, tc, self._commit_qc, self._sign(proposal_sign_bytes(self.chain_id, block.id))
        )
        self._proposed_round = round
        # Our own vote first: its Persist (with the block's SaveBlock) is durable before the
        # proposal leaves, so a restart can never propose this round again (see above).
        self._on_message(self.me, proposal, out)
        if self._safety.data.highest_vote_round < round:
            # Our own check refused the payload (a payload source that broke its contract, as
            # the nemesis's junk proposer does), so no vote recorded the round: record it
            # before the proposal leaves (found by the nemesis: restarted honest in the same
            # round, that node proposed it again).
            out.append(Persist(self._safety.record_proposal(round, self._high_qc, self._last_tc)))
        out.append(Broadcast(proposal))

    def _some_signer(self, qc: QuorumCert) -> NodeId | None:
        """A signer of `qc` other than us, to ask for what it certifies: the next one at each
        call. Always the first, a fetch whose block that signer no longer held (it lost its
        saved blocks in a rollback) was retried against it forever while another signer held
        the only copy (the simulator found it: 4 nodes, seed 40, all faults)."""
        others = [author for author, _ in qc.signatures if author != self.me]
        if not others:
            return None
        self._fetch_turn += 1
        return others[self._fetch_turn % len(others)]

    # ---- messages --------------------------------------------------------------------------

    def _on_message(self, sender: NodeId, message: Message, out: list[Effect]) -> None:
        # Epoch catch-up is open to every peer the transport admitted, member of our set or
        # not: a joiner (a follower outside the set) and a node behind a membership change
        # hear the current epoch only from nodes their own set does not name, and the answers
        # check themselves (each certificate against its own epoch's set). Dropping these as
        # non-members kept a spare added epochs after genesis from ever catching up (the
        # simulator found it: tests/test_sim.py, joiner regression).
        if isinstance(message, EpochRequest):
            self._on_epoch_request(sender, message, out)
            return
        if isinstance(message, EpochProof):
            self._on_epoch_proof(sender, message, out)
            return
        if isinstance(message, Proposal):
            epoch = message.block.epoch
        elif isinstance(message, Vote):
            epoch = message.data.epoch
        else:
            epoch = message.epoch
        if epoch != self.epoch:
            self._on_other_epoch(sender, message, epoch, out)
            return
        if not self._validators.contains(sender):
            self._drop("not_member")
            return
        match message:
            case Proposal():
                self._on_proposal(sender, message, out)
            case Vote():
                self._on_vote(sender, message, out)
            case Timeout():
                self._on_timeout(sender, message, out)
            case BlockRequest():
                self._on_block_request(sender, message, out)
            case BlockResponse():
                self._on_block_response(sender, message, out)
            case _:
                assert_never(message)

    def _on_other_epoch(
        self, sender: NodeId, message: Message, epoch: int, out: list[Effect]
    ) -> None:
        """Drop it, but a message from the next epoch carries the commit certificate of the
        block that ended ours: if we can check it, commit up to there and take the message. A
        message from an earlier epoch shows its sender behind: send it how that epoch ended."""
        self._drop("epoch")
        if epoch < self.epoch:
            # Unasked, as _help_behind does within an epoch: when the only nodes that committed
            # an epoch's end were removed by it, they follow silently in the next epoch and no
            # later-epoch message would ever reach the rest to make them ask (the simulator
            # found it: 4 nodes, an added node removed again, tests/test_sim.py).
            self._answer_epoch(sender, epoch, out, asked=False)
            return
        commit_qc = message.commit_qc if isinstance(message, Proposal | Timeout) else None
        if (
            epoch == self.epoch + 1
            and commit_qc is not None
            and commit_qc.epoch == self.epoch
            and self._valid_qc(commit_qc)
        ):
            self._process_qc(commit_qc, sender, out)
            if self.epoch == epoch:
                self.dropped["epoch"] -= 1
                self._on_message(sender, message, out)
            return
        # Further ahead, or nothing here proves our epoch's end: ask the sender for the
        # certificates that ended our epoch and the ones after it — each peer at most once a
        # round timeout (every message of a later epoch would ask again, and a liar that floods
        # later-epoch junk must not keep the honest peers from being asked).
        asked = self._epoch_requested_ms.get(sender)
        if asked is None or self._now_ms - asked >= self.config.round_timeout_ms:
            if len(self._epoch_requested_ms) >= _EPOCH_PEERS:
                self._epoch_requested_ms.clear()  # forget old asks: at worst one more request
            self._epoch_requested_ms[sender] = self._now_ms
            out.append(Send(sender, EpochRequest(self.epoch, self.me)))

    def _on_epoch_request(self, sender: NodeId, request: EpochRequest, out: list[Effect]) -> None:
        """A peer in an older epoch asks how its epoch (and the next ones) ended: send the
        certificates we have, oldest first, at most one answer per peer a round timeout."""
        if sender != request.author:
            self._drop("sender_mismatch")
            return
        if request.epoch >= self.epoch:
            self._drop("epoch")
            return
        self._answer_epoch(sender, request.epoch, out, asked=True)

    def _answer_epoch(self, sender: NodeId, since: int, out: list[Effect], *, asked: bool) -> None:
        """Send `sender` the certificates that ended epochs `since` .. (at most a page), at most
        once per peer a round timeout. Unasked (a help), what is not sent is not counted: the
        message that prompted it was counted already."""
        answered = self._epoch_answered_ms.get(sender)
        if answered is not None and self._now_ms - answered < self.config.round_timeout_ms:
            if asked:
                self._drop("too_frequent")
            return
        qcs: list[QuorumCert] = []
        for epoch in range(since, min(self.epoch, since + MAX_EPOCH_PROOF_QCS)):
            qc = self._epoch_ending_qc(epoch)
            if qc is None:
                break
            qcs.append(qc)
        if not qcs:
            if asked:
                self._drop("unknown_epoch")
            return
        if len(self._epoch_answered_ms) >= _EPOCH_PEERS:
            self._epoch_answered_ms.clear()  # forget old answers: at worst one more answer
        self._epoch_answered_ms[sender] = self._now_ms
        more = since + len(qcs) < self.epoch
        out.append(Send(sender, EpochProof(since, tuple(qcs), more, self.me)))

    def _epoch_ending_qc(self, epoch: int) -> QuorumCert | None:
        if epoch == self.epoch - 1 and self._root_qc.epoch == epoch and self._root_qc.signatures:
            return self._root_qc  # the certificate that opened this epoch (no store read)
        return self._payloads.epoch_ending_qc(epoch)

    def _on_epoch_proof(self, sender: NodeId, proof: EpochProof, out: list[Effect]) -> None:
        """Certificates that ended epochs from `proof.epoch` on: take the one for our epoch
        (checked with our set: it commits our epoch's last block, syncing it if need be, and
        the next epoch starts), keep the later ones until we reach their epochs."""
        if sender != proof.author:
            self._drop("sender_mismatch")
            return
        useful = False
        for offset, qc in enumerate(proof.qcs):
            epoch = proof.epoch + offset
            if qc.epoch != epoch or epoch < self.epoch:
                continue
            if epoch <= self.epoch + MAX_EPOCH_PROOF_QCS:
                held = self._epoch_backlog.setdefault(epoch, {})
                if sender in held or len(held) < _EPOCH_PEERS:
                    held[sender] = qc
                    useful = True
        if not useful:
            self._drop("epoch")
            return
        self._take_epoch_backlog(sender, out)

    def _take_epoch_backlog(self, source: NodeId | None, out: list[Effect]) -> None:
        """Process the held certificate that ends the current epoch, if any (called again when
        the next epoch starts, so a page of them carries a node across many epochs)."""
        for stale in [e for e in self._epoch_backlog if e < self.epoch]:
            del self._epoch_backlog[stale]
        held = self._epoch_backlog.pop(self.epoch, {})
        for sender, qc in held.items():
            if self._valid_qc(qc):
                self._process_qc(qc, source if source is not None else sender, out)
                return
            self._drop("bad_certificate")

    def _check_certificates(
        self,
        qcs: Sequence[QuorumCert | None],
        tc: TimeoutCert | None,
        source: NodeId,
        out: list[Effect],
    ) -> bool:
        for qc in qcs:
            if qc is not None and qc.epoch == self.epoch and not self._valid_qc(qc):
                self._drop("bad_certificate")
                return False
        if tc is not None and not self._valid_tc(tc):
            self._drop("bad_certificate")
            return False
        epoch = self.epoch
        for qc in qcs:
            if qc is not None and qc.epoch == self.epoch:
                self._process_qc(qc, source, out)
        if self.epoch != epoch:
            # A QC committed the epoch's end and the next epoch started: the rest of the message
            # (its TC, its round, its vote) belongs to the epoch that ended. Taking its TC here
            # once set an old-epoch high QC and round in the new epoch, which no peer's timeout
            # could then back (a liveness failure the simulator found: 4 nodes, seed 187).
            self._drop("epoch")
            return False
        if tc is not None:
            self._process_tc(tc, out)
        return True

    def _on_proposal(self, sender: NodeId, proposal: Proposal, out: list[Effect]) -> None:
        """Upon a proposal from leader(r): check it, process its certificates, then vote if
        safe_to_vote (docs/design.md §4)."""
        block = proposal.block
        if block.chain_id != self.chain_id:
            self._drop("chain")
            return
        if sender != block.proposer:
            self._drop("sender_mismatch")
            return
        if self.leader_of(block.round) != block.proposer:
            self._drop("not_leader")
            return
        if block.round < self._round:
            self._drop("old_round")
            return
        seen = self._seen_proposals.setdefault(block.round, {}).setdefault(block.proposer, set())
        if block.id in seen:
            self._drop("duplicate")
            return
        if len(seen) >= 2:  # an equivocating leader gets no further hearing this round
            self._drop("equivocation")
            return
        if not self._valid_signature(
            block.proposer, proposal_sign_bytes(self.chain_id, block.id), proposal.signature
        ):
            self._drop("bad_signature")
            return
        first = self._first_proposals.setdefault(block.round, {}).setdefault(
            block.proposer, proposal
        )
        if first.block.id != block.id:
            self._report(Equivocation(block.proposer, block.round, first, proposal), out)
        if block.qc.epoch != self.epoch or block.qc.block_id != block.parent_id:
            self._drop("invalid_block")
            return
        if proposal.last_tc is not None and not consecutive(block.round, proposal.last_tc.round):
            self._drop("invalid_block")
            return
        if not self._check_certificates(
            (block.qc, proposal.commit_qc), proposal.last_tc, sender, out
        ):
            return
        seen.add(block.id)
        if block.round != self._round:
            self._drop("old_round" if block.round < self._round else "future_round")
            return
        self._accept_proposal(sender, proposal, out)

    def _accept_proposal(self, sender: NodeId, proposal: Proposal, out: list[Effect]) -> None:
        block = proposal.block
        if block.round >= self._latest_round_seen:
            self._latest_round_seen = block.round
            self._latest_proposal = proposal
        parent = self._blocks.get(block.parent_id)
        if parent is None:
            if block.height <= self._root.height:
                self._drop("invalid_block")
                return
            if len(self._pending) >= self.config.max_pending_messages:
                self._drop("buffer_full")
                return
            self._pending.append((sender, proposal))
            self._request_block(block.parent_id, sender, out)
            return
        if not self._valid_child(block, parent):
            self._drop("invalid_block")
            return
        if block.timestamp_ms > self._now_ms + self.config.max_clock_skew_ms:
            self._drop("timestamp_ahead")
            return
        if len(block.payload) > self.config.max_payload_bytes or not (
            self._payloads.is_valid_payload(block.payload, self._pending_payloads(parent))
        ):
            self._drop("invalid_payload")
            return
        if not self._insert(block, out):
            return
        self._vote(block, proposal.last_tc, out)

    def _valid_child(self, block: Block, parent: Block) -> bool:
        return (
            block.epoch == self.epoch
            and block.chain_id == self.chain_id
            and block.parent_id == parent.id
            and block.qc.block_id == parent.id
            and block.height == parent.height + 1
            and block.round > block.qc.round
            and block.timestamp_ms > parent.timestamp_ms
        )

    def _insert(self, block: Block, out: list[Effect]) -> bool:
        if block.id in self._blocks:
            return True
        if len(self._blocks) > self.config.max_tree_blocks:
            self._drop("tree_full")
            return False
        self._blocks[block.id] = block
        out.append(SaveBlock(block))
        return True

    def _vote(self, block: Block, tc: TimeoutCert | None, out: list[Effect]) -> None:
        """safe_to_vote -> record and persist, then send Vote(B, commit info) to leader(r+1).
        Asked twice in a round, re-send the stored vote, never a new one."""
        round, qc_round = block.round, block.qc.round
        last = self._safety.data.last_vote
        next_leader = self.leader_of(round + 1)
        if last is not None and last.round == round and last.data.certified.id == block.id:
            self._send(next_leader, last, out)
            return
        if not self._validators.contains(self.me):
            return  # a follower outside the set (a joiner, a removed node) has no vote to give
        if self.following:
            self._drop("following")
            return
        if not self._safety.is_safe_to_vote(round, qc_round, tc):
            self._drop("unsafe_vote")
            return
        commit = block.qc.data.certified if consecutive(round, qc_round) else None
        data = VoteData(self.epoch, block.info, block.qc.data.certified, commit)
        vote = Vote(data, self.me, self._sign(vote_sign_bytes(self.chain_id, data)))
        out.append(Persist(self._safety.record_vote(vote, qc_round, self._high_qc, self._last_tc)))
        self._send(next_leader, vote, out)

    def _on_vote(self, sender: NodeId, vote: Vote, out: list[Effect]) -> None:
        """Votes for round r go to leader(r+1); q matching votes form QC(r)."""
        round = vote.round
        if sender != vote.author:
            self._drop("sender_mismatch")
            return
        if round + 1 < self._round:
            self._drop("old_round")
            return
        if round > self._round + self.config.max_rounds_ahead:
            self._drop("future_round")
            return
        if self.leader_of(round + 1) != self.me:
            self._drop("not_leader")
            return
        votes = self._votes.setdefault(round, {})
        previous = votes.get(vote.author)
        if previous == vote:
            self._drop("duplicate")
            return
        if previous is not None and ("vote", vote.author) in self._reported.get(round, ()):
            self._drop("equivocation")  # already reported: no more signature work for it
            return
        if not self._valid_signature(
            vote.author, vote_sign_bytes(self.chain_id, vote.data), vote.signature
        ):
            self._drop("bad_signature")
            return
        if previous is not None:  # a second, correctly signed vote of the same round
            self._drop("equivocation")
            self._report(Equivocation(vote.author, round, previous, vote), out)
            return
        votes[vote.author] = vote
        matching = sorted((v.author, v.signature) for v in votes.values() if v.data == vote.data)
        if len(matching) == self._validators.quorum:
            qc = QuorumCert(vote.data, tuple(matching))
            self._verified.add(qc)
            self._process_qc(qc, None, out)
            self._try_propose(out)

    def _on_timeout(self, sender: NodeId, timeout: Timeout, out: list[Effect]) -> None:
        """Upon Timeout(r): process its certificates; f+1 timeouts for our round make us time
        out too (so one slow node cannot hold a round); q form TC(r) and enter round r+1."""
        if sender != timeout.author:
            self._drop("sender_mismatch")
            return
        if timeout.round > self._round + self.config.max_rounds_ahead and (
            timeout.last_tc is None or timeout.last_tc.round + 1 != timeout.round
        ):
            self._drop("future_round")
            return
        if timeout.high_qc.epoch != self.epoch:  # the signed high-QC round must be backed
            self._drop("bad_certificate")
            return
        if sender != self.me:
            if not self._valid_signature(
                timeout.author, timeout.sign_bytes(self.chain_id), timeout.signature
            ):
                self._drop("bad_signature")
                return
            if not self._check_certificates(
                (timeout.high_qc, timeout.commit_qc), timeout.last_tc, sender, out
            ):
                return
        if timeout.high_qc.round < self._high_qc.round:
            # Its sender has not seen our highest QC (it restarted or was cut off, maybe in the
            # very round we are in): bring it up, whatever the round of its timeout.
            self._help_behind(sender, out)
        if timeout.round < self._round:
            self._drop("old_round")
            return
        if timeout.round > self._round + self.config.max_rounds_ahead:
            self._drop("future_round")
            return
        table = self._timeouts.setdefault(timeout.round, {})
        if timeout.author in table:
            self._drop("duplicate")
            return
        table[timeout.author] = timeout
        if (
            timeout.round == self._round
            and len(table) > self._validators.max_faulty
            and self.me not in table
        ):
            self._on_local_timeout(out)
        if len(table) == self._validators.quorum:
            entries = tuple(
                sorted((t.author, t.high_qc.round, t.signature) for t in table.values())
            )
            high_qc = max((t.high_qc for t in table.values()), key=lambda qc: qc.round)
            self._process_tc(TimeoutCert(self.epoch, timeout.round, entries, high_qc), out)

    def _help_behind(self, sender: NodeId, out: list[Effect]) -> None:
        """A validator's timeout shows it behind our highest QC (it restarted, or was cut off):
        send it the latest proposal we accepted, whose certificates bring it up (as Aptos helps
        a remote behind with its sync info). Without it, a node behind in an idle cluster would
        wait for the next heartbeat. Once per peer and round of ours: bounded work."""
        if sender == self.me or self._latest_proposal is None:
            return
        helped = self._helped.setdefault(self._round, set())
        if sender not in helped:
            helped.add(sender)
            out.append(Send(sender, self._latest_proposal))

    # ---- block fetch and sync --------------------------------------------------------------

    def _request_block(self, block_id: BlockId, peer: NodeId | None, out: list[Effect]) -> None:
        if peer is None or peer == self.me:
            return
        asked = self._requested.get(block_id)
        if asked is not None and self._now_ms - asked < self.config.round_timeout_ms:
            return
        if asked is None and len(self._requested) >= self.config.max_pending_messages:
            # Forget fetches that went unanswered for a round timeout; they may be asked again.
            horizon = self._now_ms - self.config.round_timeout_ms
            self._requested = {b: at for b, at in self._requested.items() if at > horizon}
            if len(self._requested) >= self.config.max_pending_messages:
                self._drop("buffer_full")
                return
        self._requested[block_id] = self._now_ms
        count = self.config.max_blocks_per_response
        request = BlockRequest(self.epoch, block_id, count, self.me, b"")
        request = BlockRequest(
            self.epoch, block_id, count, self.me, self._sign(request.sign_bytes(self.chain_id))
        )
        out.append(Send(peer, request))

    def _on_block_request(self, sender: NodeId, request: BlockRequest, out: list[Effect]) -> None:
        if (
            not self._valid_signature(sender, request.sign_bytes(self.chain_id), request.signature)
            or sender != request.author
        ):
            self._drop("bad_signature")
            return
        blocks: list[Block] = []
        block = self._blocks.get(request.block_id)
        limit = min(request.count, self.config.max_blocks_per_response)
        while block is not None and len(blocks) < limit:
            blocks.append(block)
            block = self._blocks.get(block.parent_id) if block.id != self._root.id else None
        if not blocks:
            self._drop("unknown_block")
            return
        response = BlockResponse(self.epoch, request.block_id, tuple(blocks), self.me, b"")
        signature = self._sign(response.sign_bytes(self.chain_id))
        out.append(
            Send(
                sender,
                BlockResponse(self.epoch, request.block_id, tuple(blocks), self.me, signature),
            )
        )

    def _on_block_response(
        self, sender: NodeId, response: BlockResponse, out: list[Effect]
    ) -> None:
        if response.block_id not in self._requested:
            self._drop("unsolicited")
            return
        if sender != response.author or not self._valid_signature(
            sender, response.sign_bytes(self.chain_id), response.signature
        ):
            self._drop("bad_signature")
            return
        blocks = response.blocks
        if (
            not blocks
            or blocks[0].id != response.block_id
            or any(blocks[i + 1].id != blocks[i].parent_id for i in range(len(blocks) - 1))
        ):
            self._drop("invalid_block")
            return
        del self._requested[response.block_id]
        for block in reversed(blocks):
            if block.id in self._blocks:
                continue
            parent = self._blocks.get(block.parent_id)
            if parent is None:
                if block.height > self._root.height + 1:
                    self._request_block(block.parent_id, sender, out)
                    return
                continue
            if not self._valid_child(block, parent) or not self._valid_qc(block.qc):
                self._drop("invalid_block")
                return
            if not self._insert(block, out):
                return
            if block.qc.round > self._high_qc.round:
                self._high_qc = block.qc
        self._try_commit(sender, out)
        self._try_propose(out)
        self._retry_pending(out)

    def _retry_pending(self, out: list[Effect]) -> None:
        if not self._pending:
            return
        waiting, self._pending = self._pending, []
        for sender, proposal in waiting:
            block = proposal.block
            if block.round != self._round:
                continue  # too late to vote; its certificates were already processed
            if block.parent_id in self._blocks:
                self._accept_proposal(sender, proposal, out)
            else:
                self._pending.append((sender, proposal))

    def _on_sync_done(
        self, root: Block, root_qc: QuorumCert, blocks: Sequence[Block], out: list[Effect]
    ) -> None:
        self._sync_requested_ms = None
        if root.height <= self._root.height:
            return
        self._record_committed(
            [b for b in blocks if self._root.height < b.height < root.height] + [root]
        )
        assert root_qc.commit is not None and root_qc.commit.height >= root.height, "bad SyncDone"
        next_set = self._payloads.validator_set_after(root)
        if next_set is not None:  # the driver stops a sync at an epoch end
            self._start_epoch(root, root_qc, next_set, out)
            return
        self._root, self._root_qc = root, root_qc
        self._prune()
        if root_qc.epoch == self.epoch:
            self._verified.add(root_qc)
            self._process_qc(root_qc, None, out)
            if root_qc.block_id not in self._blocks:
                self._request_block(root_qc.block_id, self._some_signer(root_qc), out)

    # ---- commit ----------------------------------------------------------------------------

    def _try_commit(self, source: NodeId | None, out: list[Effect]) -> None:
        """COMMIT (docs/design.md §4): commit the block named by the highest commit QC and its
        uncommitted ancestors, or ask for a sync when it is beyond what the tree holds."""
        qc = self._commit_qc
        target = self.committed_by(qc)
        if target is None or target.height <= self._root.height:
            return
        block = self._blocks.get(target.id)
        if block is None:
            peer = source if source is not None else self._some_signer(qc)
            if peer is None or peer == self.me:
                return
            if (
                self._sync_requested_ms is None
                or self._now_ms - self._sync_requested_ms >= self.config.round_timeout_ms
            ):
                self._sync_requested_ms = self._now_ms
                out.append(RequestSync(peer, qc))
            self._request_block(qc.block_id, peer, out)
            return
        chain: list[Block] = []
        cursor: Block | None = block
        while cursor is not None and cursor.id != self._root.id:
            chain.append(cursor)
            cursor = self._blocks.get(cursor.parent_id)
        assert cursor is not None, "a block in the tree does not descend from the root"
        chain.reverse()
        for index, committed in enumerate(chain):
            assert committed.height == self._root.height + 1 + index, "one block per height"
            next_set = self._payloads.validator_set_after(committed)
            if next_set is not None:
                self._committed(chain[: index + 1], qc, out)
                self._start_epoch(committed, qc, next_set, out)
                return
        self._committed(chain, qc, out)
        self._root, self._root_qc = block, qc
        self._prune()

    def _prune(self) -> None:
        """Keep the root and its descendants only: a block that does not extend the committed
        chain can never be committed."""
        kept = {self._root.id: self._root}
        for block in sorted(self._blocks.values(), key=lambda b: b.height):
            if block.height > self._root.height and block.parent_id in kept:
                kept[block.id] = block
        self._blocks = kept
        self._pending = [(s, p) for s, p in self._pending if p.block.height > self._root.height]

    def _start_epoch(
        self, root: Block, root_qc: QuorumCert, validators: ValidatorSet, out: list[Effect]
    ) -> None:
        """Epochs (docs/design.md §4): the set decided in a committed block runs the next epoch,
        which starts on top of that block at round 1 with fresh safety data."""
        assert validators.epoch == self.epoch + 1, "the next validator set must be epoch + 1"
        self._validators = validators
        self._leaders.clear()
        self._root, self._root_qc = root, root_qc
        self._commit_qc = root_qc
        self._anchor_qc = epoch_root_qc(root, validators.epoch)
        self._high_qc = self._anchor_qc
        self._last_tc = None
        self._verified.clear()
        self._reset_epoch_state()
        self._safety = self.make_safety_rules(
            self._floored(
                SafetyData(validators.epoch, Round(0), Round(0), None, self._anchor_qc, None)
            )
        )
        out.append(Persist(self._safety.data))
        if self._validators.contains(self.me):
            self._enter_round(Round(1), via_tc=False, out=out)
        self._take_epoch_backlog(None, out)
