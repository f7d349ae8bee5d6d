"""Changing a local cluster's validator set: `kledger cluster add-org | remove-org | rotate-key`.

Each command runs, on one machine whose DIR holds every org's keys, the procedure that
docs/node.md "Epochs: changing the validator set" describes for organizations on separate hosts:

- add-org: make the new org's keys, its node's TLS certificate (from the cluster CA), ports and
  node.json (marked joining); the ProposeGovernance tx (add_org with the validator key, its proof
  of possession, the peer address and the TLS certificate's fingerprint); start the node, which
  syncs as a non-voting follower; submit the proposal and the approvals of as many validator
  orgs as the quorum needs; when the follower has caught up, submit its ValidatorReady tx
  (signed by its new validator key); wait until every node runs the next epoch.
- remove-org: proposal and approvals; wait for the next epoch; stop the removed org's node.
- rotate-key: a new validator key, written beside the old one and named `next_validator_key` in
  the node's node.json (the node restarts holding both, and signs each epoch with the key that
  epoch's set names); proposal, approvals, ValidatorReady signed by the new key; the next epoch.

Every tx goes through a node's client port with the signing org's member certificate, exactly
as an org's back office would send it; nothing here writes to a node's store.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.client.submit import submit_and_wait
from kledger.cluster.layout import ClusterLayout, NodeAddress
from kledger.cluster.local import launcher
from kledger.cluster.local.gen import (
    ALL_ROLES,
    PORTS_PER_NODE,
    _write_manifest,
    _write_private,
    write_client_cert,
)
from kledger.cluster.local.ports import claim_block
from kledger.consensus.validators import quorum_size
from kledger.node.chain.genesis import ORG_ID, load_genesis
from kledger.node.chain.keys import KeyPair, load_key, save_key
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import sign_tx
from kledger.node.config import Address, Listen, NodeConfig, TlsFiles, load_config, save_config
from kledger.node.net.tls import Authority, certificate_sha256, issue_node_cert
from kledger.node.registry import governance
from kledger.node.registry.tx_file import body_from_json
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

# How long each step may take before the command gives up and says which step.
STEP_TIMEOUT_S = 120.0
POLL_S = 0.5


class MembershipError(RuntimeError):
    """A step of a membership change did not happen; the message names the step."""


# -- the txs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterTxs:
    """Signs and submits txs to a running local cluster, as the orgs' back offices would."""

    layout: ClusterLayout
    chain_id: str

    def submit(self, document: dict[str, Any], key: KeyPair, via: str) -> TxResult | Receipt:
        """Sign `document` ({"type", "payload"}) with `key` and submit it through `via`'s node
        with `via`'s member certificate; the committed receipt, or the refusal."""
        body = body_from_json(document, self.chain_id, secrets.randbits(63))
        tx = sign_tx(key, body)
        node = node_of(self.layout, via)
        channel = open_channel(
            f"{node.host}:{node.client_port}",
            self.layout.ca_cert.read_bytes(),
            ClientCert.member(self.layout, via),
        )
        try:
            stub = ledger_pb2_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            return submit_and_wait(stub, [tx.encoding], STEP_TIMEOUT_S)[0]
        finally:
            channel.close()

    def governance(
        self, proposal_id: str, action: dict[str, Any], voters: Sequence[str]
    ) -> list[TxResult | Receipt]:
        """The proposal (signed by voters[0]'s member key, which counts as its approval) and
        the approvals of the other voters, each through its own org's node."""
        results = [
            self.submit(
                {
                    "type": "ProposeGovernance",
                    "payload": {"proposal_id": proposal_id, "action": action},
                },
                load_key(self.layout.client_key(voters[0])),
                voters[0],
            )
        ]
        for org in voters[1:]:
            results.append(
                self.submit(
                    {"type": "ApproveGovernance", "payload": {"proposal_id": proposal_id}},
                    load_key(self.layout.client_key(org)),
                    org,
                )
            )
        for org, result in zip(voters, results, strict=True):
            status = result.result.status if isinstance(result, Receipt) else result.status
            if status != "OK":
                message = result.result.message if isinstance(result, Receipt) else result.message
                raise MembershipError(
                    f"{proposal_id}: {org}'s vote was refused: {status} {message}"
                )
        return results


