"""The simulator and `kledger sim`: seeded sweeps of the real core under every fault and
Byzantine behaviour, with live reconfiguration (validators added, removed and rotated), find no
violation; each deliberately broken safety rule IS found (the checks have teeth), a forged next
set included; a seed replays exactly; the CLI reports and exits as documented."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from dataclasses import replace

import pytest

from kledger.cluster.sim import cli as sim_cli
from kledger.cluster.sim.broken import DoubleVoteCore, IgnoreLockCore, OneChainCore
from kledger.cluster.sim.simulator import (
    BYZANTINE_KINDS,
    CHAIN_ID,
    FAULT_KINDS,
    SimConfig,
    Simulation,
    run_seed,
)
from kledger.consensus.core import Core, Deliver, Effect
from kledger.consensus.messages import Message, Timeout
from kledger.consensus.types import QuorumCert, timeout_sign_bytes
from kledger.consensus.validators import NodeId

# The default campaign: every fault, every Byzantine kind, live reconfiguration.
ALL = SimConfig(
    faults=frozenset(FAULT_KINDS), byzantine=frozenset(BYZANTINE_KINDS), reconfigure=True
)
STATIC = replace(ALL, reconfigure=False)  # one validator set for good
SWEEP_SEEDS = 120


def sweep(config: SimConfig, seeds: Iterable[int]) -> list[str]:
    failures = []
    for seed in seeds:
        result = run_seed(config, seed)
        if not result.ok:
            problem = (result.safety_violations or [str(result.liveness_failure)])[0]
            failures.append(f"nodes={config.nodes} seed={seed}: {problem}")
    return failures


@pytest.mark.parametrize("nodes", [4, 6])
def test_sweep_with_all_faults_and_byzantine_nodes_and_one_set(nodes: int) -> None:
    assert sweep(replace(STATIC, nodes=nodes), range(SWEEP_SEEDS // 2)) == []


@pytest.mark.parametrize("nodes", [4, 6])
def test_sweep_twins_with_partitions(nodes: int) -> None:
    config = SimConfig(
        nodes=nodes, faults=frozenset({"partition", "drop"}), byzantine=frozenset({"twins"})
    )
    assert sweep(config, range(1_000, 1_000 + SWEEP_SEEDS // 2)) == []


def test_equivocating_validators_are_reported_with_checked_evidence() -> None:
    """Byzantine equivocators make the honest cores report evidence; the simulator checks each
    report (both messages signed by the accused, one round, different) and counts it."""
    config = SimConfig(nodes=4, byzantine=frozenset({"equivocate"}))
    results = [run_seed(config, seed) for seed in range(10)]
    assert all(r.ok for r in results)
    assert sum(r.evidence for r in results) > 0


def test_fault_free_run_commits_one_chain_on_every_node() -> None:

    simulation = Simulation(SimConfig(nodes=4, fault_phase_ms=2_000), seed=7)
    result = simulation.run()
    assert result.ok and result.view_changes == 0
    chains = [[b.id for b in node.disk.chain] for node in simulation.nodes]
    shortest = min(len(c) for c in chains)
    assert shortest > 50
    assert all(chain[:shortest] == chains[0][:shortest] for chain in chains)


def test_a_run_has_faults_of_every_kind() -> None:
    faults: set[str] = set()
    for seed in range(20):
        faults |= set(run_seed(replace(ALL, nodes=7), seed).faults)
    kinds = set(FAULT_KINDS) - {"skew"} | set(BYZANTINE_KINDS) - {"twins"}
    assert kinds <= faults  # skew and twins are set-ups, not counted events


def test_epoch_changes_keep_safety_and_liveness() -> None:
    config = SimConfig(
        nodes=4, faults=frozenset({"drop", "delay", "reorder", "duplicate"}), reconfigure=True
    )
    results = [run_seed(config, seed) for seed in range(40)]
    assert [r.seed for r in results if not r.ok] == []
    assert max(r.epoch for r in results) > 3


EPOCHS_ALL = ALL


@pytest.mark.parametrize("nodes", [4, 6, 7])
def test_sweep_with_epoch_changes_all_faults_and_byzantine_nodes(nodes: int) -> None:
    assert sweep(replace(EPOCHS_ALL, nodes=nodes), range(SWEEP_SEEDS // 2)) == []


@pytest.mark.parametrize(
    ("nodes", "seed"),
    [
        # Took a TC of the epoch that a QC in the same timeout had just ended: an old-epoch high
        # QC and round in the new epoch, which no peer could back (stalled for good).
        (4, 187),
        (7, 64),
        # Synced towards a QC that commits past an epoch end (its block is in the empty suffix,
        # never in a chain): the sync never matched, the node stayed epochs behind.
        (6, 8),
        (6, 25),
    ],
)
def test_epoch_liveness_failures_found_by_the_campaign_stay_fixed(nodes: int, seed: int) -> None:
    # These seeds found the bugs above when epochs kept the same members; they keep running
    # under live reconfiguration (the seeds that find the membership bugs are below).
    assert sweep(replace(EPOCHS_ALL, nodes=nodes), range(seed, seed + 1)) == []


@pytest.mark.parametrize("epochs", [1, 2, 150])
def test_a_node_down_across_epochs_catches_up_with_epoch_proofs(epochs: int) -> None:
    """Down from the start while the others change epochs; back, it learns each epoch's end
    from EpochProof pages (each certificate checked with its own epoch's set), syncs epoch by
    epoch and reaches the others' height — under message faults, crashes and partitions."""
    config = SimConfig(
        nodes=4,
        faults=frozenset({"drop", "delay", "reorder", "duplicate", "partition", "crash"}),
        reconfigure=True,
        reconfigure_probability=0.9 if epochs > 10 else 0.3,
        down_for_epochs=epochs,
    )
    for seed in range(2):
        simulation = Simulation(config, seed)
        result = simulation.run()
        assert result.ok, (seed, result.liveness_failure, result.safety_violations)
        assert result.epochs_missed >= epochs
        down = simulation.down_node  # the highest honest genesis validator
        assert down is not None
        assert down.core is not None and down.core.epoch == result.epoch
        assert len(down.disk.chain) - 1 >= result.commits - 1


# ---- live reconfiguration: membership really changes --------------------------------------


def test_validators_are_really_added_removed_and_rotated() -> None:
    """Spares join (and vote), validators leave (and their links are refused), keys rotate; n
    moves between 6 and 7 with q recomputed (4 <-> 5), and every honest node agrees on each
    epoch's set (a disagreement is a safety violation)."""
    changes: dict[str, int] = {}
    counts: set[tuple[int, int]] = set()
    spare_voted = changed = 0
    for seed in range(30):
        simulation = Simulation(replace(ALL, nodes=6), seed)
        result = simulation.run()
        assert result.ok, (seed, result.safety_violations, result.liveness_failure)
        for kind, count in result.membership_changes.items():
            changes[kind] = changes.get(kind, 0) + count
        changed += result.final_validators != result.genesis_validators
        for validators in simulation.validator_sets.values():
            counts.add((validators.size, validators.quorum))
        spare_voted += any(author == "n6" for author, _, _ in simulation.votes_signed)
    assert changes.get("add", 0) > 0 and changes.get("remove", 0) > 0
    assert changes.get("rotate", 0) > 0
    assert changed > 0  # runs that end with another set than genesis
    assert {(6, 4), (7, 5)} <= counts  # n 6 -> 7: q 4 -> 5, and back
    assert spare_voted > 0  # the spare became a validator and signed votes


def test_a_removed_validator_is_refused_from_the_new_epoch() -> None:
    """Peers refuse a removed node's links once they run the epoch without it; liveness is
    owed by the newest set only."""
    for seed in range(40):
        simulation = Simulation(replace(ALL, nodes=6, faults=frozenset()), seed)
        result = simulation.run()
        assert result.ok
        if result.membership_changes["remove"] and result.faults["link_refused"]:
            return
    raise AssertionError("no run removed a validator that then knocked")


def test_a_forged_marker_is_refused_by_honest_replicas() -> None:
    """A Byzantine leader proposes markers for sets nobody decided: honest replicas refuse
    every one (counted), the run stays safe and live."""
    config = replace(ALL, nodes=4, faults=frozenset(), byzantine=frozenset({"forged_marker"}))
    results = [run_seed(config, seed) for seed in range(10)]
    assert [r.seed for r in results if not r.ok] == []
    assert sum(r.faults["forged_marker"] for r in results) > 0
    assert sum(r.forged_marker_refused for r in results) > 0


def test_without_the_marker_vote_rule_a_forged_set_commits_and_is_caught() -> None:
    """The control: replicas that vote for any well-formed marker let a forged set commit,
    and the simulator reports it (the node would stop: StoreCorrupt)."""
    config = replace(
        ALL, nodes=4, faults=frozenset(), byzantine=frozenset({"forged_marker"}),
        marker_vote_rule=False,
    )  # fmt: skip
    seed = first_violation(config, budget=20)
    assert seed is not None
    violations = run_seed(config, seed).safety_violations
    assert any("not the decided set" in v for v in violations)


def test_a_rotated_keys_messages_are_refused_in_the_new_epoch() -> None:
    """After a rotation the new epoch's set names the new key: a message of that epoch signed
    with the old key is dropped (bad signature), the same message with the new key is not."""
    for seed in range(40):
        config = replace(ALL, nodes=4, faults=frozenset(), reconfigure_probability=0.5)
        simulation = Simulation(config, seed)
        result = simulation.run()
        assert result.ok
        honest = [n for n in simulation.nodes if n.core is not None and n.honest]
        core = max((n.core for n in honest if n.core is not None), key=lambda c: c.epoch)
        rotated = [
            v.node_id
            for v in core.validators.validators
            if v.node_id in result.genesis_validators  # its genesis key is an old one
            and v.public_key != simulation.keys.public[v.node_id]
            and v.node_id != core.me
        ]
        if rotated:
            break
    else:
        raise AssertionError("no run rotated a key")
    author = NodeId(rotated[0])
    old = simulation.keys.signer(author, 0)  # its genesis key
    new_secret = simulation.keys.secret_of(core.validators.public_key(author) or b"")
    assert new_secret is not None
    sign_bytes = timeout_sign_bytes(CHAIN_ID, core.epoch, core.round, core.high_qc.round)

    def timeout(signature: bytes) -> Timeout:
        return Timeout(core.epoch, core.round, core.high_qc, None, None, author, signature)

    before = core.dropped.get("bad_signature", 0)
    core.step(Deliver(author, timeout(old(sign_bytes)), simulation.now_ms))
    assert core.dropped.get("bad_signature", 0) == before + 1
    core.step(Deliver(author, timeout(hmac.digest(new_secret, sign_bytes, "sha256")), 0))
    assert core.dropped.get("bad_signature", 0) == before + 1


# ---- core bugs the reconfiguration campaign found: each seed fails with the old rule -------


class _DropsNonMembersFirst(Core):
    """The old order: every message from outside our set dropped first, epoch catch-up too."""

    def _on_message(self, sender: NodeId, message: Message, out: list[Effect]) -> None:
        if not self.validators.contains(sender):
            self.dropped["not_member"] = self.dropped.get("not_member", 0) + 1
            return
        super()._on_message(sender, message, out)


class _NoHelpForEarlierEpochs(Core):
    """The old rule: a message of an earlier epoch only dropped, never answered."""

    def _on_other_epoch(
        self, sender: NodeId, message: Message, epoch: int, out: list[Effect]
    ) -> None:
        if epoch < self.epoch:
            self.dropped["epoch"] = self.dropped.get("epoch", 0) + 1
            return
        super()._on_other_epoch(sender, message, epoch, out)


class _FirstSignerOnly(Core):
    """The old fetch target: always the first signer of the QC."""

    def _some_signer(self, qc: QuorumCert) -> NodeId | None:
        return next((author for author, _ in qc.signatures if author != self.me), None)


@pytest.mark.parametrize(
    ("config", "seed", "old_core"),
    [
        # A spare added epochs after genesis is epochs behind and asks the validators how the
        # epochs ended: its request was dropped as a non-member's, so the joiner never caught
        # up, never announced its key, and the change was never enacted.
        (
            replace(ALL, nodes=4, faults=frozenset(), byzantine=frozenset()),
            0,
            _DropsNonMembersFirst,
        ),
        # The nodes that committed an epoch's last block were the ones it removed: they follow
        # silently in the new epoch, and the rest, stuck in the old one, never heard a later
        # epoch to ask how theirs ended (now a node answers an earlier-epoch message unasked).
        (replace(ALL, nodes=6), 293, _NoHelpForEarlierEpochs),
        # A block whose only copy was at a signer other than the first (the others lost their
        # saved blocks in rollbacks) was asked of the first signer forever.
        (replace(STATIC, nodes=4), 40, _FirstSignerOnly),
    ],
)
def test_core_bugs_found_by_the_reconfiguration_campaign_stay_fixed(
    config: SimConfig, seed: int, old_core: type[Core]
) -> None:
    assert not run_seed(replace(config, core_factory=old_core), seed).ok
    assert sweep(config, range(seed, seed + 1)) == []


def test_a_seed_replays_exactly() -> None:
    first = run_seed(ALL, 42, trace=True)
    second = run_seed(ALL, 42, trace=True)
    assert first.trace == second.trace and len(first.trace) > 100
    assert (first.commits, first.rounds, first.faults) == (
        second.commits,
        second.rounds,
        second.faults,
    )
    assert run_seed(ALL, 43, trace=True).trace != first.trace


# ---- teeth: one safety rule disabled at a time must be caught -------------------------------


def first_violation(config: SimConfig, budget: int) -> int | None:
    for seed in range(budget):
        if run_seed(config, seed).safety_violations:
            return seed
    return None


def test_double_voting_is_caught() -> None:
    config = SimConfig(
        nodes=4, faults=frozenset(FAULT_KINDS), byzantine=frozenset({"equivocate"}),
        core_factory=DoubleVoteCore,
    )  # fmt: skip
    seed = first_violation(config, budget=50)
    assert seed is not None
    assert any("two different votes" in v for v in run_seed(config, seed).safety_violations)


def test_committing_on_a_one_chain_is_caught() -> None:
    config = SimConfig(nodes=4, faults=frozenset(FAULT_KINDS), core_factory=OneChainCore)
    assert first_violation(config, budget=50) is not None


def test_ignoring_the_lock_is_caught() -> None:
    # A Byzantine leader that, after a timeout, proposes on a stale QC, and partitions that
    # isolate a node right after it committed: replicas without the lock vote for the fork.
    config = SimConfig(
        nodes=4, faults=frozenset({"partition"}), byzantine=frozenset({"fork"}),
        core_factory=IgnoreLockCore,
    )  # fmt: skip
    seed = first_violation(config, budget=200)  # seed 128 since leaders vote before proposing
    assert seed is not None
    violations = run_seed(config, seed).safety_violations
    assert any("different block at height" in v for v in violations)
    # the same schedule with the lock in place is safe: the violating seed and the first 20
    # (every seed up to it would cost another 100-odd runs for no more evidence)
    locked = SimConfig(nodes=4, faults=config.faults, byzantine=config.byzantine)
    assert sweep(locked, sorted({*range(20), seed})) == []


# ---- the command -------------------------------------------------------------------------------


def test_cli_campaign_prints_a_json_summary(capsys) -> None:
    code = sim_cli.main(
        ["--nodes", "4,6", "--seeds", "3", "--faults", "all", "--byzantine", "twins", "--json"]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["runs"] == 6 and summary["commits"] > 0 and summary["simulated_rounds"] > 0
    assert summary["safety_violations"] == 0 and summary["liveness_failures"] == 0
    assert summary["failing_seeds"] == []
    assert summary["faults"]["partition"] > 0


def test_cli_exits_1_and_names_the_seed_when_a_rule_is_broken(capsys) -> None:
    code = sim_cli.main(["--nodes", "4", "--seeds", "2", "--broken", "one_chain", "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 1 and summary["safety_violations"] == 2
    assert [f["seed"] for f in summary["failing_seeds"]] == [0, 1]
    assert "seed=0" in captured.err and "--seed 0" in captured.err


def test_cli_replay_with_trace_is_identical(capsys) -> None:
    args = ["--nodes", "4", "--seed", "5", "--faults", "all", "--byzantine", "all", "--trace"]
    assert sim_cli.main(args) == 0
    first = capsys.readouterr().out
    assert sim_cli.main(args) == 0
    assert capsys.readouterr().out == first and "Proposal(" in first


def test_cli_refuses_unknown_fault_kinds(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sim_cli.main(["--faults", "meteor"])
    assert exit_info.value.code == 2 and "meteor" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [4, 6, 7])
def test_large_sweep(nodes: int) -> None:
    config = SimConfig(
        nodes=nodes, faults=frozenset(FAULT_KINDS), byzantine=frozenset(BYZANTINE_KINDS)
    )
    assert sweep(config, range(10_000, 11_000)) == []


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [4, 6, 7])
def test_large_epoch_sweep(nodes: int) -> None:
    assert sweep(replace(EPOCHS_ALL, nodes=nodes), range(20_000, 21_000)) == []


# ---- rollback: a lost log tail and the safety record ---------------------------------------


ROLLBACK = frozenset({"rollback", "drop", "delay"})


def test_rolled_back_nodes_never_vote_twice_with_the_safety_record() -> None:
    """Nodes whose disk loses its newest writes (safety data and committed blocks) restart as
    followers below their safety record and catch up: no double vote, no fork, and liveness."""
    for byzantine in (frozenset(), frozenset({"equivocate"})):
        config = SimConfig(nodes=4, faults=ROLLBACK, byzantine=byzantine)
        results = [run_seed(config, seed) for seed in range(40)]
        assert sum(r.faults["rollback"] for r in results) >= 40
        assert [
            (r.seed, r.safety_violations, r.liveness_failure) for r in results if not r.ok
        ] == []


def test_rollbacks_stay_within_f_beside_validators_down_for_good() -> None:
    """A rollback loses stored blocks, so it counts against f: with n = 4 and one validator
    crashed for good none may roll back (seed 6 rolled back all three live nodes, which lost
    the only copies of a certified block and timed out forever); n = 7 with one down lets one
    node roll back."""
    four = run_seed(SimConfig(nodes=4, faults=frozenset(FAULT_KINDS), crashed_for_good=1), 6)
    assert four.ok and four.faults["rollback"] == 0
    seven = [
        run_seed(SimConfig(nodes=7, faults=ROLLBACK, crashed_for_good=1), seed) for seed in range(6)
    ]
    assert all(r.ok for r in seven)
    assert sum(r.faults["rollback"] for r in seven) > 0


def test_without_the_safety_record_a_rollback_leads_to_a_double_vote() -> None:
    """The control: the same runs without the record (test only) let a rolled-back node sign a
    second vote in a round it voted in, and the simulator catches it."""
    config = SimConfig(nodes=4, faults=ROLLBACK, safety_record=False)
    seed = first_violation(config, budget=40)
    assert seed is not None
    assert any("two different votes" in v for v in run_seed(config, seed).safety_violations)
    assert not run_seed(replace(config, safety_record=True), seed).safety_violations
