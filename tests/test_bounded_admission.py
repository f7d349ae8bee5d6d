"""Bounded work per source (issue 13 point 3): signature and state checks of gossiped and
submitted txs run on the verifier's threads while the event loop goes on; a source whose batch
carries a bad signature is throttled, counted and logged as one summary line, and the txs of
other sources are still admitted; a peer's or a client connection's txs in flight are bounded
and what goes beyond is refused and counted; the verifier serves its sources in turn; a
flooding peer's consensus messages are still handled, over the real peer transport."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from kledger.cluster.layout import ClusterLayout
from kledger.cluster.local.gen import ClusterSpec, generic_orgs, init_cluster
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.node.config import Address, AdmissionSettings
from kledger.node.errors import Refused, Status
from kledger.node.net.peer_transport import (
    ConsensusBytes,
    InboundStream,
    PeerPayload,
    TxGossip,
    channel_options,
)
from kledger.node.net.tls import peer_channel_credentials
from kledger.node.ordering.admission import Admission
from kledger.node.ordering.mempool import Mempool
from kledger.node.ordering.sources import PROBATION_PENALTIES, SourceBudgets
from kledger.node.ordering.verifier import FairVerifier
from kledger.node.telemetry.logs import SummaryLog, configure_logging
from kledger.node.telemetry.metrics import NodeMetrics
from kledger.v1 import peer_pb2, peer_pb2_grpc
from tests.helpers import key, make_genesis
from tests.test_peer_transport import SETTINGS, PeerNode, material_of

CHAIN = "bounded-test"
GENESIS = make_genesis(chain_id=CHAIN)
WAIT_S = 20.0  # a bound on waiting for an event, never a speed assertion


def good_tx(nonce: int, signer: str = "bounded/honest") -> SignedTx:
    body = TxBody(chain_id=CHAIN, type="usage.report", nonce=nonce, payload={"n": nonce})
    return sign_tx(key(signer), body)


def forged_tx(nonce: int) -> SignedTx:
    honest = good_tx(nonce, "bounded/victim")
    return SignedTx(honest.body, honest.signer, bytes(64))


class Harness:
    """One node's admission over a mempool, with a state check the test can hold up and count."""

    def __init__(self, settings: AdmissionSettings | None = None) -> None:
        settings = settings or AdmissionSettings(throttled_pause_ms=1)
        self.mempool = Mempool()
        self.metrics = NodeMetrics.create("ORG1")
        self.checked = 0
        self.check_threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.admitted_batches = 0
        self.admission = Admission(
            self.mempool,
            GENESIS,
            is_committed=lambda _hash: False,
            state_check=lambda: self.check_state,
            metrics=self.metrics,
            on_admitted=self.on_admitted,
            settings=settings,
        )

    def check_state(self, tx: SignedTx, body: TxBody) -> None:
        self.check_threads.add(threading.get_ident())
        assert self.gate.wait(WAIT_S), "the state check was held up too long"
        self.checked += 1

    def on_admitted(self) -> None:
        self.admitted_batches += 1

    def dropped(self, reason: str) -> float:
        return self.metrics.value("kledger_dropped_messages_total", reason=reason)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging("INFO", stream)
    try:
        yield stream
    finally:
        logging.getLogger("kledger").removeHandler(handler)


def events(stream: io.StringIO, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == name]


@pytest.mark.asyncio
async def test_checks_run_off_the_loop_while_the_loop_goes_on() -> None:
    h = Harness()
    h.gate.clear()  # the checks wait until a task on the loop has run
    order: list[str] = []

    async def meanwhile() -> None:
        order.append("loop task ran")
        h.gate.set()

    txs = [good_tx(n) for n in range(150)]
    batch = asyncio.create_task(h.admission.admit_gossip("ORG2", [tx.encoding for tx in txs]))
    # Scheduled after the batch: it runs only if the batch's checks leave the loop free (on
    # the loop they would wait for it forever, and fail after WAIT_S).
    tick = asyncio.create_task(meanwhile())
    admitted = await asyncio.wait_for(batch, WAIT_S)
    order.append("batch done")
    assert order == ["loop task ran", "batch done"]
    assert admitted == 150 and h.checked == 150 and len(h.mempool) == 150
    assert threading.get_ident() not in h.check_threads  # never on the loop's thread
    await tick
    await h.admission.close()


