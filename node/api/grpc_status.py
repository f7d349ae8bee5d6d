"""The one mapping from refusals (node.errors) to gRPC status codes (docs/design.md §8).

Status names equal grpc.StatusCode names, so the mapping is by name and cannot drift; a test
checks every Status maps.
"""

from __future__ import annotations

import grpc

from kledger.node.errors import Refused, Status


def status_code(status: Status) -> grpc.StatusCode:
    code: grpc.StatusCode = grpc.StatusCode[status.value]
    return code


def refusal_code(refusal: Refused) -> grpc.StatusCode:
    return status_code(refusal.status)
