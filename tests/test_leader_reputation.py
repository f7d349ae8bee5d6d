"""Leader reputation (consensus/leader.py, CoreConfig.leader_reputation_window_rounds): the rule
over hand-built committed chains; a Core restored from a committed chain names the leaders the
rule names and agrees with its peers; simulator sweeps with the option on stay safe and live;
with one validator crashed for good the option costs fewer view changes per committed block."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kledger.cluster.sim import cli as sim_cli
from kledger.cluster.sim.simulator import (
    BYZANTINE_KINDS,
    FAULT_KINDS,
    SimConfig,
    Simulation,
    run_seed,
)
from kledger.consensus.core import Core, CoreConfig, RestoredState
from kledger.consensus.leader import (
    REPUTATION_LAG_ROUNDS,
    CommittedRound,
    choose_leader,
    failed_leaders,
)
from kledger.consensus.types import (
    Block,
    BlockInfo,
    Height,
    QuorumCert,
    Round,
    VoteData,
    genesis_block,
)
from kledger.consensus.validators import NodeId, ValidatorSet

IDS = tuple(NodeId(f"n{i}") for i in range(4))
QUORUM = 3
WINDOW = 20
LAG = REPUTATION_LAG_ROUNDS


def chain(*rounds: tuple[int, int], epoch: int = 1) -> list[CommittedRound]:
    return [CommittedRound(epoch, r, parent) for r, parent in rounds]


def leader(history: list[CommittedRound], round: int, window: int = WINDOW) -> NodeId:
    return choose_leader(IDS, QUORUM, history, epoch=1, round=round, window_rounds=window)


# ---- the rule over hand-built committed chains ------------------------------------------------

# n3 (the leader of round 3) crashed: block 2 was orphaned (its QC would have formed at n3) and
# the block of round 4 extends round 1.
CRASHED_N3 = chain((1, 0), (4, 1), (5, 4), (6, 5))


def test_window_zero_is_plain_round_robin() -> None:
    assert [leader(CRASHED_N3, r, window=0) for r in range(8, 16)] == [
        IDS[r % 4] for r in range(8, 16)
    ]


def test_a_gap_blames_only_the_leader_of_the_round_before_the_committed_block() -> None:
    # Gap {2, 3}: n2 led round 2, but only n3 (round 3) failed to certify anything.
    assert failed_leaders(IDS, CRASHED_N3, 1, 4 + LAG, WINDOW) == {NodeId("n3")}


def test_a_failed_leader_is_skipped_and_its_rounds_go_to_the_others() -> None:
    round = 11  # plain round-robin leader: n3
    assert IDS[round % 4] == "n3"
    assert leader(CRASHED_N3, round) == ("n0", "n1", "n2")[round % 3]
    # every other round keeps its round-robin leader
    for other in range(8, 24):
        if other % 4 != 3:
            assert leader(CRASHED_N3, other) == IDS[other % 4]


def test_blocks_younger_than_the_lag_do_not_count() -> None:
    # At round 7 the committed block of round 4 is only 3 rounds old: n3 still leads round 7.
    assert 7 - LAG < 4
    assert leader(CRASHED_N3, 7) == "n3"
    assert leader(CRASHED_N3, 4 + LAG) == IDS[(4 + LAG) % 4]  # counted from round 4 + lag on
    assert failed_leaders(IDS, CRASHED_N3, 1, 4 + LAG - 1, WINDOW) == frozenset()


def test_the_blame_expires_when_the_gap_leaves_the_window() -> None:
    last_in_window = 4 + LAG + WINDOW - 1
    assert failed_leaders(IDS, CRASHED_N3, 1, last_in_window, WINDOW) == {NodeId("n3")}
    assert failed_leaders(IDS, CRASHED_N3, 1, last_in_window + 1, WINDOW) == frozenset()
    later = next(r for r in range(last_in_window + 1, last_in_window + 9) if r % 4 == 3)
    assert leader(CRASHED_N3, later) == "n3"  # a recovered validator gets its turn back


def test_fewer_than_a_quorum_of_candidates_falls_back_to_round_robin() -> None:
    # Gaps before rounds 4 (blames n3) and 7 (blames n2): only n0, n1 remain < quorum 3.
    history = chain((1, 0), (4, 1), (7, 4))
    assert failed_leaders(IDS, history, 1, 7 + LAG, WINDOW) == {NodeId("n2"), NodeId("n3")}
    assert [leader(history, r) for r in range(7 + LAG, 7 + LAG + 8)] == [
        IDS[r % 4] for r in range(7 + LAG, 7 + LAG + 8)
    ]


def test_a_quorum_of_candidates_is_enough_with_six_validators() -> None:
    ids = tuple(NodeId(f"n{i}") for i in range(6))
    # quorum 5 of 6 (f = 1): one failed leader leaves 5 candidates
    history = chain((1, 0), (6, 4))  # blames the leader of round 5: n5
    round = 5 + 6 * 2  # plain leader n5
    assert (
        choose_leader(ids, 5, history, epoch=1, round=round, window_rounds=WINDOW)
        == ids[:5][round % 5]
    )
    history = chain((1, 0), (6, 4), (9, 7))  # also blames n2: 4 candidates < quorum 5
    assert choose_leader(ids, 5, history, epoch=1, round=17, window_rounds=WINDOW) == ids[17 % 6]


def test_blocks_of_another_epoch_are_ignored() -> None:
    history = chain((1, 0), (4, 1), epoch=0)
    assert leader(history, 11) == "n3"


# ---- the core ---------------------------------------------------------------------------------


def test_the_option_is_off_by_default_and_validated() -> None:
    assert CoreConfig().leader_reputation_window_rounds == 0
    with pytest.raises(ValueError, match="leader_reputation_window_rounds"):
        CoreConfig(leader_reputation_window_rounds=-1)


def _committed_chain(validators: ValidatorSet, rounds: list[int]) -> tuple[list[Block], QuorumCert]:
    """Blocks at `rounds` on top of genesis, each carrying an (unsigned) QC on its parent; the
    core does not re-check committed blocks handed back to it."""
    genesis, genesis_qc = genesis_block("kledger-test", validators, 0)
    blocks = [genesis]
    qc = genesis_qc
    for round in rounds:
        parent = blocks[-1]
        block = Block(
            "kledger-test", 1, Round(round), Height(parent.height + 1), parent.id,
            IDS[round % 4], parent.timestamp_ms + 1, b"", qc,
        )  # fmt: skip
        info = BlockInfo(block.id, block.round, block.height)
        qc = QuorumCert(VoteData(1, info, parent.info, parent.info), ())
        blocks.append(block)
    root = blocks[-1]
    return blocks, QuorumCert(VoteData(1, root.info, blocks[-2].info, root.info), ())


def _core(window: int, blocks: list[Block], root_qc: QuorumCert, validators: ValidatorSet) -> Core:
    class Payloads:
        def next_payload(self, pending: object) -> bytes:
            return b""

        def has_payload(self, pending: object) -> bool:
            return True

        def is_valid_payload(self, payload: bytes, pending: object) -> bool:
            return True

        def validator_set_after(self, block: Block) -> ValidatorSet | None:
            return None

        def epoch_ending_qc(self, epoch: int) -> QuorumCert | None:
            return None

    return Core(
        CoreConfig(leader_reputation_window_rounds=window),
        "kledger-test",
        IDS[0],
        validators,
        lambda message: b"",
        lambda key, message, signature: False,
        Payloads(),
        RestoredState(None, blocks[-1], root_qc, (), tuple(blocks[:-1])),
    )


def test_a_restored_core_names_the_leaders_of_the_rule() -> None:
    validators = ValidatorSet.of(1, [(i, i.encode().ljust(32, b"k")) for i in IDS])
    blocks, root_qc = _committed_chain(validators, [1, 4, 5, 6])
    on = _core(WINDOW, blocks, root_qc, validators)
    off = _core(0, blocks, root_qc, validators)
    assert [off.leader_of(r) for r in range(8, 16)] == [IDS[r % 4] for r in range(8, 16)]
    assert on.leader_of(11) == ("n0", "n1", "n2")[11 % 3]
    assert [on.leader_of(r) for r in range(8, 16)] == [leader(CRASHED_N3, r) for r in range(8, 16)]
    # Without the committed blocks below the root it sees no gap (a restarted node that was not
    # handed them); it names other leaders for a while, which only costs timeouts.
    bare = _core(WINDOW, blocks[-1:], root_qc, validators)
    assert bare.leader_of(11) == "n3"


# ---- the simulator ----------------------------------------------------------------------------

REPUTATION = CoreConfig(
    round_timeout_ms=400, max_round_timeout_ms=3_200, leader_reputation_window_rounds=50
)


def _sweep(config: SimConfig, seeds: range) -> list[str]:
    failures = []
    for seed in seeds:
        result = run_seed(config, seed)
        if not result.ok:
            problem = (result.safety_violations or [str(result.liveness_failure)])[0]
            failures.append(f"nodes={config.nodes} seed={seed}: {problem}")
    return failures


@pytest.mark.parametrize("nodes", [4, 6])
def test_sweep_on_with_crash_faults(nodes: int) -> None:
    config = SimConfig(nodes=nodes, faults=frozenset(FAULT_KINDS), core=REPUTATION)
    assert _sweep(config, range(12)) == []


@pytest.mark.parametrize("nodes", [4, 6])
def test_sweep_on_with_all_faults_and_twins(nodes: int) -> None:
    config = SimConfig(
        nodes=nodes,
        faults=frozenset(FAULT_KINDS),
        byzantine=frozenset({"twins"}),
        core=REPUTATION,
    )
    assert _sweep(config, range(100, 112)) == []


def test_a_changed_leader_of_a_round_is_no_equivocation() -> None:
    # n=6 seed 37: a node learned older commits, so reputation named another leader for round
    # 11 after it had taken the Byzantine n5's proposal; n1's first proposal for that round
    # was reported as n1 equivocating against n5's (false evidence).
    config = SimConfig(
        nodes=6,
        faults=frozenset(FAULT_KINDS),
        byzantine=frozenset(BYZANTINE_KINDS),
        core=REPUTATION,
        reconfigure=False,
    )
    result = run_seed(config, 37)
    assert result.safety_violations == [] and result.liveness_failure is None


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [4, 6])
def test_long_sweep_on_with_all_faults_and_every_byzantine_kind(nodes: int) -> None:
    config = SimConfig(
        nodes=nodes,
        faults=frozenset(FAULT_KINDS),
        byzantine=frozenset(BYZANTINE_KINDS),
        core=REPUTATION,
    )
    assert _sweep(config, range(300)) == []


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [4, 6])
def test_long_sweep_on_with_one_validator_crashed_for_good_and_crash_faults(nodes: int) -> None:
    # The dead validator uses up f, so no Byzantine keys here.
    config = SimConfig(
        nodes=nodes, faults=frozenset(FAULT_KINDS), crashed_for_good=1, core=REPUTATION
    )
    assert _sweep(config, range(200)) == []


def _view_changes_per_block(core: CoreConfig, nodes: int, seeds: range) -> float:
    view_changes = commits = 0
    for seed in seeds:
        result = run_seed(SimConfig(nodes=nodes, crashed_for_good=1, core=core), seed)
        assert result.ok, result.liveness_failure
        view_changes += result.view_changes
        commits += result.commits
    return view_changes / commits


@pytest.mark.parametrize("nodes", [4, 6])
def test_one_validator_crashed_for_good_costs_fewer_view_changes_with_the_option(
    nodes: int,
) -> None:
    off = replace(REPUTATION, leader_reputation_window_rounds=0)
    seeds = range(3)
    with_option = _view_changes_per_block(REPUTATION, nodes, seeds)
    without = _view_changes_per_block(off, nodes, seeds)
    assert with_option < without


def test_honest_cores_agree_on_the_leaders_and_skip_the_dead_validator() -> None:
    simulation = Simulation(SimConfig(nodes=4, crashed_for_good=1, core=REPUTATION), seed=5)
    assert simulation.run().ok
    (dead,) = simulation.dead_ids
    cores = [n.core for n in simulation.nodes if n.core is not None]
    assert len(cores) == 3
    base = max(core.round for core in cores)
    leaders = {tuple(core.leader_of(r) for r in range(base, base + 8)) for core in cores}
    assert len(leaders) == 1
    # Without reputation a round whose round-robin leader is dead never commits a block; here
    # most of them did, led by a substitute (the dead validator is skipped until its failures
    # leave the window, then fails once more and is skipped again).
    history = cores[0]._history
    ids = cores[0].validators.ids
    dead_rounds = [h for h in history if ids[h.round % len(ids)] == dead]
    assert len(dead_rounds) >= len(history) // 8


def test_cli_flag_turns_it_on(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    argv = ["--nodes", "4", "--seeds", "1", "--faults", "none", "--crashed-for-good", "1"]
    argv += ["--json", "--quiet", "--fault-phase-ms", "5000"]
    assert sim_cli.main(argv) == 0
    off = json.loads(capsys.readouterr().out)
    assert sim_cli.main([*argv, "--leader-reputation", "50"]) == 0
    on = json.loads(capsys.readouterr().out)
    assert on["view_changes"] / on["commits"] < off["view_changes"] / off["commits"]


def test_a_restarted_core_gets_its_committed_history_back() -> None:
    simulation = Simulation(SimConfig(nodes=4, crashed_for_good=1, core=REPUTATION), seed=9)
    assert simulation.run().ok
    node = next(n for n in simulation.nodes if n.core is not None and n.honest)
    assert node.core is not None
    rounds = range(node.core.round, node.core.round + 40)
    before = [node.core.leader_of(r) for r in rounds]
    history = list(node.core._history)
    assert any(h.parent_round < h.round - 1 for h in history)  # it holds a failed round
    simulation._crash(node)
    simulation._boot(node)
    assert node.core is not None
    assert list(node.core._history) == history
    assert [node.core.leader_of(r) for r in rounds] == before
