"""The node process: the composition root that wires store, registry, mempool, consensus driver,
peer transport, certifier and gRPC services together (DESIGN.md section 3), and the ledger
backend the client service calls.

Start-up order (each step refuses to go on with a clear ValueError / StoreCorrupt):
  config -> genesis -> validator key matches genesis -> store opens and checks itself ->
  registry state root matches the last header -> core restored from the store's safety data and
  last committed block -> servers bound -> driver and transport running -> health SERVING.

Everything runs on one asyncio loop, except block execution and its synced write: committed
blocks go to the commit pipeline (node/commit_pipeline.py), which applies them on its one worker
thread, in order, and announces each on the loop after its write. The consensus core is touched
only by the driver task.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

from kledger.v1 import registry_pb2

from consensus import (
    Block,
    Core,
    CoreConfig,
    QuorumCert,
    RestoredState,
    SafetyData,
    genesis_block,
)
from consensus.leader import REPUTATION_LAG_ROUNDS
from consensus.validators import NodeId, ValidatorSet
from node import keys
from node.block_sync import BlockSync
from node.bundle import (
    ConsistencyBundle,
    InclusionBundle,
    build_consistency_bundle,
    build_inclusion_bundle,
)
from node.certified_state import CertifiedState
from node.certifier import Certifier, HeaderSignature
from node.commit_pipeline import CommitPipeline
from node.committer import CommittedHeight, Committer
from node.config import NodeConfig
from node.driver import ConsensusDriver, SyncResult
from node.errors import Refused, Status, StoreCorrupt
from node.genesis import Genesis, load_genesis
from node.gossip import admit_gossip, run_gossip
from node.header import CommitCertificate, Header, certificate_problem, sign_header
from node.ledger_service import (
    BlockView,
    CertifiedHeader,
    LedgerServicer,
    NodeStatusView,
    StoredTx,
    SubmitResult,
)
from node.logs import log_event
from node.mempool import Mempool, MempoolLimits
from node.metrics import MetricsServer, NodeMetrics, start_metrics_server
from node.peer_transport import (
    ConsensusBytes,
    HeaderVote,
    PeerPayload,
    PeerServicer,
    PeerTransport,
    SyncedBlockData,
    TxGossip,
)
from node.proposals import MempoolPayloads
from node.receipt import OK, Receipt
from node.registry import Registry
from node.registry_service import add_registry_service
from node.server import ClientService, NodeServers, check_bindable, start_servers
from node.store import LedgerStore
from node.tls import TlsMaterial
from node.tx import decode_tx

log = logging.getLogger("kledger.node")

METRICS_INTERVAL_S = 1.0
REGISTRY_SERVICE = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
COMMIT_SUBSCRIBER_QUEUE = 1_024


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    org: str
    key: keys.KeyPair


def check_identity(config: NodeConfig, genesis: Genesis) -> NodeIdentity:
    key = keys.load_key(config.validator_key)
    org = genesis.org(config.org)
    if org is None:
        raise ValueError(f"org: {config.org!r} is not an org of the genesis")
    if org.validator_key != key.public_key:
        raise ValueError(
            f"validator_key: {config.validator_key} is not {config.org}'s validator key in genesis"
        )
    return NodeIdentity(config.org, key)


def restored_state(
    store: LedgerStore, genesis: Genesis, validators: ValidatorSet, history_blocks: int
) -> RestoredState:
    """The core's starting point: the newest stored block whose stored QC commits it (a crash in
    the middle of a multi-block commit leaves later blocks whose QC names a descendant), else
    genesis. Blocks stored above it are committed again by consensus and skipped as stored."""
    raw = store.load_safety()
    safety = SafetyData.decode(raw) if raw is not None else None
    height = store.last_height()
    while height > 0:
        record = store.block(height)
        assert record is not None, f"store lost height {height}"
        if record.commit_qc:
            block = Block.decode(record.consensus_block)
            qc = QuorumCert.decode(record.commit_qc)
            if qc.commit is not None and qc.commit.id == block.id:
                return RestoredState(
                    safety,
                    block,
                    qc,
                    _pending_blocks(store),
                    _committed_below(store, height, history_blocks),
                )
        height -= 1
    root, root_qc = genesis_block(genesis.chain_id, validators, genesis.genesis_time_ms)
    return RestoredState(safety, root, root_qc, _pending_blocks(store))


def _committed_below(store: LedgerStore, height: int, count: int) -> tuple[Block, ...]:
    """The `count` committed blocks below `height` (leader reputation reads their rounds)."""
    blocks = []
    for below in range(max(1, height - count), height):
        record = store.block(below)
        assert record is not None, f"store lost height {below}"
        blocks.append(Block.decode(record.consensus_block))
    return tuple(blocks)


def _pending_blocks(store: LedgerStore) -> tuple[Block, ...]:
    return tuple(Block.decode(data) for data in store.load_pending_blocks())


class Node:
    """One org's node. Also the LedgerBackend of the client service."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.genesis = load_genesis(config.genesis)
        self.identity = check_identity(config, self.genesis)
        self.validators = self.genesis.validator_set
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
        self.metrics = NodeMetrics.create(config.org)
        self.mempool = Mempool(
            MempoolLimits(max_txs=config.mempool.max_txs, max_bytes=config.mempool.max_bytes)
        )
        self.certifier = Certifier(
            self.validators, self._save_certificate, executed_height=self.store.last_height()
        )
        self.committer = Committer(self.store, self.registry, self.genesis, lambda: self.validators)
        self.commit_pipeline = CommitPipeline(self.committer)
        self.payloads = MempoolPayloads(
            self.mempool,
            self.genesis,
            self.store.has_tx,
            config.batching.proposal_max_txs,
            self.registry.check_payload,
        )
        key = self.identity.key
        core_config = CoreConfig(**config.consensus)
        self.core = Core(
            core_config,
            self.genesis.chain_id,
            NodeId(config.org),
            self.validators,
            sign=lambda message: key.sign(keys.CONSENSUS_TAG, message),
            verify=lambda public_key, message, signature: keys.verify(
                public_key, keys.CONSENSUS_TAG, message, signature
            ),
            payloads=self.payloads,
            restored=restored_state(
                self.store,
                self.genesis,
                self.validators,
                core_config.leader_reputation_window_rounds + REPUTATION_LAG_ROUNDS,
            ),
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
            persist=self.store.save_consensus,
            send=self._send_consensus,
            broadcast=lambda data: self.transport.broadcast(ConsensusBytes(data)),
            commit=self.commit_pipeline.submit,
            sync=self._sync_from,
        )
        self.block_sync = BlockSync(
            store=self.store,
            pipeline=self.commit_pipeline,
            fetch=self.transport.fetch_blocks,
            verify_qc=self.core.verify_qc,
            on_applied=self._on_synced,
            genesis_id=genesis_block(
                self.genesis.chain_id, self.validators, self.genesis.genesis_time_ms
            )[0].id,
        )
        self._waiters: dict[bytes, list[asyncio.Future[Receipt]]] = {}
        self._commit_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.servers: NodeServers | None = None
        self._metrics_server: MetricsServer | None = None
        self.certified_state = CertifiedState(self.store)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        # The metrics port is bound after the gRPC servers start: checked first (start_servers
        # checks its two), so a taken port refuses the start before anything runs.
        check_bindable("listen.metrics", self.config.listen.metrics)
        material = TlsMaterial.load(self.config.tls.ca, self.config.tls.cert, self.config.tls.key)
        peer_servicer = PeerServicer(
            on_message=self._on_peer_message,
            block_source=self._block_source,
            is_validator=self.validators.contains,
            metrics=self.metrics,
            settings=self.config.peer,
        )
        self.servers = await start_servers(
            material=material,
            client_address=self.config.listen.client,
            peer_address=self.config.listen.peer,
            ledger=LedgerServicer(self, self.metrics),
            peer=peer_servicer,
            peer_settings=self.config.peer,
            extra_services=self._extra_services(),
        )
        metrics_address = self.config.listen.metrics
        self._metrics_server = start_metrics_server(
            self.metrics, metrics_address.host, metrics_address.port
        )
        self.transport.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
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

    def _send_consensus(self, to: NodeId, data: bytes) -> None:
        self.transport.send(to, ConsensusBytes(data))

    def _extra_services(self) -> list[ClientService]:
        return [
            ClientService(
                REGISTRY_SERVICE,
                lambda server: add_registry_service(server, self.certified_state.current),  # type: ignore[arg-type]
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
        await self.transport.stop()
        if self.servers is not None:
            await self.servers.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()
        self.store.close()
        log_event(log, "node_stopped", org=self.config.org)

    async def wait_stopped(self) -> None:
        """Returns when a background task ends on its own (a bug or a safety stop)."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    # -- peers --------------------------------------------------------------------------------

    def _on_peer_message(self, sender: str, payload: PeerPayload) -> None:
        match payload:
            case ConsensusBytes(data):
                self.driver.deliver(sender, data)
            case TxGossip():
                view = self.store.view
                admitted = admit_gossip(
                    self.mempool,
                    sender,
                    payload,
                    self.genesis.chain_id,
                    self.metrics,
                    limits=self.genesis.tx_limits,
                    is_committed=self.store.has_tx,
                    check_state=lambda tx, body: self.registry.check_admission(view, tx, body),
                )
                if admitted:
                    self.driver.payload_available()
            case HeaderVote(height, header_hash, signature):
                self.certifier.add(HeaderSignature(height, header_hash, sender, signature))

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
        while True:
            self.metrics.view_changes.inc(self.core.view_changes - view_changes_seen)
            view_changes_seen = self.core.view_changes
            self.metrics.round.set(self.core.round)
            self.metrics.mempool_txs.set(len(self.mempool))
            self.metrics.mempool_bytes.set(self.mempool.size_bytes)
            self.metrics.store_bytes.set(self.store.size_bytes())
            await asyncio.sleep(METRICS_INTERVAL_S)

    # -- commit -------------------------------------------------------------------------------

    def _after_commit(self, committed: CommittedHeight) -> None:
        """On the loop, after the height's synced write and before the next block is written
        (the commit pipeline holds its lock): the state snapshot below is of this height."""
        header = committed.header
        assert self.store.last_height() == header.height, "announced out of step with the store"
        # Freeze this height's state first: its certificate can complete in the calls below.
        self.certified_state.committed(header.height)
        header_hash = header.hash()
        signature = sign_header(self.identity.key, header_hash)
        self.transport.broadcast(HeaderVote(header.height, header_hash, signature))
        self.certifier.executed(header.height, header_hash)
        self.certifier.add(
            HeaderSignature(header.height, header_hash, self.identity.org, signature)
        )
        self.mempool.remove_committed(tx.tx_hash for tx in committed.txs)
        self.payloads.applied(header.height)  # after the mempool let go of its txs
        for tx, receipt in zip(committed.txs, committed.receipts, strict=True):
            for future in self._waiters.pop(tx.tx_hash, ()):
                if not future.done():
                    future.set_result(receipt)
        self.metrics.height.set(header.height)
        self.metrics.commits.inc()
        self.metrics.committed_txs.inc(len(committed.txs))
        self._commit_event.set()
        self._commit_event = asyncio.Event()
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
        if certificate_problem(certificate, header, self.validators) is None:
            self.certifier.already_certified(header.height)
            self._save_certificate(header.height, certificate)

    # -- LedgerBackend --------------------------------------------------------------------------

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    def _admit(self, data: bytes, *, local: bool) -> bytes:
        view = self.store.view
        tx = self.mempool.admit(
            data,
            self.genesis.chain_id,
            limits=self.genesis.tx_limits,
            is_committed=self.store.has_tx,
            check_state=lambda tx, body: self.registry.check_admission(view, tx, body),
            local=local,
        )
        return tx.tx_hash

    async def submit(self, encodings: Sequence[bytes]) -> list[SubmitResult]:
        results = []
        for data in encodings:
            try:
                tx_hash = self._admit(data, local=True)
                results.append(SubmitResult(tx_hash, OK))
            except Refused as refusal:
                results.append(SubmitResult.refused(_hash_or_empty(data), refusal))
            except StoreCorrupt:
                raise
            except Exception:
                # Our bug, reached by this tx: it alone is answered INTERNAL (logged with its
                # hash); the batch's other txs keep their own answers.
                tx_hash = _hash_or_empty(data)
                log.exception("admission bug: tx %s", tx_hash.hex() or "(undecodable)")
                results.append(SubmitResult(tx_hash, "INTERNAL", "admission failed on a node bug"))
        if any(r.ok for r in results):
            self.driver.payload_available()
        return results

    async def wait_for_receipt(self, tx_hash: bytes, timeout_s: float) -> Receipt | None:
        stored = self.store.get_tx(tx_hash)
        if stored is not None:
            return stored[1]
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tx_hash, []).append(future)
        try:
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that
            # arrives as the future completes, which would stall a graceful shutdown.
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(tx_hash)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._waiters[tx_hash]

    def status(self) -> NodeStatusView:
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
        )

    def get_tx(self, tx_hash: bytes) -> StoredTx | None:
        stored = self.store.get_tx(tx_hash)
        return None if stored is None else StoredTx(stored[0].encoding, stored[1])

    def get_block(self, height: int) -> BlockView | None:
        found = self.store.block_tx_hashes(height)
        if found is None:
            return None
        header, tx_hashes = found
        return BlockView(
            header=header, certificate=self.store.certificate(height), tx_hashes=tx_hashes
        )

    def get_header(self, height: int | None) -> CertifiedHeader | None:
        if height is None:
            height = self.store.latest_certified_height()
        header = self.store.header(height)
        if header is None:
            return None
        return CertifiedHeader(header, self.store.certificate(height))

    def inclusion_proof(self, tx_hash: bytes) -> InclusionBundle | None:
        return build_inclusion_bundle(self.store, tx_hash)

    def _certified_height_of_size(self, size: int, field: str) -> int:
        """A certified height whose log size is exactly `size`: sizes only grow with height,
        so a binary search finds the first height of that size; later heights of the same
        size are tried in turn for one that has a certificate."""
        low, high = 0, self.store.latest_certified_height()
        while low < high:
            middle = (low + high) // 2
            header = self.store.header(middle)
            assert header is not None
            if header.tx_log_size < size:
                low = middle + 1
            else:
                high = middle
        height = low
        while (header := self.store.header(height)) is not None and header.tx_log_size == size:
            if self.store.certificate(height) is not None:
                return height
            height += 1
        raise Refused(Status.FAILED_PRECONDITION, f"no certified header has log size {size}", field)

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyBundle:
        return build_consistency_bundle(
            self.store,
            self._certified_height_of_size(old_size, "old_size"),
            self._certified_height_of_size(new_size, "new_size"),
        )

    async def commits(self, from_height: int) -> AsyncIterator[BlockView]:
        height = max(1, from_height)
        while True:
            while height <= self.store.last_height():
                view = self.get_block(height)
                assert view is not None
                yield view
                height += 1
            await self._commit_event.wait()


def _hash_or_empty(data: bytes) -> bytes:
    try:
        return decode_tx(data).tx_hash
    except Refused:
        return b""


async def run_node(config: NodeConfig) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    node = Node(config)
    await node.start()
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
