"""The consensus core stepped by hand: each safety rule of docs/design.md §4.1 (DiemBFT v4,
Algorithm 4), the 2-chain commit, the pacemaker, message authentication and drops, bounded
memory, block fetch, restart from persisted safety data, and effect ordering."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from kledger.cluster.sim.simulator import SimKeys
from kledger.consensus import (
    Applied,
    Block,
    BlockRequest,
    BlockResponse,
    Broadcast,
    Commit,
    Core,
    CoreConfig,
    Deliver,
    EpochRequest,
    Equivocation,
    PayloadAvailable,
    Persist,
    Proposal,
    ProposeTimer,
    QuorumCert,
    RestoredState,
    RoundTimer,
    SafetyData,
    Send,
    SetTimer,
    Timeout,
    TimeoutCert,
    TimerFired,
    Vote,
    VoteData,
    genesis_block,
)
from kledger.consensus.messages import proposal_sign_bytes
from kledger.consensus.safety import SafetyRules
from kledger.consensus.types import (
    BlockId,
    BlockInfo,
    Height,
    Round,
    timeout_sign_bytes,
    vote_sign_bytes,
)
from kledger.consensus.validators import NodeId, ValidatorSet

CHAIN = "kledger-test"
IDS = [NodeId(f"n{i}") for i in range(4)]  # leader_of(r) = IDS[r % 4]
KEYS = SimKeys(IDS)
VALIDATORS = ValidatorSet.of(1, [(i, KEYS.public[i]) for i in IDS])
GENESIS, GENESIS_QC = genesis_block(CHAIN, VALIDATORS, 1_000)
CONFIG = CoreConfig(round_timeout_ms=1_000, max_round_timeout_ms=8_000, empty_block_delay_ms=0)
NOW = 10_000


class Payloads:
    def next_payload(self, pending: Sequence[bytes]) -> bytes:
        return b"tx"

    def has_payload(self, pending: object) -> bool:
        return True

    def is_valid_payload(self, payload: bytes, pending: Sequence[bytes]) -> bool:
        return payload != b"bad"

    def validator_set_after(self, block: Block) -> ValidatorSet | None:
        return None

    def epoch_ending_qc(self, epoch: int) -> QuorumCert | None:
        return None


def make_core(
    me: str = "n0",
    safety: SafetyData | None = None,
    config: CoreConfig = CONFIG,
    payloads: Payloads | None = None,
) -> Core:
    core = Core(
        config, CHAIN, NodeId(me), VALIDATORS, KEYS.signer(NodeId(me)), KEYS.verify,
        payloads or Payloads(), RestoredState(safety, GENESIS, GENESIS_QC),
    )  # fmt: skip
    core.start(NOW)
    return core


def block_on(
    qc: QuorumCert, parent: Block, round: int, payload: bytes = b"tx", ts: int = 0
) -> Block:
    return Block(
        CHAIN, 1, Round(round), Height(parent.height + 1), parent.id, IDS[round % 4],
        ts or parent.timestamp_ms + 1, payload, qc,
    )  # fmt: skip


def propose(block: Block, tc: TimeoutCert | None = None) -> Proposal:
    signature = KEYS.signer(block.proposer)(proposal_sign_bytes(CHAIN, block.id))
    return Proposal(block, tc, None, signature)


def vote_data(block: Block) -> VoteData:
    parent = block.qc.data.certified
    commit = parent if block.round == block.qc.round + 1 else None
    return VoteData(1, block.info, parent, commit)


def vote(block: Block, author: str) -> Vote:
    data = vote_data(block)
    return Vote(data, NodeId(author), KEYS.signer(NodeId(author))(vote_sign_bytes(CHAIN, data)))


def qc_on(block: Block, authors: Sequence[str] = ("n0", "n1", "n2")) -> QuorumCert:
    data = vote_data(block)
    sign_bytes = vote_sign_bytes(CHAIN, data)
    return QuorumCert(
        data, tuple((NodeId(a), KEYS.signer(NodeId(a))(sign_bytes)) for a in sorted(authors))
    )


def tc_on(
    round: int, high_qc_rounds: dict[str, int], high_qc: QuorumCert | None = None
) -> TimeoutCert:
    """A TC signed by the given signers; `high_qc` must be a QC of the highest of their rounds
    (the safety-rule unit tests, which never verify it, get an unsigned stand-in)."""
    entries = tuple(
        (NodeId(a), Round(r), KEYS.signer(NodeId(a))(timeout_sign_bytes(CHAIN, 1, round, r)))
        for a, r in sorted(high_qc_rounds.items())
    )
    if high_qc is None:
        top = BlockInfo(GENESIS.id, Round(max(high_qc_rounds.values())), Height(0))
        high_qc = QuorumCert(VoteData(1, top, top, None), ())
    return TimeoutCert(1, Round(round), entries, high_qc)


def deliver(core: Core, sender: str, message: object, now: int = NOW):
    return core.step(Deliver(NodeId(sender), message, now))  # type: ignore[arg-type]


def sends(effects, kind: type) -> list[Any]:
    return [e for e in effects if isinstance(e, Send | Broadcast) and isinstance(e.message, kind)]


B1 = block_on(GENESIS_QC, GENESIS, 1)
QC1 = qc_on(B1)
B2 = block_on(QC1, B1, 2)
QC2 = qc_on(B2)


# ---- the safety rules themselves (DiemBFT v4 Algorithm 4) ----------------------------------


def rules(hvr: int, hqr: int) -> SafetyRules:
    return SafetyRules(SafetyData(1, Round(hvr), Round(hqr), None, None, None))


def test_safe_to_vote_needs_a_new_round_above_the_qc() -> None:
    assert rules(3, 2).is_safe_to_vote(Round(5), Round(4), None)  # consecutive(5, 4)
    assert not rules(5, 2).is_safe_to_vote(Round(5), Round(4), None)  # r > highest_vote_round
    assert not rules(3, 2).is_safe_to_vote(Round(5), Round(3), None)  # neither consecutive nor TC


def test_safe_to_extend_is_the_lock() -> None:
    tc = tc_on(4, {"n0": 2, "n1": 3, "n2": 1})
    assert rules(4, 2).is_safe_to_vote(Round(5), Round(3), tc)  # qc_r >= max(tc.high_qc_rounds)
    assert not rules(4, 2).is_safe_to_vote(Round(5), Round(2), tc)  # below a signer's high QC
    assert not rules(4, 2).is_safe_to_vote(Round(6), Round(3), tc)  # TC not for round r-1


def test_safe_to_timeout() -> None:
    assert rules(4, 2).is_safe_to_timeout(Round(4), Round(3), None)  # r > hvr - 1: same round ok
    assert not rules(5, 2).is_safe_to_timeout(Round(4), Round(3), None)  # r <= hvr - 1
    assert not rules(4, 3).is_safe_to_timeout(Round(4), Round(2), tc_on(3, {"n0": 2}))  # qc < lock
    assert rules(4, 2).is_safe_to_timeout(Round(4), Round(2), tc_on(3, {"n0": 2}))  # via TC(r-1)
    assert not rules(4, 2).is_safe_to_timeout(Round(4), Round(2), None)  # no QC/TC of r-1


# ---- votes -----------------------------------------------------------------------------------


def test_vote_goes_to_next_leader_after_persisting_safety() -> None:
    core = make_core("n0")
    effects = deliver(core, "n1", propose(B1))
    kinds = [type(e) for e in effects if isinstance(e, Persist | Send)]
    assert kinds == [Persist, Send]  # the safety data is durable before the vote leaves
    persist = next(e for e in effects if isinstance(e, Persist))
    send = next(e for e in effects if isinstance(e, Send))
    assert send.to == "n2" and isinstance(send.message, Vote)
    assert send.message.data.commit == GENESIS.info  # consecutive(1, 0): carries commit info
    assert persist.safety.highest_vote_round == 1 and persist.safety.last_vote == send.message


def test_one_vote_per_round_even_for_an_equivocating_leader() -> None:
    core = make_core("n0")
    deliver(core, "n1", propose(B1))
    other = block_on(GENESIS_QC, GENESIS, 1, payload=b"other")
    effects = deliver(core, "n1", propose(other))
    assert sends(effects, Vote) == [] and core.dropped["unsafe_vote"] == 1
    assert deliver(core, "n1", propose(B1)) == [] and core.dropped["duplicate"] == 1


def test_an_equivocating_leader_is_reported_once_with_both_signed_proposals() -> None:
    core = make_core("n0")
    first = propose(B1)
    second = propose(block_on(GENESIS_QC, GENESIS, 1, payload=b"other"))
    assert [e for e in deliver(core, "n1", first) if isinstance(e, Equivocation)] == []
    evidence = [e for e in deliver(core, "n1", second) if isinstance(e, Equivocation)]
    assert evidence == [Equivocation(NodeId("n1"), Round(1), first, second)]
    third = propose(block_on(GENESIS_QC, GENESIS, 1, payload=b"third"))
    assert [e for e in deliver(core, "n1", third) if isinstance(e, Equivocation)] == []
    # A forged second proposal is no evidence: its signature does not verify.
    core = make_core("n0")
    deliver(core, "n1", first)
    forged = Proposal(second.block, None, None, first.signature)
    assert [e for e in deliver(core, "n1", forged) if isinstance(e, Equivocation)] == []
    assert core.dropped["bad_signature"] == 1


def test_asked_again_after_restart_resends_the_stored_vote_never_a_new_one() -> None:
    first = make_core("n0")
    effects = deliver(first, "n1", propose(B1))
    stored = next(e for e in effects if isinstance(e, Persist)).safety
    sent = sends(effects, Vote)[0].message
    restarted = make_core("n0", safety=SafetyData.decode(stored.encode()))
    again = deliver(restarted, "n1", propose(B1))
    assert [e.message for e in sends(again, Vote)] == [sent]
    assert not any(isinstance(e, Persist) for e in again)
    other = block_on(GENESIS_QC, GENESIS, 1, payload=b"other")
    assert sends(deliver(restarted, "n1", propose(other)), Vote) == []


def _round_3_proposals_after_restart(stored: SafetyData) -> list[Any]:
    """What n3, restarted on `stored` with B1 and B2 saved, proposes for round 3."""
    safety = SafetyData.decode(stored.encode())
    restarted = Core(
        CONFIG, CHAIN, NodeId("n3"), VALIDATORS, KEYS.signer(NodeId("n3")), KEYS.verify,
        Payloads(), RestoredState(safety, GENESIS, GENESIS_QC, (B1, B2)),
    )  # fmt: skip
    effects = restarted.start(NOW + 1_000)
    effects += restarted.step(PayloadAvailable(NOW + 1_000))
    return [p for p in sends(effects, Proposal) if p.message.block.round == 3]


def test_a_leader_restarted_in_its_round_never_proposes_it_again() -> None:
    """Found by the nemesis: a leader stopped right after proposing restarted into the same
    round and proposed a second block for it (honest equivocation). Its own vote is now
    durable before its proposal leaves, and a round it voted in is not proposed again."""
    proposal, stored = _lead_round_3(make_core("n3"))
    assert stored.highest_vote_round == proposal.block.round == 3
    assert _round_3_proposals_after_restart(stored) == []


def _lead_round_3(core: Core) -> tuple[Proposal, SafetyData]:
    """n3 given B1, B2 and QC(2): its proposal of round 3 and the safety data persisted before
    the proposal left."""
    deliver(core, "n1", propose(B1))
    deliver(core, "n2", propose(B2))
    effects = []
    for author in ("n0", "n1", "n2"):
        effects += deliver(core, author, vote(B2, author))
    [proposal] = sends(effects, Proposal)
    kinds = [type(e).__name__ for e in effects]
    assert kinds.index("Persist") < kinds.index("Broadcast")  # the round recorded, then sent
    stored = [e for e in effects if isinstance(e, Persist)][-1].safety
    return proposal.message, stored


class BadPayloads(Payloads):
    """A payload source that breaks its contract: it hands out what its own check refuses."""

    def next_payload(self, pending: Sequence[bytes]) -> bytes:
        return b"bad"


def test_a_leader_whose_own_check_refuses_its_proposal_still_never_proposes_the_round_twice():
    """Found by the nemesis (seed 11): a junk proposer's own vote on its block is refused, so
    no vote recorded the round; restarted honest in that round, it proposed a second block.
    The round is recorded before the proposal leaves, vote or not."""
    first = make_core("n3", payloads=BadPayloads())
    proposal, stored = _lead_round_3(first)
    assert proposal.block.payload == b"bad" and first.dropped["invalid_payload"] == 1
    assert stored.highest_vote_round == proposal.block.round == 3
    assert _round_3_proposals_after_restart(stored) == []


def test_lock_refuses_a_proposal_below_a_tc_signers_high_qc() -> None:
    core = make_core("n2")  # votes for round 3 go to n0
    deliver(core, "n1", propose(B1))
    tc2 = tc_on(2, {"n0": 1, "n1": 1, "n2": 0}, QC1)
    stale = block_on(GENESIS_QC, GENESIS, 3, payload=b"stale")  # extends round 0 < 1
    effects = deliver(core, "n3", propose(stale, tc2))
    assert core.round == 3 and sends(effects, Vote) == []
    assert core.dropped["unsafe_vote"] == 1
    fresh = block_on(QC1, B1, 3)  # extends QC(1) = max(tc.high_qc_rounds): safe_to_extend
    effects = deliver(core, "n3", propose(fresh, tc2))
    assert [e.message.round for e in sends(effects, Vote)] == [3]


# ---- 2-chain commit ----------------------------------------------------------------------------


def test_qc_on_consecutive_rounds_commits_the_parent() -> None:
    core = make_core("n3")  # leader of round 3 collects votes for round 2
    deliver(core, "n1", propose(B1))
    deliver(core, "n2", propose(B2))
    effects = []
    for author in ("n0", "n1", "n2"):
        effects += deliver(core, author, vote(B2, author))
    commits = [e for e in effects if isinstance(e, Commit)]
    assert len(commits) == 1 and commits[0].blocks == (B1,)
    assert commits[0].qc.commit == B1.info  # the QC is the commit certificate of B1
    assert core.committed_height == 1 and core.round == 3
    assert sends(effects, Proposal)[0].message.block.qc == commits[0].qc


class RecordingPayloads(Payloads):
    def __init__(self) -> None:
        self.pending: list[list[bytes]] = []

    def next_payload(self, pending: Sequence[bytes]) -> bytes:
        self.pending.append(list(pending))
        return b"tx"


def test_committed_payloads_stay_in_flight_until_the_driver_reports_them_applied() -> None:
    """etcd raft's Advance: the core, not the payload source, owns the window between a commit
    and the node having applied it; the source only answers queries about `pending`."""
    payloads = RecordingPayloads()
    core = Core(
        CONFIG, CHAIN, NodeId("n3"), VALIDATORS, KEYS.signer(NodeId("n3")), KEYS.verify,
        payloads, RestoredState(None, GENESIS, GENESIS_QC),
    )  # fmt: skip
    core.start(NOW)
    b1 = block_on(GENESIS_QC, GENESIS, 1, payload=b"committed-1")
    b2 = block_on(qc_on(b1), b1, 2, payload=b"pending-2")
    deliver(core, "n1", propose(b1))
    deliver(core, "n2", propose(b2))
    for author in ("n0", "n1", "n2"):
        deliver(core, author, vote(b2, author))
    assert core.committed_height == 1
    # n3 proposed round 3 on b2 at once: b1 was committed, not yet applied, so in flight.
    assert payloads.pending[-1] == [b"pending-2", b"committed-1"]
    assert core.step(Applied(Height(1), NOW)) == []
    core.step(TimerFired(RoundTimer(1, Round(3)), NOW + 5_000))  # a later proposal attempt
    assert core._pending_payloads(b2) == [b"pending-2"]  # applied: the store answers for it


class IdlePayloads(Payloads):
    """Nothing to order until `work` is set."""

    def __init__(self) -> None:
        self.work = False

    def next_payload(self, pending: Sequence[bytes]) -> bytes:
        return b"tx" if self.work else b""

    def has_payload(self, pending: object) -> bool:
        return self.work


def test_an_idle_cluster_waits_for_the_heartbeat_and_work_ends_the_wait() -> None:
    payloads = IdlePayloads()
    config = CoreConfig(round_timeout_ms=1_000, empty_block_delay_ms=0, idle_heartbeat_ms=30_000)
    core = Core(
        config, CHAIN, NodeId("n3"), VALIDATORS, KEYS.signer(NodeId("n3")), KEYS.verify,
        payloads, RestoredState(None, GENESIS, GENESIS_QC),
    )  # fmt: skip
    core.start(NOW)
    b1 = block_on(GENESIS_QC, GENESIS, 1, payload=b"")
    b2 = block_on(qc_on(b1), b1, 2, payload=b"")
    deliver(core, "n1", propose(b1))
    deliver(core, "n2", propose(b2))
    effects = []
    for author in ("n0", "n1", "n2"):
        effects += deliver(core, author, vote(b2, author))
    assert core.round == 3  # n3 leads round 3, with nothing to order and no tx to commit
    timers = {e.timer: e.at_ms for e in effects if isinstance(e, SetTimer)}
    assert timers[ProposeTimer(1, Round(3))] == NOW + 30_000  # the heartbeat, not 0 ms
    assert timers[RoundTimer(1, Round(3))] == NOW + 31_000  # replicas wait as long, and more
    assert sends(effects, Proposal) == []
    payloads.work = True
    later = core.step(PayloadAvailable(NOW + 5_000))
    assert [p.message.block.payload for p in sends(later, Proposal)] == [b"tx"]
    assert SetTimer(RoundTimer(1, Round(3)), NOW + 6_000) in later  # a silent leader: 1 timeout


def test_a_core_missing_its_high_qc_block_does_not_wait_idle() -> None:
    """Behind (it has a QC for a block it never got, as after a restart and a partial sync):
    its round timer is the plain timeout, so it times out and its peers bring it up, instead
    of waiting for the heartbeat of an idle cluster."""
    payloads = IdlePayloads()
    config = CoreConfig(round_timeout_ms=1_000, empty_block_delay_ms=0, idle_heartbeat_ms=30_000)
    core = Core(
        config, CHAIN, NodeId("n0"), VALIDATORS, KEYS.signer(NodeId("n0")), KEYS.verify,
        payloads, RestoredState(None, GENESIS, GENESIS_QC),
    )  # fmt: skip
    core.start(NOW)
    b1 = block_on(GENESIS_QC, GENESIS, 1, payload=b"")
    b2 = block_on(qc_on(b1), b1, 2, payload=b"")
    b3 = block_on(qc_on(b2), b2, 3, payload=b"")
    deliver(core, "n1", propose(b1))  # accepted: the core has seen a proposal
    effects = deliver(core, "n3", propose(b3))  # QC2 names b2, which it never got
    assert core.round == 3
    timers = {e.timer: e.at_ms for e in effects if isinstance(e, SetTimer)}
    assert timers[RoundTimer(1, Round(3))] == NOW + 1_000  # not NOW + 31_000


def test_a_core_behind_is_sent_the_latest_proposal_when_it_times_out() -> None:
    core = make_core("n3")
    deliver(core, "n1", propose(B1))
    deliver(core, "n2", propose(B2))
    for author in ("n0", "n1", "n2"):
        deliver(core, author, vote(B2, author))
    stale = Timeout(1, Round(1), GENESIS_QC, None, None, NodeId("n0"), b"")
    stale = Timeout(
        1, Round(1), GENESIS_QC, None, None, NodeId("n0"),
        KEYS.signer(NodeId("n0"))(stale.sign_bytes(CHAIN)),
    )  # fmt: skip
    effects = deliver(core, "n0", stale)
    # The latest accepted: n3's own proposal of round 3, carrying QC2 (which commits B1).
    [sent] = sends(effects, Proposal)
    assert sent.to == "n0" and sent.message.block.round == 3 == core.round
    assert sent.message.block.qc.block_id == B2.id
    assert sends(deliver(core, "n0", stale), Proposal) == []  # once per peer and round
    # Behind in the very round we are in (killed and restarted within one idle round): its
    # high QC gives it away.
    current = Timeout(1, Round(3), GENESIS_QC, None, None, NodeId("n1"), b"")
    current = Timeout(
        1, Round(3), GENESIS_QC, None, None, NodeId("n1"),
        KEYS.signer(NodeId("n1"))(current.sign_bytes(CHAIN)),
    )  # fmt: skip
    [helped] = sends(deliver(core, "n1", current), Proposal)
    assert helped.to == "n1" and helped.message.block.round == 3


def test_qc_on_non_consecutive_rounds_commits_nothing() -> None:
    core = make_core("n0")
    deliver(core, "n1", propose(B1))
    tc2 = tc_on(2, {"n0": 1, "n1": 1, "n2": 1}, QC1)
    b3 = block_on(QC1, B1, 3)
    deliver(core, "n3", propose(b3, tc2))
    qc3 = qc_on(b3)
    assert qc3.commit is None
    b4 = block_on(qc3, b3, 4)
    effects = deliver(core, "n0", propose(b4))  # n0 leads round 4
    assert [e for e in effects if isinstance(e, Commit)] == []
    assert core.committed_height == 0  # QC(3) on b3 (round 3 after round 1) commits nothing
    assert core.round == 4


# ---- pacemaker -------------------------------------------------------------------------------


def test_round_timeout_doubles_on_consecutive_timeouts_and_resets_on_a_qc() -> None:
    core = make_core("n0")
    durations = []

    def timeout_round(round: int) -> None:
        effects = core.step(TimerFired(RoundTimer(1, Round(round)), NOW))
        mine = sends(effects, Timeout)
        assert mine and mine[0].message.round == round
        for author in ("n1", "n2"):
            effects = deliver(core, author, signed_timeout(author, round, GENESIS_QC))
            timers = [
                e for e in effects if isinstance(e, SetTimer) and isinstance(e.timer, RoundTimer)
            ]
            if timers:
                durations.append(timers[-1].at_ms - NOW)

    timeout_round(1)
    timeout_round(2)
    timeout_round(3)
    assert durations == [2_000, 4_000, 8_000]
    assert core.view_changes == 3 and core.round == 4
    # progress resets it: a QC of round 4 brings round 5 with the base timeout again
    b4 = block_on(GENESIS_QC, GENESIS, 4)
    b5 = block_on(qc_on(b4), b4, 5)
    effects = deliver(core, "n1", propose(b5))
    timers = [e for e in effects if isinstance(e, SetTimer) and isinstance(e.timer, RoundTimer)]
    assert core.round == 5 and [t.at_ms - NOW for t in timers] == [1_000]


def signed_timeout(author: str, round: int, high_qc: QuorumCert) -> Timeout:
    tc = None
    signature = KEYS.signer(NodeId(author))(timeout_sign_bytes(CHAIN, 1, round, high_qc.round))
    return Timeout(1, Round(round), high_qc, tc, None, NodeId(author), signature)


def test_stale_timers_are_ignored() -> None:
    core = make_core("n0")
    deliver(core, "n1", propose(B1))
    deliver(core, "n2", propose(B2))
    assert core.round == 2
    assert core.step(TimerFired(RoundTimer(1, Round(1)), NOW + 5_000)) == []


def test_f_plus_one_timeouts_make_a_replica_time_out_too() -> None:
    core = make_core("n0")
    deliver(core, "n1", signed_timeout("n1", 1, GENESIS_QC))
    effects = deliver(core, "n2", signed_timeout("n2", 1, GENESIS_QC))  # f + 1 = 2
    assert [e.message.author for e in sends(effects, Timeout)] == ["n0"]
    assert core.round == 2  # with its own timeout that is a quorum: TC(1)


# ---- authentication and drops ----------------------------------------------------------------


def test_bad_messages_are_dropped_and_counted() -> None:
    core = make_core("n0")
    forged = Proposal(B1, None, None, b"\x00" * 32)
    assert deliver(core, "n1", forged) == []
    assert deliver(core, "mallory", propose(B1)) == []
    assert deliver(core, "n3", propose(B1)) == []  # n3 is not B1's proposer
    other_chain = Block(
        "other", 1, B1.round, B1.height, B1.parent_id, B1.proposer, B1.timestamp_ms, b"tx", B1.qc
    )
    assert deliver(core, "n1", propose(other_chain)) == []
    not_leader = Block(
        CHAIN, 1, Round(1), Height(1), GENESIS.id, NodeId("n2"), 1_001, b"tx", GENESIS_QC
    )
    assert deliver(core, "n2", propose(not_leader)) == []
    other_epoch = Vote(VoteData(2, B1.info, GENESIS.info, None), NodeId("n1"), b"x")
    # A later epoch: dropped, and its sender asked how our epoch ended (once a round timeout).
    assert deliver(core, "n1", other_epoch) == [Send(NodeId("n1"), EpochRequest(1, NodeId("n0")))]
    assert deliver(core, "n1", other_epoch) == []
    assert core.dropped == {
        "bad_signature": 1, "not_member": 1, "sender_mismatch": 1, "chain": 1, "not_leader": 1,
        "epoch": 2,
    }  # fmt: skip


def test_forged_and_reused_signatures_in_certificates_are_refused() -> None:
    core = make_core("n0")
    good = qc_on(B1)
    reused = QuorumCert(
        VoteData(1, B2.info, B1.info, B1.info), good.signatures
    )  # signatures over other data
    timeout = signed_timeout("n1", 1, reused)
    assert deliver(core, "n1", timeout) == [] and core.dropped["bad_certificate"] == 1
    short = QuorumCert(good.data, good.signatures[:2])  # below quorum
    assert deliver(core, "n2", signed_timeout("n2", 1, short)) == []
    duplicated = QuorumCert(good.data, (good.signatures[0],) * 3)  # one signer thrice
    assert deliver(core, "n3", signed_timeout("n3", 1, duplicated)) == []
    assert core.dropped["bad_certificate"] == 3 and core.round == 1
    # a high QC from another epoch cannot back the high-QC round a timeout signs
    foreign = QuorumCert(VoteData(7, B1.info, GENESIS.info, None), ())
    assert deliver(core, "n1", signed_timeout("n1", 1, foreign)) == []
    assert core.dropped["bad_certificate"] == 4


def test_votes_duplicates_equivocation_and_flooding_are_bounded() -> None:
    core = make_core("n2")  # leader of round 2 collects votes for round 1
    assert deliver(core, "n1", vote(B1, "n1")) == []
    deliver(core, "n1", vote(B1, "n1"))
    other = block_on(GENESIS_QC, GENESIS, 1, payload=b"other")
    effects = deliver(core, "n1", vote(other, "n1"))
    assert core.dropped["duplicate"] == 1 and core.dropped["equivocation"] == 1
    assert [e for e in effects if isinstance(e, Equivocation)] == [
        Equivocation(NodeId("n1"), Round(1), vote(B1, "n1"), vote(other, "n1"))
    ]
    # Reported once: more equivocating votes of that round cost no signature check.
    third = block_on(GENESIS_QC, GENESIS, 1, payload=b"third")
    assert deliver(core, "n1", vote(third, "n1")) == [] and core.dropped["equivocation"] == 2
    # A different vote with a forged signature is no evidence.
    forged = Vote(vote_data(other), NodeId("n3"), vote(B1, "n3").signature)
    deliver(core, "n3", vote(B1, "n3"))
    assert deliver(core, "n3", forged) == [] and core.dropped["bad_signature"] == 1
    for round in range(5, 5 + 4 * 200, 4):  # n2 leads rounds 2, 6, 10, ...: votes for r+1
        far = Block(
            CHAIN, 1, Round(round), Height(1), GENESIS.id, IDS[round % 4], 2_000, b"x", GENESIS_QC
        )
        deliver(core, "n1", vote(far, "n1"))
    assert core.dropped["future_round"] > 0
    assert len(core._votes) <= CONFIG.max_rounds_ahead + 2
    assert all(len(table) <= VALIDATORS.size for table in core._votes.values())


def test_timestamps_must_increase_and_not_run_ahead_of_the_clock() -> None:
    same_time = block_on(GENESIS_QC, GENESIS, 1, ts=GENESIS.timestamp_ms)
    ahead = block_on(GENESIS_QC, GENESIS, 1, ts=NOW + CONFIG.max_clock_skew_ms + 1)
    bad_payload = block_on(GENESIS_QC, GENESIS, 1, payload=b"bad")
    for block, reason in (
        (same_time, "invalid_block"),
        (ahead, "timestamp_ahead"),
        (bad_payload, "invalid_payload"),
    ):
        core = make_core("n0")
        assert sends(deliver(core, "n1", propose(block)), Vote) == []
        assert core.dropped == {reason: 1}
    core = make_core("n0")
    deliver(core, "n1", propose(same_time))
    deliver(core, "n1", propose(ahead))
    deliver(core, "n1", propose(B1))  # a third proposal in one round: no further hearing
    assert core.dropped["equivocation"] == 1


# ---- block fetch -------------------------------------------------------------------------------


def test_missing_parent_is_fetched_from_the_proposer_then_voted() -> None:
    lagging, peer = make_core("n0"), make_core("n2")
    deliver(peer, "n1", propose(B1))
    effects = deliver(lagging, "n2", propose(B2))  # lagging never saw B1
    requests: list[Any] = [
        e for e in effects if isinstance(e, Send) and isinstance(e.message, BlockRequest)
    ]
    assert len(requests) == 1 and requests[0].to == "n2" and requests[0].message.block_id == B1.id
    replies = deliver(peer, "n0", requests[0].message)
    response = next(e.message for e in replies if isinstance(e, Send))
    assert isinstance(response, BlockResponse) and response.blocks[0] == B1
    effects = deliver(lagging, "n2", response)
    assert [e.message.round for e in sends(effects, Vote)] == [2]
    assert deliver(lagging, "n2", response) == [] and lagging.dropped["unsolicited"] == 1


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(ValueError, match="round_timeout_ms"):
        CoreConfig(round_timeout_ms=0)
    with pytest.raises(ValueError, match="max_round_timeout_ms"):
        CoreConfig(round_timeout_ms=5_000, max_round_timeout_ms=1_000)


def test_unanswered_fetches_do_not_block_later_ones() -> None:
    core = make_core("n0")
    out: list[Any] = []
    for index in range(CONFIG.max_pending_messages):
        core._request_block(BlockId(bytes([index]) * 32), NodeId("n1"), out)
    assert len(out) == CONFIG.max_pending_messages
    core._request_block(BlockId(b"\xff" * 32), NodeId("n1"), out)  # full: refused for now
    assert len(out) == CONFIG.max_pending_messages and core.dropped["buffer_full"] == 1
    core.step(TimerFired(RoundTimer(1, Round(99)), NOW + CONFIG.round_timeout_ms + 1))
    core._request_block(BlockId(b"\xff" * 32), NodeId("n1"), out)  # stale ones forgotten
    assert len(out) == CONFIG.max_pending_messages + 1


def test_a_tc_naming_a_high_qc_round_no_qc_backs_is_refused() -> None:
    core = make_core("n0")
    inflated = tc_on(1, {"n0": 0, "n1": 0, "n3": 5}, GENESIS_QC)  # n3 claims round 5
    timeout = signed_timeout("n3", 2, GENESIS_QC)
    timeout = Timeout(1, Round(2), GENESIS_QC, inflated, None, NodeId("n3"), timeout.signature)
    assert deliver(core, "n3", timeout) == [] and core.dropped == {"bad_certificate": 1}
    honest = tc_on(1, {"n0": 0, "n1": 0, "n3": 0}, GENESIS_QC)
    timeout = Timeout(1, Round(2), GENESIS_QC, honest, None, NodeId("n3"), timeout.signature)
    deliver(core, "n3", timeout)
    assert core.round == 2 and core.view_changes == 1
