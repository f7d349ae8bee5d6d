"""The generated gRPC servicer base classes (proto/kledger/v1/*_pb2_grpc.py, made by
grpc_tools.protoc and committed as generated) answer every method with UNIMPLEMENTED and raise
NotImplementedError. Those bodies are protoc's defaults, not placeholders of ours: each node
servicer overrides every method of its base, so no RPC of the .proto files ever reaches them.
This test fails when an RPC is added to a .proto without an implementation."""

from __future__ import annotations

import inspect

import pytest

from kledger.node.api.ledger_service import LedgerServicer
from kledger.node.api.registry_service import RegistryServicer
from kledger.node.net.peer_transport import PeerServicer
from kledger.v1 import ledger_pb2_grpc, peer_pb2_grpc, registry_pb2_grpc


@pytest.mark.parametrize(
    ("ours", "generated"),
    [
        (LedgerServicer, ledger_pb2_grpc.LedgerServicer),
        (PeerServicer, peer_pb2_grpc.PeerServicer),
        (RegistryServicer, registry_pb2_grpc.RegistryServiceServicer),
    ],
)
def test_every_generated_rpc_is_implemented(ours: type, generated: type) -> None:
    rpcs = [name for name, _ in inspect.getmembers(generated, inspect.isfunction)]
    assert rpcs, f"{generated.__name__} lists no RPCs"
    inherited = [name for name in rpcs if getattr(ours, name) is getattr(generated, name)]
    assert inherited == [], f"{ours.__name__} leaves {inherited} to protoc's UNIMPLEMENTED stub"