@pytest.mark.asyncio
async def test_a_peer_sending_bad_signatures_is_throttled_counted_and_summarised(
    logs: io.StringIO,
) -> None:
    h = Harness()
    forged = [forged_tx(n).encoding for n in range(200)]
    assert await h.admission.admit_gossip("ORG4", forged) == 0
    # The first chunk found the bad signatures; the rest of the batch was not checked.
    bad = h.dropped("gossip.bad_signature")
    assert 0 < bad < 200 and h.dropped("gossip.throttled") == 200 - bad
    assert h.checked == bad
    # Later batches of that peer are dropped before any check...
    checked = h.checked
    assert await h.admission.admit_gossip("ORG4", [good_tx(n).encoding for n in range(50)]) == 0
    assert h.checked == checked and h.dropped("gossip.throttled") == 250 - bad
    assert h.admission.peers.throttled_s("ORG4") > 0
    # Of a throttled peer's streams, only those that flood are told to pause before reading
    # on: a stream opened since it offended; not one it had before (its consensus flows).
    older, newer = InboundStream("ORG4", 0.0), InboundStream("ORG4", time.monotonic())
    assert h.admission.gossip("ORG4", [good_tx(60).encoding], older) == 0.0
    assert 0 < h.admission.gossip("ORG4", [good_tx(61).encoding], newer) <= 1.0
    assert h.admission.gossip("ORG4", [good_tx(62).encoding]) == 0.0  # no stream: no pause
    # ...while another peer's honest txs, in a batch with a forged one of its own, get in.
    mixed = [good_tx(1000).encoding, forged_tx(1000).encoding, good_tx(1001).encoding]
    assert await h.admission.admit_gossip("ORG2", mixed) == 2
    assert await h.admission.admit_gossip("ORG3", [good_tx(1002).encoding]) == 1
    h.admission.flush_logs()
    lines = events(logs, "gossip_txs_refused")
    assert [line["peer"] for line in lines] == ["ORG4", "ORG2"]  # one line per peer, not per tx
    assert lines[0]["level"] == "WARNING" and lines[0]["counts"] == {"bad_signature": bad}
    assert "signature" in str(lines[0]["example"])
    await h.admission.close()


@pytest.mark.asyncio
async def test_a_client_connection_sending_bad_signatures_is_throttled(
    logs: io.StringIO,
) -> None:
    h = Harness()
    first = [good_tx(1), forged_tx(2), good_tx(3)]
    results = await h.admission.submit("conn-A", [tx.encoding for tx in first])
    assert [r.status for r in results] == ["OK", "UNAUTHENTICATED", "OK"]
    # Later batches on that connection are refused whole, before any check.
    with pytest.raises(Refused) as later:
        await h.admission.submit("conn-A", [good_tx(4).encoding, good_tx(5).encoding])
    assert later.value.status is Status.RESOURCE_EXHAUSTED and "throttled" in later.value.message
    assert h.dropped("client.throttled") == 2 and h.checked == 3
    other = await h.admission.submit("conn-B", [good_tx(6).encoding])
    assert [r.status for r in other] == ["OK"]
    assert len(h.mempool) == 3
    # A batch of junk throttles its connection midway: refused whole, its answers would only
    # repeat that nothing of it was admitted.
    with pytest.raises(Refused) as junk:
        await h.admission.submit("conn-C", [forged_tx(n).encoding for n in range(10, 300)])
    assert junk.value.status is Status.RESOURCE_EXHAUSTED and "none was admitted" in str(junk.value)
    assert h.dropped("client.throttled") == 2 + 300 - 10 - 64
    lines = events(logs, "client_txs_refused")
    assert [line["client"] for line in lines] == ["conn-A", "conn-C"]  # not one per tx
    assert lines[0]["counts"] == {"bad_signature": 1}
    await h.admission.close()


