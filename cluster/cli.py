"""`kledger`: one command, subcommands owned by the part that implements them.

Each subcommand module exposes `main(argv: list[str]) -> int` and builds its own argparse parser,
so a part adds a command without touching the others. Modules are imported only when their
command runs, which keeps `kledger verify` free of the node's heavier imports.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "verify": (
        "kledger.node.proof.verify_cli",
        "check Merkle proofs, certified bundles and state proofs offline",
    ),
    "id": (
        "kledger.cluster.client.ident_cli",
        "check and normalize an identifier (ISWC, ISRC, UCI, CID, IPI, ...)",
    ),
    "node": ("kledger.node.main", "run one node: kledger node start --config FILE"),
    "sim": (
        "kledger.cluster.sim.cli",
        "run seeded consensus simulations with faults and Byzantine nodes",
    ),
    "cluster": ("kledger.cluster.local.cli", "init, start, stop and inspect a local cluster"),
    "tx": ("kledger.cluster.client.cli", "submit and fetch transactions"),
    "proof": ("kledger.cluster.client.cli", "fetch certified inclusion and consistency proofs"),
    "header": ("kledger.cluster.client.cli", "show the latest certified header"),
    "query": (
        "kledger.cluster.client.query_cli",
        "registry queries: resolve codes, shares, statements, AI policy",
    ),
    "import": (
        "kledger.cluster.client.import_cli",
        "bulk-load works (CISAC CWR 2.1/2.2, with the ACK back), usage (DDEX DSR), JSON-line txs",
    ),
    "export": (
        "kledger.cluster.client.export_cli",
        "write the registry's works as a CWR 2.2 file",
    ),
    "bench": (
        "kledger.cluster.bench.main",
        "benchmark a fresh local cluster against this machine's limit",
    ),
    "bench-flood": (
        "kledger.cluster.bench.flood",
        "one org floods a loaded 4-node cluster: the others' commit rate and GetStatus latency",
    ),
    "bench-etcd": (
        "kledger.cluster.bench.etcd",
        "the yardstick: a 3-member etcd cluster under the same client machinery, puts/s",
    ),
    "bench-idle": (
        "kledger.cluster.bench.idle",
        "an idle cluster: blocks and bytes per idle minute, the first tx after the idle window",
    ),
    "bench-catalog": (
        "kledger.cluster.bench.catalog",
        "load a synthetic national catalog through `kledger import`: works/s, first vs last 10 %",
    ),
    "bench-pipeline": (
        "kledger.cluster.bench.pipeline",
        "one node's admission, execution and commit path in one process, µs per tx",
    ),
}


def usage() -> str:
    lines = ["usage: kledger COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "kledger COMMAND --help shows a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"kledger: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    # Modules serving several commands (tx, proof, header, query) see the command name first.
    shared = sum(1 for m, _ in COMMANDS.values() if m == COMMANDS[name][0]) > 1
    result: int = module.main([name, *rest] if shared else rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