# -- waiting on the nodes --------------------------------------------------------------------


def node_of(layout: ClusterLayout, org: str) -> NodeAddress:
    for node in layout.nodes():
        if node.org == org:
            return node
    raise ValueError(f"{org!r} is not a node of {layout.manifest}")


def _status(layout: ClusterLayout, org: str) -> ledger_pb2.NodeStatus | None:
    node = node_of(layout, org)
    channel = open_channel(
        f"{node.host}:{node.client_port}", layout.ca_cert.read_bytes(), ClientCert.public(layout)
    )
    try:
        stub = ledger_pb2_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        reply: ledger_pb2.NodeStatus = stub.GetStatus(ledger_pb2.GetStatusRequest(), timeout=2.0)
        return reply
    except Exception:
        return None
    finally:
        channel.close()


def wait_until(step: str, ready: Callable[[], bool], timeout_s: float = STEP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise MembershipError(f"{step}: not done after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def current_epoch(layout: ClusterLayout, orgs: Sequence[str]) -> int:
    """The highest epoch any of `orgs`' nodes reports."""
    epochs = [reply.epoch for org in orgs if (reply := _status(layout, org)) is not None]
    if not epochs:
        raise MembershipError(f"no node of {', '.join(orgs)} answers GetStatus")
    return max(epochs)


def wait_for_epoch(layout: ClusterLayout, orgs: Sequence[str], epoch: int) -> None:
    def there() -> bool:
        replies = [_status(layout, org) for org in orgs]
        return all(r is not None and r.epoch >= epoch for r in replies)

    wait_until(f"every node of {', '.join(orgs)} in epoch {epoch}", there)


def wait_caught_up(layout: ClusterLayout, follower: str, leaders: Sequence[str]) -> None:
    """The follower's committed height has reached what the others had when the wait began."""
    heights = [r.height for org in leaders if (r := _status(layout, org)) is not None]
    target = max(heights, default=0)

    def there() -> bool:
        reply = _status(layout, follower)
        return reply is not None and reply.height >= target

    wait_until(f"{follower} synced to height {target}", there)


def validators_now(layout: ClusterLayout, orgs: Sequence[str]) -> list[str]:
    """The orgs whose nodes report themselves validators of the current (highest) epoch: a
    removed org's node that still runs may not have heard of the epoch that left it out, and
    calls itself a validator of its old one."""
    replies = {org: reply for org in orgs if (reply := _status(layout, org)) is not None}
    epoch = max((reply.epoch for reply in replies.values()), default=0)
    return [
        org for org, reply in replies.items() if reply.epoch == epoch and reply.role == "validator"
    ]


def quorum_of(voters: Sequence[str]) -> list[str]:
    """The first q of `voters`: enough approvals for a proposal to execute."""
    return list(voters)[: quorum_size(len(voters))]


# -- add-org ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewOrg:
    org: str
    node: NodeAddress
    validator: KeyPair
    action: dict[str, Any]  # the add_org action of the proposal


def prepare_org(
    root: Path, org: str, name: str, roles: Sequence[str] = ALL_ROLES
) -> tuple[ClusterLayout, NewOrg]:
    """Make everything the new org's node needs under DIR (keys, certificates, ports, node.json,
    the manifest entry) and the add_org action. ValueError naming the argument when bad."""
    layout = ClusterLayout(Path(root))
    nodes = layout.nodes()
    if not ORG_ID.match(org):
        raise ValueError(f"ORG: {org!r} must match {ORG_ID.pattern}")
    if org in {n.org for n in nodes}:
        raise ValueError(f"ORG: {org} is already a node of {layout.manifest}")
    unknown = sorted(set(roles) - set(ALL_ROLES))
    if unknown:
        raise ValueError(f"--roles: unknown role(s) {', '.join(unknown)}")
    genesis = load_genesis(layout.genesis)
    try:
        authority = Authority(layout.ca_cert.read_bytes(), layout.ca_key.read_bytes())
    except OSError as exc:
        raise ValueError(f"{exc.filename}: cannot read the cluster CA ({exc.strerror})") from None
    host = nodes[0].host
    node_dir = layout.node_dir(org)
    client_port, peer_port, metrics_port = claim_block(PORTS_PER_NODE, host, node_dir)
    node = NodeAddress(org, host, client_port, peer_port, metrics_port)

    validator, admin, client = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    save_key(layout.admin_key(org), admin)
    save_key(layout.client_key(org), client)
    write_client_cert(layout, authority, org, org, client.public_key)
    save_key(node_dir / "validator.key", validator)
    extra_hosts = () if host in ("127.0.0.1", "localhost") else (host,)
    cert_pem, key_pem = issue_node_cert(authority, org, extra_hosts)
    (node_dir / "tls.pem").write_bytes(cert_pem)
    _write_private(node_dir / "tls.key", key_pem)
    config = NodeConfig(
        org=org,
        genesis=layout.genesis,
        validator_key=node_dir / "validator.key",
        data_dir=node_dir / "data",
        tls=TlsFiles(ca=layout.ca_cert, cert=node_dir / "tls.pem", key=node_dir / "tls.key"),
        listen=Listen(
            client=Address(host, client_port),
            peer=Address(host, peer_port),
            metrics=Address(host, metrics_port),
        ),
        peers={other.org: Address(other.host, other.peer_port) for other in nodes},
        # The cluster's consensus timings (a node with other timeouts would still be safe, but
        # would time out out of step with the rest).
        consensus=load_config(layout.node_config(nodes[0].org)).consensus,
        joining=True,
    )
    save_config(layout.node_config(org), config)
    _write_manifest(layout, genesis.chain_id, [*nodes, node])
    action = {
        "kind": "add_org",
        "org_id": org,
        "name": name,
        "roles": sorted(set(roles)),
        "admin_key": admin.public_key.hex(),
        "member_keys": [client.public_key.hex()],
        "validator_key": validator.public_key.hex(),
        "validator_pop": governance.sign_pop(validator, genesis.chain_id, org).hex(),
        "peer_address": f"{host}:{peer_port}",
        "tls_cert_sha256": tls_fingerprint(cert_pem),
    }
    return layout, NewOrg(org, node, validator, action)


def write_proposal(layout: ClusterLayout, name: str, action: dict[str, Any]) -> Path:
    """DIR/governance/NAME.json: the ProposeGovernance tx file for `kledger tx submit`."""
    path = layout.root / "governance" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"type": "ProposeGovernance", "payload": {"proposal_id": name, "action": action}}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def tls_fingerprint(cert_pem: bytes) -> str:
    """The TLS identity an add_org pins: its node certificate's SHA-256, hex."""
    return certificate_sha256(cert_pem).hex()


def add_org(
    root: Path, org: str, name: str, roles: Sequence[str], report: Callable[[str], None]
) -> int:
    """The whole add-org procedure; returns the epoch the new org votes in."""
    before = ClusterLayout(Path(root))
    members = [n.org for n in before.nodes()]
    chain_id = load_genesis(before.genesis).chain_id
    epoch = current_epoch(before, members)
    validators = validators_now(before, members)
    voters = quorum_of(validators)
    layout, new = prepare_org(root, org, name, roles)
    report(f"{org}: keys, TLS certificate and node.json in {layout.node_dir(org)}")
    launcher.check_ports(layout, [org])
    launcher.start_node(layout, org)
    if launcher.wait_serving(layout, [org]):
        raise MembershipError(launcher.failure(layout, org, launcher.READY_TIMEOUT_S).report())
    report(f"{org}: node started as a follower (pid {launcher.node_pid(layout, org)})")
    txs = ClusterTxs(layout, chain_id)
    txs.governance(f"add-{org}-{secrets.token_hex(4)}", new.action, voters)
    report(f"add_org {org}: proposed and approved by {', '.join(voters)}")
    wait_caught_up(layout, org, members)
    report(f"{org}: caught up")
    ready = txs.submit({"type": "ValidatorReady", "payload": {"org": org}}, new.validator, org)
    _require_ok(ready, f"{org}'s ValidatorReady")
    report(f"{org}: announced ready with its validator key")
    wait_for_epoch(layout, [*validators, org], epoch + 1)
    report(f"epoch {epoch + 1}: {org} is a validator")
    return epoch + 1


@dataclass(frozen=True, slots=True)
class ClusterNow:
    """A running local cluster as a membership command starts from."""

    layout: ClusterLayout
    chain_id: str
    epoch: int  # the highest epoch a node reports
    validators: list[str]  # the nodes that report themselves validators of it


def cluster_now(root: Path, org: str) -> ClusterNow:
    """The cluster a command on `org` starts from; ValueError if `org` is no node of it."""
    layout = ClusterLayout(Path(root))
    members = [n.org for n in layout.nodes()]
    if org not in members:
        raise ValueError(f"ORG: {org!r} is not a node of {layout.manifest}")
    return ClusterNow(
        layout,
        load_genesis(layout.genesis).chain_id,
        current_epoch(layout, members),
        validators_now(layout, members),
    )


def remove_org(root: Path, org: str, report: Callable[[str], None]) -> int:
    now = cluster_now(root, org)
    layout, chain_id, epoch, validators = now.layout, now.chain_id, now.epoch, now.validators
    if org not in validators:
        raise ValueError(f"ORG: {org} is not a validator of epoch {epoch}")
    voters = quorum_of([o for o in validators if o != org] + [org])
    ClusterTxs(layout, chain_id).governance(
        f"remove-{org}-{secrets.token_hex(4)}", {"kind": "remove_org", "org_id": org}, voters
    )
    report(f"remove_org {org}: proposed and approved by {', '.join(voters)}")
    wait_for_epoch(layout, [o for o in validators if o != org], epoch + 1)
    report(f"epoch {epoch + 1}: {org} is no longer a validator")
    return epoch + 1


def rotate_key(root: Path, org: str, report: Callable[[str], None]) -> int:
    now = cluster_now(root, org)
    layout, chain_id, epoch, validators = now.layout, now.chain_id, now.epoch, now.validators
    config_path = layout.node_config(org)
    config = load_config(config_path)
    new_key = KeyPair.generate()
    key_file = layout.node_dir(org) / f"validator-epoch{epoch + 1}.key"
    save_key(key_file, new_key)
    save_config(config_path, _with_next_key(config, key_file))
    launcher.stop_node(layout, org)
    launcher.start_node(layout, org)
    if launcher.wait_serving(layout, [org]):
        raise MembershipError(launcher.failure(layout, org, launcher.READY_TIMEOUT_S).report())
    report(f"{org}: restarted holding its next validator key {new_key.public_key.hex()[:16]}…")
    txs = ClusterTxs(layout, chain_id)
    action = {
        "kind": "change_validator",
        "org_id": org,
        "validator_key": new_key.public_key.hex(),
        "validator_pop": governance.sign_pop(new_key, chain_id, org).hex(),
    }
    voters = quorum_of(validators)
    txs.governance(f"rotate-{org}-{secrets.token_hex(4)}", action, voters)
    report(f"change_validator {org}: proposed and approved by {', '.join(voters)}")
    _require_ok(
        txs.submit({"type": "ValidatorReady", "payload": {"org": org}}, new_key, org),
        f"{org}'s ValidatorReady",
    )
    wait_for_epoch(layout, validators, epoch + 1)
    report(f"epoch {epoch + 1}: {org} signs with its new key")
    return epoch + 1


def _with_next_key(config: NodeConfig, key_file: Path) -> NodeConfig:
    return replace(config, next_validator_key=key_file)


def _require_ok(result: TxResult | Receipt, what: str) -> None:
    inner = result.result if isinstance(result, Receipt) else result
    if inner.status != "OK":
        raise MembershipError(f"{what} was refused: {inner.status} {inner.message}")