@pytest.mark.asyncio
async def test_txs_in_flight_are_bounded_per_peer_and_per_client_connection() -> None:
    settings = AdmissionSettings(
        peer_inflight_txs=100, connection_inflight_txs=10, client_inflight_txs=15
    )
    h = Harness(settings)
    h.gate.clear()  # hold every check: what was granted stays in flight
    held_peer = asyncio.create_task(
        h.admission.admit_gossip("ORG2", [good_tx(n).encoding for n in range(80)])
    )
    held_client = asyncio.create_task(
        h.admission.submit("conn-A", [good_tx(n).encoding for n in range(100, 112)])
    )
    await asyncio.sleep(0.05)
    assert h.admission.peers.inflight("ORG2") == 80
    assert h.admission.clients.inflight("conn-A") == 10  # 2 of its 12 were refused at once
    # The peer's next batch would pass its budget: dropped whole and counted.
    late = [good_tx(n).encoding for n in range(200, 230)]
    assert await h.admission.admit_gossip("ORG2", late) == 0
    assert h.dropped("gossip.over_budget") == 30
    # Another peer has a budget of its own.
    other_peer = asyncio.create_task(h.admission.admit_gossip("ORG3", [good_tx(300).encoding]))
    # All clients together: 15, so conn-B gets 5 of its 8 in flight.
    held_other = asyncio.create_task(
        h.admission.submit("conn-B", [good_tx(n).encoding for n in range(400, 408)])
    )
    await asyncio.sleep(0.05)
    assert h.admission.clients.inflight() == 15
    h.gate.set()
    assert await asyncio.wait_for(held_peer, WAIT_S) == 80
    statuses = [r.status for r in await asyncio.wait_for(held_client, WAIT_S)]
    assert statuses == ["OK"] * 10 + ["RESOURCE_EXHAUSTED"] * 2
    other = [r.status for r in await asyncio.wait_for(held_other, WAIT_S)]
    assert other == ["OK"] * 5 + ["RESOURCE_EXHAUSTED"] * 3
    assert await asyncio.wait_for(other_peer, WAIT_S) == 1
    assert h.dropped("client.over_budget") == 5
    # Everything granted was given back.
    assert h.admission.peers.inflight() == 0 and h.admission.clients.inflight() == 0
    await h.admission.close()


@pytest.mark.asyncio
async def test_the_verifier_serves_its_sources_in_turn() -> None:
    verifier = FairVerifier(threads=1)
    gate = threading.Event()
    ran: list[str] = []

    def work(name: str) -> Callable[[], str]:
        def run() -> str:
            assert gate.wait(WAIT_S)
            ran.append(name)
            return name

        return run

    # "flood" queues five chunks before "honest" queues one: the honest one runs second.
    flood = [asyncio.create_task(verifier.run("flood", work(f"flood{i}"))) for i in range(5)]
    await asyncio.sleep(0.05)
    honest = asyncio.create_task(verifier.run("honest", work("honest")))
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.wait_for(asyncio.gather(*flood, honest), WAIT_S)
    assert ran == ["flood0", "flood1", "honest", "flood2", "flood3", "flood4"]
    await verifier.close()


def test_source_budgets_and_penalties_with_a_clock() -> None:
    now = [100.0]
    budgets = SourceBudgets(10, penalty_ms=2_000, total_txs=15, clock=lambda: now[0])
    assert budgets.reserve("a", 12) == 10 and budgets.reserve("b", 8) == 5
    budgets.release("a", 10)
    assert budgets.inflight("a") == 0 and budgets.inflight() == 5
    budgets.penalize("a")
    assert budgets.throttled_s("a") == pytest.approx(2.0) and budgets.on_probation("a")
    now[0] += 2.5
    assert budgets.throttled_s("a") == 0.0 and budgets.on_probation("a")
    now[0] += 2.0 * PROBATION_PENALTIES
    assert budgets.throttled_s("a") == 0.0 and not budgets.on_probation("a")
    assert not budgets.on_probation("b")
    with pytest.raises(AssertionError):
        budgets.release("b", 6)


