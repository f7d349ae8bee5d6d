"""`kledger cluster SUBCOMMAND`: local clusters.

Each subcommand is one entry of SUBCOMMANDS (name, help, add_arguments, run); a part adds its
subcommands (up, down, status, kill, restart: cluster/local/launcher.py) by extending the table,
without touching the others. `init` lives here: it needs no node process.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kledger.cluster.layout import ClusterLayout
from kledger.cluster.local import launcher, membership
from kledger.cluster.local.gen import (
    ALL_ROLES,
    DEFAULT_CHAIN_ID,
    FOUNDING_ORGS,
    ClusterSpec,
    generic_orgs,
    init_cluster,
    issue_client,
)


@dataclass(frozen=True, slots=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="the new cluster directory")
    parser.add_argument(
        "--nodes",
        type=int,
        help="N generic orgs ORG1..ORGN with every role (default: the six founding orgs)",
    )
    parser.add_argument("--chain-id", default=DEFAULT_CHAIN_ID, help="the chain id in genesis")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="host the nodes listen on and peers dial (added to the TLS certificates)",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        help="node i uses ports BASE+3i (client), +1 (peer), +2 (metrics); default: the first "
        "free block from 20000 up, below the OS's ephemeral port range",
    )


def _run_init(args: argparse.Namespace) -> int:
    orgs = FOUNDING_ORGS if args.nodes is None else generic_orgs(args.nodes)
    spec = ClusterSpec(orgs=orgs, chain_id=args.chain_id, host=args.host, base_port=args.base_port)
    layout = init_cluster(args.dir, spec)
    print(f"cluster {spec.chain_id!r} created in {layout.root}")
    for node in layout.nodes():
        print(
            f"  {node.org:<8} client {node.host}:{node.client_port}  peer {node.peer_port}"
            f"  metrics {node.metrics_port}"
        )
    print(f"start it with: kledger cluster up {layout.root}")
    return 0


def _issue_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="the cluster directory (holds ca/ca.key)")
    parser.add_argument("--org", required=True, help="the org the new member belongs to")
    parser.add_argument(
        "--name", required=True, help="file name under DIR/clients/ (NAME.key, NAME.pem, ...)"
    )
    parser.add_argument(
        "--member-key",
        type=Path,
        help="bind this existing member key file instead of making a new key",
    )


def _run_issue_client(args: argparse.Namespace) -> int:
    layout, key = issue_client(args.dir, args.org, args.name, args.member_key)
    register = layout.root / "clients" / f"{args.name}.register.json"
    payload = {"org": args.org, "public_key": key.public_key.hex()}
    register.write_text(json.dumps({"type": "RegisterMember", "payload": payload}, indent=2))
    print(f"member key {key.public_key.hex()} of {args.org}")
    print(
        f"  certificate {layout.client_cert(args.name)}, TLS key {layout.client_tls_key(args.name)}"
    )
    print(
        "  it reads nothing until the org's admin registers the key: kledger tx submit "
        f"{register} --key {layout.admin_key(args.org)} --cluster {layout.root} --wait"
    )
    return 0


def _dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="the cluster directory")


def _node_arguments(parser: argparse.ArgumentParser) -> None:
    _dir_argument(parser)
    parser.add_argument("node", help="the org id of the node")


def _layout(args: argparse.Namespace) -> ClusterLayout:
    layout = ClusterLayout(args.dir)
    if args.__dict__.get("node") and args.node not in {n.org for n in layout.nodes()}:
        raise ValueError(f"{args.node!r} is not a node of {layout.root}")
    return layout


def _run_up(args: argparse.Namespace) -> int:
    layout = _layout(args)
    failures = launcher.up(layout)
    if failures:
        for failed in failures:
            print(f"kledger cluster up: {failed.report()}", file=sys.stderr)
        print(
            f"kledger cluster up: not serving: {', '.join(f.org for f in failures)}; "
            "stopped every node this command started",
            file=sys.stderr,
        )
        return 1
    print(f"{len(layout.nodes())} nodes serving; kledger cluster status {layout.root}")
    return 0


def _run_down(args: argparse.Namespace) -> int:
    stopped = launcher.down(_layout(args))
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def _run_kill(args: argparse.Namespace) -> int:
    if not launcher.kill_node(_layout(args), args.node):
        print(f"{args.node} was not running", file=sys.stderr)
        return 1
    print(f"killed {args.node} (SIGKILL)")
    return 0


def _run_restart(args: argparse.Namespace) -> int:
    layout = _layout(args)
    launcher.stop_node(layout, args.node)
    launcher.check_ports(layout, [args.node])
    launcher.start_node(layout, args.node)
    late = launcher.wait_serving(layout, [args.node])
    if late:
        failed = launcher.failure(layout, args.node, launcher.READY_TIMEOUT_S)
        print(f"kledger cluster restart: {failed.report()}", file=sys.stderr)
        launcher.stop_node(layout, args.node)
        return 1
    print(f"{args.node} restarted and serving")
    return 0


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _dir_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per node")


def _run_status(args: argparse.Namespace) -> int:
    rows = launcher.status(_layout(args))
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        print(
            f"{'node':<8} {'pid':>7} {'up':<5} {'epoch':>5} {'role':<9} {'height':>7} {'cert':>7} "
            f"{'round':>7} "
            f"{'leader':<8} {'mempool':>7}  last root"
        )
        for row in rows:
            print(row.line())
    return 0 if all(row.reachable for row in rows) else 1


def _add_org_arguments(parser: argparse.ArgumentParser) -> None:
    _dir_argument(parser)
    parser.add_argument("org", help="the new org's id (e.g. ORG5)")
    parser.add_argument("--name", help="the org's name (default: the id)")
    parser.add_argument(
        "--roles",
        default=",".join(ALL_ROLES),
        help="comma-separated roles of the new org (default: every role)",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="only make the org's files and write the proposal to DIR/governance/add-ORG.json "
        "(for orgs on separate hosts: each approves with its own key)",
    )


def _run_add_org(args: argparse.Namespace) -> int:
    roles = [r for r in args.roles.split(",") if r]
    if args.prepare_only:
        layout, new = membership.prepare_org(args.dir, args.org, args.name or args.org, roles)
        proposal = membership.write_proposal(layout, f"add-{args.org}", new.action)
        print(f"{args.org}: files in {layout.node_dir(args.org)}; proposal in {proposal}")
        print(
            f"  start its node (a follower until it votes): kledger cluster restart DIR {args.org}"
        )
        return 0
    epoch = membership.add_org(args.dir, args.org, args.name or args.org, roles, print)
    print(f"{args.org} votes from epoch {epoch}")
    return 0


def _run_remove_org(args: argparse.Namespace) -> int:
    membership.remove_org(args.dir, args.node, print)
    return 0


def _run_rotate_key(args: argparse.Namespace) -> int:
    membership.rotate_key(args.dir, args.node, print)
    return 0


SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        "init",
        "create keys, a CA and TLS certificates, genesis and node configs",
        _init_arguments,
        _run_init,
    ),
    Subcommand(
        "issue-client",
        "a client certificate (and member key) for a further member of an org",
        _issue_client_arguments,
        _run_issue_client,
    ),
    Subcommand("up", "start every node and wait until each serves", _dir_argument, _run_up),
    Subcommand("down", "stop every node gracefully (SIGTERM)", _dir_argument, _run_down),
    Subcommand(
        "status",
        "per node: reachable, epoch and role, height, round, leader, last root",
        _status_arguments,
        _run_status,
    ),
    Subcommand("kill", "kill -9 one node", _node_arguments, _run_kill),
    Subcommand(
        "add-org",
        "add an org: its node syncs as a follower, then votes from the next epoch",
        _add_org_arguments,
        _run_add_org,
    ),
    Subcommand(
        "remove-org",
        "remove an org from the validator set (governance vote, next epoch)",
        _node_arguments,
        _run_remove_org,
    ),
    Subcommand(
        "rotate-key",
        "give an org's node a new validator key from the next epoch on",
        _node_arguments,
        _run_rotate_key,
    ),
    Subcommand("restart", "stop (if running) and start one node", _node_arguments, _run_restart),
]


def build_parser(subcommands: list[Subcommand] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kledger cluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for command in SUBCOMMANDS if subcommands is None else subcommands:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(run=command.run)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except ValueError as exc:
        print(f"kledger cluster {args.command}: {exc}", file=sys.stderr)
        return 2
    except membership.MembershipError as exc:
        print(f"kledger cluster {args.command}: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
