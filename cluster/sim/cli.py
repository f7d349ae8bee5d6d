"""`kledger sim`: seeded consensus simulation campaigns, and exact replay of one seed.

    kledger sim --nodes 6 --seeds 1000 --faults all --byzantine twins --json
    kledger sim --nodes 4,6,7 --seeds 3400 --faults all --byzantine all
    kledger sim --nodes 6 --seed 1234 --faults all --byzantine twins --trace

A campaign runs seeds first_seed .. first_seed + seeds - 1 for each node count, with a progress
bar on stderr, and prints a summary (with --json one object: runs, commits, safety_violations,
liveness_failures, failing_seeds, simulated_rounds, view_changes, faults, dropped,
membership_changes, forged_marker_refused, ...). Live reconfiguration is on unless
--no-reconfigure. Each failure prints `seed=S` with the command that replays it. Exit status 1
on any safety violation or liveness failure, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from kledger.cluster.sim.broken import BROKEN_CORES
from kledger.cluster.sim.simulator import (
    BYZANTINE_KINDS,
    FAULT_KINDS,
    SimConfig,
    SimResult,
    run_seed,
)
from kledger.consensus.core import Core

PROGRESS_WIDTH = 30
DEFAULTS = SimConfig()


def _kinds(text: str, known: tuple[str, ...], option: str) -> frozenset[str]:
    if text == "all":
        return frozenset(known)
    if text in ("", "none"):
        return frozenset()
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = chosen - set(known)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{option}: unknown {sorted(unknown)}; choose from {', '.join(known)}, all, none"
        )
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kledger sim", description="Run seeded consensus simulations with faults."
    )
    parser.add_argument("--nodes", default="4", help="node count, or a list such as 4,6,7")
    parser.add_argument("--seeds", type=int, default=100, help="seeds per node count")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, help="replay exactly this one seed")
    parser.add_argument("--trace", action="store_true", help="print the events of a --seed run")
    parser.add_argument("--faults", default="all", help=f"all, none or some of {FAULT_KINDS}")
    parser.add_argument(
        "--byzantine", default="none", help=f"all, none or some of {BYZANTINE_KINDS}"
    )
    parser.add_argument("--fault-phase-ms", type=int, default=DEFAULTS.fault_phase_ms)
    parser.add_argument("--liveness-bound-ms", type=int, default=DEFAULTS.liveness_bound_ms)
    parser.add_argument(
        "--byzantine-keys", type=int, help="Byzantine validator keys (default: f of each n)"
    )
    parser.add_argument(
        "--reconfigure",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="change the validator set now and then: add a spare, remove one, rotate a key"
        " (decided, then enacted by a marker; on by default)",
    )
    parser.add_argument(
        "--reconfigure-probability",
        type=float,
        default=DEFAULTS.reconfigure_probability,
        help="with --reconfigure: how likely a new payload is a validator-set decision",
    )
    parser.add_argument(
        "--spares",
        type=int,
        default=DEFAULTS.spare_nodes,
        metavar="K",
        help="with --reconfigure: K non-voting followers from the start that may be added",
    )
    parser.add_argument(
        "--down-for-epochs",
        type=int,
        default=0,
        metavar="K",
        help="one honest validator is down until the others are K epochs on, then catches up"
        " (implies --reconfigure)",
    )
    parser.add_argument(
        "--leader-reputation",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="skip leaders that failed in this many rounds of committed history (0 = off)",
    )
    parser.add_argument(
        "--crashed-for-good",
        type=int,
        default=0,
        metavar="K",
        help="K validators are down from the start and never restart",
    )
    parser.add_argument(
        "--broken",
        choices=sorted(BROKEN_CORES),
        help="run a core with one safety rule disabled (to see the checks catch it)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def summarize(results: list[SimResult], wall_seconds: float) -> dict[str, Any]:
    faults: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for result in results:
        faults.update(result.faults)
        dropped.update(result.dropped)
    rounds = sum(r.rounds for r in results)
    failing = [
        {
            "nodes": r.nodes,
            "seed": r.seed,
            "problem": _problem(r),
        }
        for r in results
        if not r.ok
    ]
    runs = len(results)
    changes: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for result in results:
        changes.update(result.membership_changes)
        refused.update(result.refused_txs)
    return {
        "runs": runs,
        "commits": sum(r.commits for r in results),
        "simulated_rounds": rounds,
        "simulated_seconds": round(sum(r.simulated_ms for r in results) / 1000, 1),
        "view_changes": sum(r.view_changes for r in results),
        "faults": dict(sorted(faults.items())),
        "dropped": dict(sorted(dropped.items())),
        "safety_violations": sum(1 for r in results if r.safety_violations),
        "liveness_failures": sum(1 for r in results if r.liveness_failure is not None),
        "failing_seeds": failing,
        "epochs": sum(r.epoch - 1 for r in results),
        "membership_changes": dict(sorted(changes.items())),
        "runs_ending_with_another_set": sum(
            1 for r in results if r.final_validators != r.genesis_validators
        ),
        "forged_marker_refused": sum(r.forged_marker_refused for r in results),
        "marker_refused_lagging": sum(r.marker_refused_lagging for r in results),
        "refused_txs": dict(sorted(refused.items())),
        "wall_seconds": round(wall_seconds, 1),
        "rounds_per_wall_second": round(rounds / wall_seconds) if wall_seconds > 0 else 0,
        "seeds_per_10_minutes": round(runs * 600 / wall_seconds) if wall_seconds > 0 else 0,
    }


def _problem(result: SimResult) -> str:
    if result.safety_violations:
        return result.safety_violations[0]
    return result.liveness_failure or ""


def _progress(done: int, total: int, failures: int, started: float) -> None:
    filled = PROGRESS_WIDTH * done // max(total, 1)
    elapsed = time.monotonic() - started
    bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
    sys.stderr.write(f"\r[{bar}] {done}/{total} runs, {failures} failing, {elapsed:.0f}s")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _replay_command(args: argparse.Namespace, nodes: int, seed: int) -> str:
    parts = [f"kledger sim --nodes {nodes} --seed {seed}"]
    parts.append(f"--faults {args.faults or 'none'} --byzantine {args.byzantine or 'none'}")
    if args.broken:
        parts.append(f"--broken {args.broken}")
    if not args.reconfigure:
        parts.append("--no-reconfigure")
    if args.spares != DEFAULTS.spare_nodes:
        parts.append(f"--spares {args.spares}")
    if args.reconfigure_probability != DEFAULTS.reconfigure_probability:
        parts.append(f"--reconfigure-probability {args.reconfigure_probability}")
    if args.down_for_epochs:
        parts.append(f"--down-for-epochs {args.down_for_epochs}")
    if args.byzantine_keys is not None:
        parts.append(f"--byzantine-keys {args.byzantine_keys}")
    if args.fault_phase_ms != DEFAULTS.fault_phase_ms:
        parts.append(f"--fault-phase-ms {args.fault_phase_ms}")
    if args.liveness_bound_ms != DEFAULTS.liveness_bound_ms:
        parts.append(f"--liveness-bound-ms {args.liveness_bound_ms}")
    return " ".join(parts) + " --trace"


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = _kinds(args.faults, FAULT_KINDS, "--faults")
        byzantine = _kinds(args.byzantine, BYZANTINE_KINDS, "--byzantine")
        node_counts = [int(part) for part in args.nodes.split(",")]
    except (argparse.ArgumentTypeError, ValueError) as error:
        parser.error(str(error))
    if any(n < 1 for n in node_counts) or args.seeds < 1:
        parser.error("--nodes and --seeds must be positive")
    if (
        args.leader_reputation < 0
        or args.crashed_for_good < 0
        or args.down_for_epochs < 0
        or args.spares < 0
    ):
        parser.error(
            "--leader-reputation, --crashed-for-good, --down-for-epochs and --spares must not be"
            " negative"
        )
    if not 0.0 <= args.reconfigure_probability <= 1.0:
        parser.error("--reconfigure-probability must be in [0, 1]")
    factory: type[Core] = BROKEN_CORES[args.broken] if args.broken else Core
    base = SimConfig(
        faults=faults,
        byzantine=byzantine,
        fault_phase_ms=args.fault_phase_ms,
        liveness_bound_ms=args.liveness_bound_ms,
        reconfigure=args.reconfigure or args.down_for_epochs > 0,
        reconfigure_probability=args.reconfigure_probability,
        spare_nodes=args.spares,
        down_for_epochs=args.down_for_epochs,
        byzantine_keys=args.byzantine_keys,
        crashed_for_good=args.crashed_for_good,
        core=replace(DEFAULTS.core, leader_reputation_window_rounds=args.leader_reputation),
        core_factory=factory,
    )

    if args.seed is not None:
        if len(node_counts) != 1:
            parser.error("--seed replays one run: give one --nodes value")
        result = run_seed(replace(base, nodes=node_counts[0]), args.seed, trace=args.trace)
        if args.trace:
            for line in result.trace:
                print(line)
        summary = summarize([result], 0.0)
        _print(summary, args.json)
        return 0 if result.ok else 1

    results: list[SimResult] = []
    total = args.seeds * len(node_counts)
    started = time.monotonic()
    failures = 0
    for nodes in node_counts:
        config = replace(base, nodes=nodes)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            result = run_seed(config, seed)
            results.append(result)
            if not result.ok:
                failures += 1
                problem = _problem(result)
                sys.stderr.write(f"\nFAIL nodes={nodes} seed={seed}: {problem}\n")
                sys.stderr.write(f"  replay: {_replay_command(args, nodes, seed)}\n")
            if not args.quiet and (len(results) % 10 == 0 or len(results) == total):
                _progress(len(results), total, failures, started)
    summary = summarize(results, time.monotonic() - started)
    _print(summary, args.json)
    return 0 if failures == 0 else 1


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    for key, value in summary.items():
        if key == "failing_seeds":
            seeds = [f"nodes={item['nodes']} seed={item['seed']}" for item in value]
            print(f"{key}: {', '.join(seeds) or 'none'}")
        else:
            print(f"{key}: {value}")