def test_summary_log_counts_between_lines(logs: io.StringIO) -> None:
    now = [0.0]
    summary = SummaryLog(
        logging.getLogger("kledger.test"), "refused", "peer", 10.0, clock=lambda: now[0]
    )
    summary.note("ORG4", "bad_signature", 64, "signature: does not verify")
    for _ in range(1000):
        summary.note("ORG4", "throttled", 500)
    summary.flush()  # the interval has not passed: nothing more yet
    now[0] = 11.0
    summary.flush()
    summary.flush()  # nothing new since
    lines = events(logs, "refused")
    assert [line["counts"] for line in lines] == [{"bad_signature": 64}, {"throttled": 500_000}]


@pytest.mark.asyncio
async def test_a_flooding_peers_consensus_messages_are_still_handled(tmp_path: Path) -> None:
    """Over the real peer transport: the stream that floods bad signatures pauses after each
    throttled batch (its sender is held back) and still delivers the consensus message behind
    them; the same peer's consensus on another stream is not held up by that pause."""
    layout = init_cluster(tmp_path / "c", ClusterSpec(orgs=generic_orgs(2), chain_id=CHAIN))
    h = Harness(AdmissionSettings(throttled_pause_ms=500))
    consensus: list[bytes] = []

    def on_message(sender: str, payload: PeerPayload, stream: InboundStream) -> float | None:
        match payload:
            case ConsensusBytes(data):
                consensus.append(data)
            case TxGossip(txs):
                return h.admission.gossip(sender, txs, stream)
        return None

    node = PeerNode(layout, "ORG1", on_message)
    address = await node.serve()
    flooding = asyncio.Event()

    async def flood() -> AsyncIterator[peer_pb2.PeerMessage]:
        for batch in range(4):
            junk = [forged_tx(100 * batch + n).encoding for n in range(100)]
            yield peer_pb2.PeerMessage(txs=peer_pb2.TxBatch(txs=junk))
            if batch == 0:  # the first batch's bad signatures throttle ORG2
                await wait_until_throttled("ORG2")
                flooding.set()
        yield peer_pb2.PeerMessage(consensus=b"vote behind the flood")

    async def wait_until_throttled(org: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not h.admission.peers.throttled_s(org):
                await asyncio.sleep(0.01)

    async def vote() -> AsyncIterator[peer_pb2.PeerMessage]:
        yield peer_pb2.PeerMessage(consensus=b"vote on another stream")

    channels = [peer_channel(layout, "ORG2", address) for _ in range(2)]
    try:
        stubs = [peer_pb2_grpc.PeerStub(c) for c in channels]  # type: ignore[no-untyped-call]
        flood_call = stubs[0].Stream(flood())
        await asyncio.wait_for(flooding.wait(), WAIT_S)
        await asyncio.wait_for(stubs[1].Stream(vote()), WAIT_S)
        assert (await asyncio.wait_for(flood_call, WAIT_S)).received == 5
        assert consensus == [b"vote on another stream", b"vote behind the flood"]
        assert h.dropped("gossip.bad_signature") > 0 and h.dropped("gossip.throttled") > 0
    finally:
        for channel in channels:
            await channel.close()
        await node.close()
        await h.admission.close()


def peer_channel(layout: ClusterLayout, org: str, address: Address) -> grpc.aio.Channel:
    """A channel holding `org`'s peer identity to a peer port (ORG1's)."""
    return grpc.aio.secure_channel(
        str(address),
        peer_channel_credentials(material_of(layout, org)),
        options=channel_options(SETTINGS, "ORG1"),
    )
