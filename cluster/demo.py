"""`./scripts/demo`: the six founding orgs on one machine, doing real work from the CLI.

Every step runs the real `kledger` command (printed before it runs) against real node processes
on 127.0.0.1, each with its own LevelDB, talking gRPC over mutual TLS:

  1. create the cluster (keys, CA, certificates, genesis) and start six nodes
  2. load the sample catalog: works (CWR 2.2, with the ACK back), parties, recordings, links,
     shares, an overclaim
  3. report usage (a DDEX DSR file) and run a distribution
  4. resolve one song from each of its four codes (one as the public reader), read a statement
     as the party's CMO and be refused it as another org, ask the AI-training question
  5. fetch certified proofs and verify them offline against the genesis file only
  6. kill -9 one node: the others keep committing; restart it: it catches up to the same root

The cluster is left running; the last lines say how to explore and stop it. If a step fails,
the demo prints what failed and the log tail of the node that did (a node that is down, else
the node the commands asked), stops every node and exits 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kledger.cluster.layout import ClusterLayout
from kledger.cluster.local import launcher

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).resolve().parent / "sample"
SHOWN_LINES = 14
KILLED = "KEPA"
# The load order of docs/registry.md: each file signed by the org that owns the data.
IMPORTS = (
    ("works", "CW260001301_118.V22", "KOMCA"),  # CWR 2.2 from the publisher Hanbit Music
    ("works", "CW260001WR0_000.V22", "KOSCAP"),  # CWR 2.2 from a self-publishing writer
    ("txs", "komca-ai.jsonl", "KOMCA"),
    ("txs", "fkmp-parties.jsonl", "FKMP"),
    ("txs", "riak-recordings.jsonl", "RIAK"),
    ("txs", "komca-links.jsonl", "KOMCA"),
    ("txs", "kmca-links.jsonl", "KMCA"),
    ("txs", "fkmp-rights.jsonl", "FKMP"),
    ("txs", "koscap-overclaim.jsonl", "KOSCAP"),
    ("usage", "DSR_KMCA_MELON_Subscription_2026-01_KR_1of1_20260205T090000.tsv", "KMCA"),  # DSR
)
SONG = {"iswc": "T3170000003", "isrc": "KRA402500001", "cid": "A1486348446056643"}
SONG_UCI = "G8011+RIAK-20260001"
PUBLISHER = "IPI-79349878153"  # Hanbit Music Publishing: its CWR shares, paid


def kledger_command() -> list[str]:
    return [sys.executable, "-m", "kledger.cluster.cli"]


def heading(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(args: list[str], *, show: int = SHOWN_LINES, check: bool = True, tail: bool = False) -> str:
    """Run `kledger ARGS`, print the command and the head (or tail) of what it printed."""
    printable = " ".join(["kledger", *args]).replace(str(ROOT) + "/", "")
    print(f"$ {printable}", flush=True)
    done = subprocess.run(
        [*kledger_command(), *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    output = (done.stdout + done.stderr).rstrip()
    lines = output.splitlines()
    failed = check and done.returncode != 0
    if failed:
        show = len(lines)  # all of it: the reason is often at the end
    elif tail:
        lines = lines[-show:]
    for line in lines[:show]:
        print(f"  {line}")
    if len(lines) > show:
        print(f"  ... ({len(lines) - show} more lines)")
    if failed:
        raise SystemExit(f"demo: `{printable}` failed with exit {done.returncode}")
    return done.stdout


def fresh_cluster(directory: Path) -> ClusterLayout:
    layout = ClusterLayout(directory)
    if layout.manifest.exists():
        launcher.down(layout)
        shutil.rmtree(directory)
    run(["cluster", "init", str(directory)])
    run(["cluster", "up", str(directory)])
    return layout


def load_catalog(layout: ClusterLayout, c: list[str]) -> None:
    acks = layout.root / "acks"
    acks.mkdir(exist_ok=True)
    for kind, name, org in IMPORTS:
        ack = ["--ack", str(acks / f"{name}.ACK")] if kind == "works" else []
        run(
            ["import", kind, str(SAMPLE / name), "--key", str(layout.client_key(org)),
             "--as", org, "--quiet", *ack, *c],
            show=1,
            tail=True,
            check=False,  # the usage report holds one bad ISRC on purpose; the summary says so
        )  # fmt: skip
    first_ack = acks / f"{IMPORTS[0][1]}.ACK"
    print(f"  (the ACK KOMCA returns to the publisher, {first_ack.name}:)")
    for line in first_ack.read_text().splitlines()[:4]:
        print(f"  {line.rstrip()}")


def distribution(layout: ClusterLayout, c: list[str]) -> str:
    request = layout.root / "run-distribution.json"
    request.write_text(
        json.dumps(
            {
                "type": "RunDistribution",
                "payload": {
                    "distribution_id": "KR-2026-01",
                    "period": "2026-01",
                    "territory": "KR",
                    "currency": "KRW",
                },
            }
        )
    )
    out = run(
        ["tx", "submit", str(request), "--key", str(layout.client_key("KOMCA")), "--wait", *c]
    )
    tx_hash: str = json.loads(out)["tx_hash"]
    wait_queryable(layout, int(json.loads(out)["receipt"]["height"]))
    run(["query", "distribution", "KR-2026-01", "--recompute", *c])
    return tx_hash


def wait_queryable(layout: ClusterLayout, height: int, timeout_s: float = 60) -> None:
    """Until the node the commands ask has a certificate for `height`. Queries answer from the
    newest certified state (node/certified_state.py) while `tx submit --wait` returns at
    commit, when the height's certificate (header signatures of a quorum of nodes) may still be
    on its way: asked then, the node does not know the tx yet (NOT_FOUND)."""
    node = layout.nodes()[0]  # the one `--cluster` picks (cluster/connect.py)
    deadline = time.monotonic() + timeout_s
    while launcher.node_status(layout, node).certified_height < height:
        if time.monotonic() > deadline:
            return  # the query below then fails, saying what it does not find
        time.sleep(0.2)


def wait_certified(layout: ClusterLayout, tx_hash: str, c: list[str], out: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(
            [*kledger_command(), "proof", "get", tx_hash, "--out", str(out), *c],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    print(f"$ kledger proof get {tx_hash[:16]}... --out {out.name} --cluster {layout.root.name}")


def verify_offline(layout: ClusterLayout, tx_hash: str, c: list[str]) -> None:
    genesis = str(layout.genesis)
    bundle = layout.root / "proof-distribution.json"
    wait_certified(layout, tx_hash, c, bundle)
    run(["verify", "proof", str(bundle), "--genesis", genesis])
    tampered = layout.root / "proof-tampered.json"
    value = json.loads(bundle.read_text())
    value["leaf"] = value["leaf"][:-2] + ("00" if value["leaf"][-2:] != "00" else "01")
    tampered.write_text(json.dumps(value))
    print("  (the same bundle with one byte of the transaction changed:)")
    run(["verify", "proof", str(tampered), "--genesis", genesis], check=False)
    proofs = sorted((layout.root / "proofs").glob("proof-*.json"))
    if proofs:
        run(["verify", "state", str(proofs[0]), "--genesis", genesis], show=6)


def survive_a_crash(layout: ClusterLayout, c: list[str]) -> None:
    run(["cluster", "kill", str(layout.root), KILLED])
    party = layout.root / "party.json"
    party.write_text(
        json.dumps(
            {
                "type": "RegisterParty",
                "payload": {
                    "party_id": "KOMCA-P9001",
                    "kind": "person",
                    "names": [{"name": "Demo Writer", "ipi": "00662307358"}],
                    "memberships": [{"society": "KOMCA", "right": "PR", "territory": "Worldwide"}],
                },
            }
        )
    )
    run(["tx", "submit", str(party), "--as", "KOMCA", "--wait", *c], show=8, check=False)
    run(["cluster", "status", str(layout.root)], check=False)
    run(["cluster", "restart", str(layout.root), KILLED])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = {row.org: row for row in launcher.status(layout)}
        if (
            all(r.reachable for r in rows.values())
            and rows[KILLED].height >= max(r.height for r in rows.values() if r.org != KILLED) - 1
        ):
            break
        time.sleep(0.5)
    run(["cluster", "status", str(layout.root)])


def report_failure(layout: ClusterLayout) -> None:
    """After a failed step: the log tail of each node that is down (or, when all run, of the
    node the commands ask), then stop every node."""
    try:
        nodes = layout.nodes()
    except ValueError:
        return  # no cluster yet: nothing was started
    down = [n.org for n in nodes if launcher.node_pid(layout, n.org) is None]
    if len(down) == len(nodes):
        print("  no node is running (`cluster up` above says why)", flush=True)
        return
    for org in down or [nodes[0].org]:
        state = "is down" if org in down else "is running (the node the commands ask)"
        tail = launcher.log_tail(layout, org)
        print(f"  {org} {state}; last {len(tail)} lines of {layout.node_dir(org)}/node.log:")
        for line in tail:
            print(f"  | {line}")
    print(f"  stopped: {', '.join(launcher.down(layout))}", flush=True)


def walkthrough(directory: Path) -> int:
    c = ["--cluster", str(directory)]

    heading("1. Six organizations, six nodes: keys, CA, TLS certificates, genesis; start")
    layout = fresh_cluster(directory)
    run(["cluster", "status", str(directory)])

    heading("2. Load the sample catalog, each file signed by the org that owns it")
    load_catalog(layout, c)

    heading("3. A distribution over January's usage, re-computed from state")
    tx_hash = distribution(layout, c)

    heading("4. One song, four codes; who may read a statement; may it train an AI model?")
    proofs = str(directory / "proofs")
    for kind, code in SONG.items():
        run(["query", "resolve", kind, code, *c, "--proofs", proofs], show=4)
    print("  (the catalog is public: anyone with ca.pem and the public reader certificate)")
    run(["query", "resolve", "uci", SONG_UCI, *c, "--public"], show=4)
    # Commands read as KOMCA, the first node's org, unless told (cluster/client/connect.py).
    run(["query", "statement", "RIAK-L01", "2026-01", *c, "--member", "RIAK"], show=10)
    print("  (the same statement asked by KOSCAP, which is not RIAK-L01's CMO:)")
    run(["query", "statement", "RIAK-L01", "2026-01", *c, "--member", "KOSCAP"], check=False)
    run(["query", "statement", PUBLISHER, "2026-01", *c], show=10)
    run(["query", "ai", "isrc", SONG["isrc"], "--territory", "KR", *c], show=10)

    heading("5. Verify offline, trusting only genesis.json")
    verify_offline(layout, tx_hash, c)

    heading(f"6. kill -9 {KILLED}: the ledger keeps committing; restart: it catches up")
    survive_a_crash(layout, c)

    heading("The cluster is still running")
    print(f"  explore:  .venv/bin/kledger cluster status {directory}")
    print(f"            .venv/bin/kledger query overclaims --cluster {directory}")
    print(f"            .venv/bin/kledger header --cluster {directory}")
    print(f"  metrics:  curl -s http://127.0.0.1:{layout.nodes()[0].metrics_port}/metrics")
    print(f"  logs:     {directory}/nodes/*/node.log")
    print(f"  stop:     .venv/bin/kledger cluster down {directory}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument("--dir", type=Path, default=ROOT / ".cluster" / "demo")
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    try:
        return walkthrough(directory)
    except SystemExit as failed:  # a step's command failed (run)
        print(failed, file=sys.stderr, flush=True)
        heading("The demo failed")
        report_failure(ClusterLayout(directory))
        return 1
    except BaseException:  # a bug here, or Ctrl-C: still leave no node running
        report_failure(ClusterLayout(directory))
        raise


if __name__ == "__main__":
    sys.exit(main())
