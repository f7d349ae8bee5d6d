"""The node process: the composition root that wires store, registry, mempool, consensus driver,
peer transport, certifier and gRPC services together (docs/design.md §3), and runs them. It
holds no ledger logic: admission is kledger.node.ordering.admission (shared by clients and
gossip), the client service's backend is kledger.node.api.ledger_backend, the core's restart
point is kledger.node.ordering.restore.

Start-up order (each step refuses to go on with a clear ValueError / StoreCorrupt):
  config -> genesis -> store opens and checks itself -> registry state root matches the last
  header -> validator key matches a set the chain knows (genesis, any epoch's, the pending next
  one) or the node is `joining` with a new store -> core restored from the store's safety data
  and last committed block, in that block's epoch -> servers bound -> driver and transport
  running -> health SERVING.

Epochs (docs/design.md §4.8): node/ordering/epochs.py answers the set of each epoch. After each
commit the node follows the epoch: the certifier checks each header with its epoch's set, the
node signs with the key its epoch names (or not at all while it follows), peers are the current
set plus the orgs joining it (dialed at the peer_address of their add_org), and an org that
left the set is refused and no longer dialed.

Everything runs on one asyncio loop, except block execution and its synced write: committed
blocks go to the commit pipeline (node/commit/pipeline.py), which applies them on its one worker
thread, in order, and announces each on the loop after its write; and the signature and state
checks of admission, on the verifier's threads (node/ordering/verifier.py). The consensus core
is touched only by the driver task.

Descriptors: at start the open-files soft limit is raised to the hard limit, and the node
refuses to start when its connection limits (node.json `connections`) could not all be held
at once within it; periodic work survives a failing system call (EMFILE included) and says so
in a summary log line, so a node out of descriptors refuses connections and keeps running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from kledger.consensus import (
    Core,
    EpochProof,
    QuorumCert,
    SafetyData,
    encode_message,
    genesis_block,
)
from kledger.consensus.leader import REPUTATION_LAG_ROUNDS
from kledger.consensus.types import vote_sign_bytes
from kledger.consensus.validators import NodeId, ValidatorSet
from kledger.node.api.access import AccessPolicy
from kledger.node.api.ledger_backend import NodeLedger
from kledger.node.api.ledger_service import (
    LedgerServicer,
    NodeStatusView,
)
from kledger.node.api.registry_service import add_registry_service
from kledger.node.api.server import ClientService, NodeServers, check_bindable, start_servers
from kledger.node.chain import keys
from kledger.node.chain.genesis import Genesis, load_genesis
from kledger.node.chain.header import CommitCertificate, Header, certificate_problem, sign_header
from kledger.node.commit.certified_state import CertifiedState
from kledger.node.commit.certifier import Certifier, HeaderSignature
from kledger.node.commit.committer import CommittedHeight, Committer
from kledger.node.commit.pipeline import CommitPipeline
from kledger.node.config import RESERVED_DESCRIPTORS, ConnectionSettings, NodeConfig, parse_address
from kledger.node.errors import Refused, StoreCorrupt
from kledger.node.net.block_sync import BlockSync
from kledger.node.net.gossip import run_gossip
from kledger.node.net.peer_transport import (
    ConsensusBytes,
    HeaderVote,
    InboundStream,
    PeerPayload,
    PeerServicer,
    PeerTransport,
    SyncedBlockData,
    TxGossip,
)
from kledger.node.net.tls import TlsMaterial
from kledger.node.ordering.admission import Admission
from kledger.node.ordering.byzantine import ByzantinePayloads
from kledger.node.ordering.driver import ConsensusDriver, SyncResult, wall_clock_ms
from kledger.node.ordering.epochs import EpochSets
from kledger.node.ordering.mempool import Mempool, MempoolLimits, StateCheck
from kledger.node.ordering.proposals import MempoolPayloads
from kledger.node.ordering.restore import load_floor, restored_state
from kledger.node.registry import Registry, governance, state
from kledger.node.registry.state import StateReader
from kledger.node.storage.proofs import build_epoch_chain
from kledger.node.storage.safety_record import SafetyRecord
from kledger.node.storage.state_pruner import StatePruner
from kledger.node.storage.store import LedgerStore
from kledger.node.telemetry.logs import SummaryLog, log_event
from kledger.node.telemetry.metrics import MetricsServer, NodeMetrics, start_metrics_server
from kledger.node.telemetry.timeline import BlockTimeline
from kledger.v1 import registry_pb2

log = logging.getLogger("kledger.node")

METRICS_INTERVAL_S = 1.0
# A failing periodic system call (EMFILE, a vanished file) is logged at most this often.
PERIODIC_FAILURE_LOG_INTERVAL_S = 60.0
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name


class StoreDamaged(Exception):
    """The running node met a damaged record in its store and stopped (node/main.py prints it
    in one line and exits 1)."""


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    org: str
    key: keys.KeyPair
    # The key a change_validator rotates to (node.json next_validator_key), if any.
    next_key: keys.KeyPair | None = None

    def key_for(self, validators: ValidatorSet) -> keys.KeyPair | None:
        """The key `validators` names for this org (of the node's keys), None if none: the
        node then neither votes nor signs headers of that epoch."""
        named = validators.public_key(self.org)
        for key in (self.key, self.next_key):
            if key is not None and key.public_key == named:
                return key
        return None


def check_identity(
    config: NodeConfig, genesis: Genesis, known_keys: dict[str, set[bytes]], fresh_store: bool
) -> NodeIdentity:
    """The node's org and keys against what the chain knows: `known_keys` holds, per org, every
    validator key of genesis, of any epoch's set in the committed state and of the pending next
    set. A brand-new store of a node marked `joining` knows nothing yet: it follows and learns
    its set from its peers."""
    key = keys.load_key(config.validator_key)
    next_key = None
    if config.next_validator_key is not None:
        next_key = keys.load_key(config.next_validator_key)
    identity = NodeIdentity(config.org, key, next_key)
    if config.joining and fresh_store:
        return identity
    known = known_keys.get(config.org)
    if not known:
        if genesis.org(config.org) is None:
            raise ValueError(
                f"org: {config.org!r} is not an org of the genesis nor of any validator set in "
                "the store (a node of an org added by governance starts with joining: true)"
            )
        raise ValueError(f"org: {config.org!r} has no validator key in any validator set")
    if key.public_key not in known and (next_key is None or next_key.public_key not in known):
        raise ValueError(
            f"validator_key: {config.validator_key} is not {config.org}'s validator key in "
            "genesis nor in any validator set of the store"
        )
    return identity


def known_validator_keys(registry: Registry, store: LedgerStore) -> dict[str, set[bytes]]:
    """org -> every validator key of genesis, each stored epoch's set and the pending next set."""
    known: dict[str, set[bytes]] = {}
    sets = [registry.genesis.validator_set]
    epoch = registry.current_set(store.view).epoch
    for past in range(epoch + 1):
        found = registry.validators_of_epoch(store.view, past)
        if found is not None:
            sets.append(found)
    pending = registry.next_set_record(store.view)
    if pending is not None:
        sets.append(governance.validator_set_of(pending))
    for validators in sets:
        for validator in validators.validators:
            known.setdefault(validator.node_id, set()).add(validator.public_key)
    return known


def _certificate_pins(reader: StateReader, orgs: Iterable[str]) -> dict[str, bytes]:
    """The tls_cert_sha256 each of `orgs` was added with, for those that have one."""
    pins = {}
    for org in orgs:
        record = reader.get(state.org_key(org))
        pinned = record.get("tls_cert_sha256", "") if record is not None else ""
        if pinned:
            pins[org] = bytes.fromhex(pinned)
    return pins


class Node:
    """One org's node. Also the LedgerBackend of the client service."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.genesis = load_genesis(config.genesis)
        self.registry = Registry(self.genesis)
        self.store = LedgerStore.open(
            config.data_dir,
            self.genesis,
            self.registry.genesis_writes(),
            self.registry.genesis_state_root(),
        )
        stored_root = self.registry.state_root(self.store.view)
        if stored_root != self.store.last_header().state_root:
            self.store.close()
            raise StoreCorrupt(
                f"{config.data_dir}: registry state root {stored_root.hex()} does not match the "
                f"state_root of header {self.store.last_height()}"
            )
        try:
            self.identity = check_identity(
                config,
                self.genesis,
                known_validator_keys(self.registry, self.store),
                fresh_store=self.store.last_height() == 0,
            )
        except BaseException:
            self.store.close()
            raise
        self.epochs = EpochSets(self.store, self.registry)
        self.safety_record = SafetyRecord(config.safety_record_path)
        try:
            floor = load_floor(self.store, self.safety_record)
        except BaseException:
            self.store.close()
            raise
        self.metrics = NodeMetrics.create(config.org)
        self.timeline = BlockTimeline(config.org, self.metrics.registry)
        self.mempool = Mempool(
            MempoolLimits(max_txs=config.mempool.max_txs, max_bytes=config.mempool.max_bytes)
        )
        core_config = config.core_config()
        restored, validators = restored_state(
            self.store,
            self.genesis,
            self.epochs.set_of,
            core_config.leader_reputation_window_rounds + REPUTATION_LAG_ROUNDS,
            floor,
        )
        self.epochs.entered(validators)
        self.certifier = Certifier(
            validators, self._save_certificate, executed_height=self.store.last_height()
        )
        self.committer = Committer(self.store, self.registry, self.genesis)
        self.commit_pipeline = CommitPipeline(self.committer, self.timeline)
        self.payloads = MempoolPayloads(
            self.mempool,
            self.genesis,
            self.store.has_tx,
            config.batching.proposal_max_txs,
            check_payload=self.registry.check_payload,
            max_payload_bytes=core_config.max_payload_bytes,
            epochs=self.epochs,
            epoch=validators.epoch,
        )
        payload_source: MempoolPayloads | ByzantinePayloads = self.payloads
        if config.testing.byzantine_proposer:
            log_event(
                log,
                "byzantine_proposer",
                logging.WARNING,
                note="TEST ONLY: this node proposes junk txs beside honest ones",
                seed=config.testing.byzantine_seed,
            )
            payload_source = ByzantinePayloads(
                self.payloads, self.genesis, config.testing.byzantine_seed
            )
        self.core = Core(
            core_config,
            self.genesis.chain_id,
            NodeId(config.org),
            validators,
            sign=lambda message: self._consensus_key().sign(keys.CONSENSUS_TAG, message),
            verify=lambda public_key, message, signature: keys.verify(
                public_key, keys.CONSENSUS_TAG, message, signature
            ),
            payloads=payload_source,
            restored=restored,
        )
        self.transport = PeerTransport(
            org=config.org,
            material=TlsMaterial.load(config.tls.ca, config.tls.cert, config.tls.key),
            peers=config.peers,
            metrics=self.metrics,
            settings=config.peer,
        )
        self.driver = ConsensusDriver(
            self.core,
            persist=self._persist_consensus,
            send=self._send_consensus,
            broadcast=lambda data: self.transport.broadcast(ConsensusBytes(data)),
            commit=self.commit_pipeline.submit,
            sync=self._sync_from,
            clock_ms=self._consensus_clock(config),
            timeline=self.timeline,
        )
        self.admission = Admission(
            self.mempool,
            self.genesis,
            is_committed=self.store.has_tx,
            state_check=self._state_check,
            metrics=self.metrics,
            on_admitted=self.driver.payload_available,
            settings=config.admission,
            timeline=self.timeline,
        )
        self.ledger = NodeLedger(self.store, self.admission, self._status)
        self.block_sync = BlockSync(
            store=self.store,
            pipeline=self.commit_pipeline,
            fetch=self.transport.fetch_blocks,
            verify_qc=self._verify_qc,
            on_applied=self._on_synced,
            genesis_id=genesis_block(
                self.genesis.chain_id, self.genesis.validator_set, self.genesis.genesis_time_ms
            )[0].id,
            ready_marker=self.epochs.ready_next_set,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.servers: NodeServers | None = None
        self._metrics_server: MetricsServer | None = None
        self._peer_servicer: PeerServicer | None = None
        self.certified_state = CertifiedState(self.store, config.storage.state_retention_blocks)
        self.state_pruner = StatePruner(self.store, config.storage.state_retention_blocks)
        # Who may read what on the client port, judged against the committed state of now
        # (member keys, the records restricted rules look at; docs/node.md "Access").
        self.access = AccessPolicy(lambda: self.store.view, self.metrics)
        self._periodic_failures = SummaryLog(
            log, "periodic_work_failed", "work", PERIODIC_FAILURE_LOG_INTERVAL_S
        )
        # The first damaged record any read meets (any thread, whoever caught the error):
        # the node stops rather than go on serving from a store it cannot trust.
        self._damage: StoreCorrupt | None = None
        self._damaged = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store.on_damaged(self._store_damaged)
        # Peer admission (docs/design.md §4.8): the current set and the orgs joining it; orgs
        # that were ever validators here and are no longer admitted are not dialed.
        self._admitted: frozenset[str] = frozenset(validators.ids)
        # org -> the certificate hash its add_org pinned (genesis orgs pin none: the CA and
        # the CN vouch for them, as before).
        self._pinned_certificates: dict[str, bytes] = {}
        self._retiring: set[asyncio.Task[bool]] = set()
        self._past_validators: set[str] = set(known_validator_keys(self.registry, self.store))
        self._follow_epoch()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        # The metrics port is bound after the gRPC servers start: checked first (start_servers
        # checks its two), so a taken port refuses the start before anything runs.
        check_bindable("listen.metrics", self.config.listen.metrics)
        material = TlsMaterial.load(self.config.tls.ca, self.config.tls.cert, self.config.tls.key)
        peer_servicer = PeerServicer(
            on_message=self._on_peer_message,
            block_source=self._block_source,
            is_validator=self._is_admitted_peer,
            certificate_pin=self._certificate_pin,
            former_member_limit=self._former_member_limit,
            metrics=self.metrics,
            settings=self.config.peer,
            max_streams_per_peer=self.config.connections.max_streams_per_peer,
        )
        self._peer_servicer = peer_servicer
        self.servers = await start_servers(
            material=material,
            client_address=self.config.listen.client,
            peer_address=self.config.listen.peer,
            ledger=LedgerServicer(self.ledger, self.access, self.metrics),
            peer=peer_servicer,
            peer_settings=self.config.peer,
            access=self.access,
            connections=self.config.connections,
            extra_services=self._extra_services(),
        )
        metrics_address = self.config.listen.metrics
        self._metrics_server = start_metrics_server(
            self.metrics,
            metrics_address.host,
            metrics_address.port,
            self.config.connections.metrics_max_connections,
        )
        self.transport.start()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._tasks = [
            loop.create_task(self._stop_on_damage(), name="store-damage"),
            loop.create_task(self.driver.run(), name="consensus-driver"),
            loop.create_task(
                self.commit_pipeline.run(self._after_commit, self.store.prune_pending_blocks),
                name="commit-pipeline",
            ),
            loop.create_task(
                run_gossip(
                    self.mempool,
                    self.transport,
                    self.config.batching,
                    self.config.peer.max_message_bytes,
                ),
                name="tx-gossip",
            ),
            loop.create_task(self._metrics_loop(), name="metrics"),
            loop.create_task(self.state_pruner.run(), name="state-pruner"),
        ]
        await self.servers.set_serving(True)
        log_event(
            log,
            "node_started",
            org=self.config.org,
            height=self.store.last_height(),
            client_port=self.servers.client_port,
            peer_port=self.servers.peer_port,
        )

    @staticmethod
    def _consensus_clock(config: NodeConfig) -> Callable[[], int]:
        offset_ms = config.testing.clock_offset_ms
        if not offset_ms:
            return wall_clock_ms
        log_event(log, "clock_offset", logging.WARNING, note="TEST ONLY", offset_ms=offset_ms)
        return lambda: wall_clock_ms() + offset_ms

    def _state_check(self) -> StateCheck:
        """The registry's admission check against the committed state of now."""
        view = self.store.view
        return lambda tx, body: self.registry.check_admission(view, tx, body)

    def _persist_consensus(
        self, safety: bytes | None, blocks: list[tuple[int, bytes, bytes]]
    ) -> None:
        """The driver's Persist/SaveBlock: the store's synced batch, then the safety record
        raised to it; both durable before the vote or timeout they allow leaves the node."""
        self.store.save_consensus(safety, blocks)
        if safety is not None:
            self.safety_record.raise_to(SafetyData.decode(safety), self.store.last_height())

    def _store_damaged(self, damage: StoreCorrupt) -> None:
        """A read met a damaged record (see node/storage/checked_db.py): stop the node."""
        if self._damage is not None:
            return
        self._damage = damage
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._damaged.set)

    async def _stop_on_damage(self) -> None:
        await self._damaged.wait()
        assert self._damage is not None
        log_event(log, "store_damaged", logging.ERROR, error=str(self._damage))
        raise StoreDamaged(str(self._damage))

    # -- epochs -------------------------------------------------------------------------------

    def _consensus_key(self) -> keys.KeyPair:
        """The key the current epoch's set names for this org (a follower signs nothing the
        others count; its own key stands in)."""
        return self.identity.key_for(self.core.validators) or self.identity.key

    def _is_admitted_peer(self, org: str) -> bool:
        return org in self._admitted

    def _former_member_limit(self, org: str) -> int | None:
        """The last height a non-validator org may sync: where the last epoch it was in ended
        (asked only by a non-validator's SyncBlocks: one epoch-index read per ended epoch)."""
        return self.epochs.members_last_heights().get(org)

    def _certificate_pin(self, org: str) -> bytes | None:
        return self._pinned_certificates.get(org)

    def _follow_epoch(self) -> None:
        """After a commit (and at start): admission, dial list, certifier and gauges follow the
        current epoch and the pending next set."""
        current = self.epochs.current
        pending = self.epochs.pending_record()
        next_set: ValidatorSet | None = None
        joining: set[str] = set()
        if pending is not None:
            next_set = governance.validator_set_of(pending)
            joining = {org for org in next_set.ids if not current.contains(org)}
        admitted = frozenset(current.ids) | joining
        changed, self._admitted = admitted != self._admitted, admitted
        if changed and self._peer_servicer is not None:
            self._peer_servicer.revoke_departed()
        reader = StateReader(self.store.view)
        self._pinned_certificates = _certificate_pins(reader, admitted)
        self.certifier.follow(current, next_set)
        for org in sorted(admitted - {self.identity.org} - set(self.transport.peers)):
            record = reader.get(state.org_key(org))
            address = record.get("peer_address", "") if record is not None else ""
            if address:
                self.transport.add_peer(org, parse_address(address, f"{org}.peer_address"))
        retired = [
            p for p in self.transport.peers if p not in admitted and p in self._past_validators
        ]
        for org in retired:
            log_event(log, "peer_left_validator_set", peer=org, epoch=current.epoch)
            if not self.transport.started:
                self.transport.forget_peer(org)
            elif self._loop is not None:
                farewell = self._epoch_farewell(current.epoch)
                task = self._loop.create_task(self.transport.retire_peer(org, farewell))
                self._retiring.add(task)  # held until done (the loop keeps weak references)
                task.add_done_callback(self._retiring.discard)
        self._past_validators |= admitted
        self.metrics.epoch.set(current.epoch)
        self.metrics.validators.set(current.size)
        self.metrics.validating.set(1 if current.contains(self.identity.org) else 0)

    def _epoch_farewell(self, epoch: int) -> ConsensusBytes | None:
        """For an org the change to `epoch` removed: the certificate that ended the epoch
        before. Its node learns its removal from it (docs/design.md §4.8): no one is going to
        take its messages, or send it any, again."""
        qc = self.epochs.ending_qc(epoch - 1) if epoch > 0 else None
        if qc is None:
            return None
        proof = EpochProof(epoch - 1, (qc,), False, NodeId(self.identity.org))
        return ConsensusBytes(encode_message(proof))

    def _verify_qc(self, qc: QuorumCert) -> bool:
        """A QC checked with the set of its own epoch (block sync: docs/design.md §4.8)."""
        if qc.epoch == self.core.epoch:
            return self.core.verify_qc(qc)
        validators = self.epochs.set_of(qc.epoch)
        if validators is None or not qc.signatures:
            return False
        authors = [author for author, _ in qc.signatures]
        if len(authors) < validators.quorum or authors != sorted(set(authors)):
            return False
        message = vote_sign_bytes(self.genesis.chain_id, qc.data)
        for author, signature in qc.signatures:
            key = validators.public_key(author)
            if key is None or not keys.verify(key, keys.CONSENSUS_TAG, message, signature):
                return False
        return True

    def _send_consensus(self, to: NodeId, data: bytes) -> None:
        self.transport.send(to, ConsensusBytes(data))

    def _extra_services(self) -> list[ClientService]:
        return [
            ClientService(
                REGISTRY_SERVICE,
                lambda server: add_registry_service(
                    server,  # type: ignore[arg-type]
                    self.certified_state.current,
                    self.access,
                    self.certified_state.proof_at,
                    lambda epoch: build_epoch_chain(self.store, epoch),
                ),
            )
        ]

    async def stop(self) -> None:
        if self.servers is not None:
            await self.servers.set_serving(False)
        self.driver.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Before the store closes: a block being written finishes its write, none starts.
        await self.commit_pipeline.close()
        await asyncio.to_thread(self.state_pruner.close)
        await self.transport.stop()
        if self.servers is not None:
            await self.servers.stop()
        await self.admission.close()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self.ledger.close()
        self.store.close()
        log_event(log, "node_stopped", org=self.config.org)

    async def wait_stopped(self) -> None:
        """Returns when a background task ends on its own (a bug or a safety stop)."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    # -- peers --------------------------------------------------------------------------------

    def _on_peer_message(
        self, sender: str, payload: PeerPayload, stream: InboundStream
    ) -> float | None:
        """Hand a peer's message on; returns how long its stream should pause (a stream that
        floods), else None."""
        match payload:
            case ConsensusBytes(data):
                self.driver.deliver(sender, data)
            case TxGossip(txs):
                return self.admission.gossip(sender, txs, stream)
            case HeaderVote(height, header_hash, signature):
                self.certifier.add(HeaderSignature(height, header_hash, sender, signature))
        return None

    def _block_source(self, from_height: int, to_height: int) -> Iterator[SyncedBlockData]:
        for height in range(max(1, from_height), min(to_height, self.store.last_height()) + 1):
            record = self.store.block(height)
            if record is None:
                return
            certificate = self.store.certificate(height)
            yield SyncedBlockData(
                height=height,
                consensus_block=record.consensus_block,
                commit_qc=record.commit_qc,
                header=record.header.encode(),
                certificate=certificate.encode() if certificate is not None else b"",
            )

    async def _metrics_loop(self) -> None:
        view_changes_seen = 0
        exported: dict[str, int] = {}
        exported_evidence: dict[str, int] = {}
        while True:
            # The core (pure), the driver and the certifier count drops in their own tables.
            self.metrics.export_drops("consensus", self.core.dropped, exported)
            self.metrics.export_drops("driver", self.driver.dropped, exported)
            self.metrics.export_drops("certifier", self.certifier.dropped, exported)
            self.metrics.export_equivocations(self.driver.evidence, exported_evidence)
            self.metrics.clock_offset_ms.set(self.driver.clock.reading().offset_ms or 0)
            self.metrics.view_changes.inc(self.core.view_changes - view_changes_seen)
            view_changes_seen = self.core.view_changes
            self.metrics.round.set(self.core.round)
            self.metrics.mempool_txs.set(len(self.mempool))
            self.metrics.mempool_bytes.set(self.mempool.size_bytes)
            try:
                self.metrics.store_bytes.set(self.store.size_bytes())
            except OSError as exc:  # e.g. EMFILE: the gauge waits for the next second
                self._periodic_failures.note("store_bytes", type(exc).__name__, example=str(exc))
            for part, levels in self.store.leveldb_levels().items():
                for level in levels:
                    self.metrics.set_leveldb_level(db=part, **dataclasses.asdict(level))
            self.admission.flush_logs()
            if self._peer_servicer is not None:
                self._peer_servicer.flush_logs()
            self._periodic_failures.flush()
            await asyncio.sleep(METRICS_INTERVAL_S)

    # -- commit -------------------------------------------------------------------------------

    def _after_commit(self, committed: CommittedHeight) -> None:
        """On the loop, after the height's synced write and before the next block is written
        (the commit pipeline holds its lock): the state snapshot below is of this height."""
        header = committed.header
        assert self.store.last_height() == header.height, "announced out of step with the store"
        self.timeline.executed(header.height)
        # Freeze this height's state first: its certificate can complete in the calls below.
        self.certified_state.committed(header.height)
        self.state_pruner.notify()
        header_hash = header.hash()
        # The header's epoch set certifies it (the marker block's, the epoch's last, included).
        header_set = self.epochs.set_of(header.epoch)
        assert header_set is not None, f"no validator set of epoch {header.epoch}"
        if committed.validator_change is not None:
            self.epochs.entered(committed.validator_change)
        key = self.identity.key_for(header_set)
        self.certifier.executed(header.height, header_hash, header_set)
        if key is not None:
            signature = sign_header(key, header_hash)
            self.transport.broadcast(HeaderVote(header.height, header_hash, signature))
            self.certifier.add(
                HeaderSignature(header.height, header_hash, self.identity.org, signature)
            )
        self._follow_epoch()
        self.mempool.remove_committed(tx.tx_hash for tx in committed.txs)
        self.driver.applied(header.height)  # after the mempool let go of its txs
        self.ledger.announce(committed.txs, committed.receipts)
        self.metrics.height.set(header.height)
        self.metrics.commits.inc()
        self.metrics.committed_txs.inc(len(committed.txs))
        self.timeline.announced(header.height, (tx.tx_hash for tx in committed.txs))
        log_event(
            log,
            "committed",
            height=header.height,
            round=header.round,
            txs=len(committed.txs),
            log_size=header.tx_log_size,
        )

    def _save_certificate(self, height: int, certificate: CommitCertificate) -> None:
        self.store.save_certificate(height, certificate)
        self.certified_state.certified(height)

    # -- block sync ---------------------------------------------------------------------------

    async def _sync_from(self, peer: NodeId, target: QuorumCert) -> SyncResult:
        if target.commit is not None:
            self.metrics.sync_target_height.set(target.commit.height)
        return await self.block_sync.sync(peer, target)

    def _on_synced(self, committed: CommittedHeight, certificate: bytes) -> None:
        self._adopt_certificate(committed.header, certificate)
        self._after_commit(committed)
        self.metrics.synced_blocks.inc()

    def _adopt_certificate(self, header: Header, encoded: bytes) -> None:
        if not encoded:
            return
        try:
            certificate = CommitCertificate.decode(encoded)
        except Refused:
            return
        validators = self.epochs.set_of(header.epoch)
        if validators is not None and certificate_problem(certificate, header, validators) is None:
            self.certifier.already_certified(header.height)
            self._save_certificate(header.height, certificate)

    def _status(self) -> NodeStatusView:
        clock = self.driver.clock.reading()
        return NodeStatusView(
            org=self.identity.org,
            epoch=self.core.epoch,
            round=self.core.round,
            leader=self.core.leader_of(self.core.round),
            last_header=self.store.last_header(),
            certified_height=self.store.latest_certified_height(),
            mempool_txs=len(self.mempool),
            view_changes=self.core.view_changes,
            connected_peers=tuple(
                p for p in self.transport.peers if self.transport.is_connected(p)
            ),
            clock=clock.state,
            clock_offset_ms=clock.offset_ms,
            role="validator" if self.core.validators.contains(self.identity.org) else "follower",
            validators=self.core.validators.size,
        )


def raise_open_files_limit() -> int:
    """Raise this process's open-files soft limit to its hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit; the budget check below says whether it is enough
    return soft


def check_descriptor_budget(connections: ConnectionSettings, limit: int) -> None:
    """Refuse to start when every port full would not fit the open-files limit: running out of
    descriptors must refuse connections, never fail the store or the node."""
    needed = connections.descriptors_needed()
    if needed > limit:
        raise ValueError(
            f"connections: client_max_connections + peer_max_connections + "
            f"metrics_max_connections + {RESERVED_DESCRIPTORS} reserved = {needed} open files, "
            f"over this process's limit of {limit} (ulimit -n); lower them or raise the limit"
        )


async def run_node(config: NodeConfig) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    limit = raise_open_files_limit()
    check_descriptor_budget(config.connections, limit)
    node = Node(config)
    await node.start()
    # After the start, so a node refusing to start says so in its one line alone.
    log_event(
        log,
        "open_files_limit",
        limit=limit,
        needed_at_most=config.connections.descriptors_needed(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopped = asyncio.create_task(stop.wait())
    crashed = asyncio.create_task(node.wait_stopped())
    try:
        await asyncio.wait({stopped, crashed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        await node.stop()
    if crashed.done() and not crashed.cancelled() and crashed.exception() is not None:
        raise crashed.exception()  # type: ignore[misc]
