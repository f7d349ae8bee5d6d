"""Refusals: the one error type for bad input from a client or a peer.

A refusal names the rule or field that was broken and carries the status it maps to at the gRPC
edge (docs/design.md §8). Our own bugs are assertions, never refusals; bad configuration is a
ValueError at start-up.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """Why input was refused; the names match grpc.StatusCode so the edge maps them by name."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    NOT_FOUND = "NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"


# A refusal quotes at most this much (messages often quote the input): a client's oversized
# argument must not come back whole, nor push the gRPC trailer past its 16 KiB limit.
MAX_MESSAGE_CHARS = 512


class Refused(Exception):
    """Input refused by a rule. `field` names the offending field when there is one."""

    def __init__(self, status: Status, message: str, field: str | None = None) -> None:
        self.status = status
        self.field = field
        if len(message) > MAX_MESSAGE_CHARS:
            cut = f"... ({len(message)} chars)"
            message = message[: MAX_MESSAGE_CHARS - len(cut)] + cut
        self.message = f"{field[:64]}: {message}" if field else message
        super().__init__(self.message)


def invalid(message: str, field: str | None = None) -> Refused:
    return Refused(Status.INVALID_ARGUMENT, message, field)


class DecodeError(Refused):
    """Bytes that do not decode to a well-formed, canonical value."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(Status.INVALID_ARGUMENT, message, field)


class StoreCorrupt(ValueError):
    """The node's own store does not add up (the message names what): the node must stop, never
    serve from it or count it as a refusal of some input."""
