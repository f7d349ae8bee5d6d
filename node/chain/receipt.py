"""What became of a committed transaction: where it sits and whether its rules passed.

A tx that breaks a state rule is still committed (its hash is spent, docs/design.md §5) with a
receipt naming the refusal; it changes no state. `status` is "OK" or a node.errors.Status name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kledger.node.chain import canonical
from kledger.node.errors import DecodeError

OK = "OK"


@dataclass(frozen=True, slots=True)
class TxResult:
    """The state machine's verdict on one tx. `output` holds ids the tx created (e.g. work id)."""

    status: str = OK
    message: str = ""
    output: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True, slots=True)
class Receipt:
    height: int
    leaf_index: int
    result: TxResult

    def encode(self) -> bytes:
        return canonical.encode(
            {
                "height": self.height,
                "leaf_index": self.leaf_index,
                "status": self.result.status,
                "message": self.result.message,
                "output": self.result.output,
            }
        )

    @staticmethod
    def decode(data: bytes) -> Receipt:
        value = canonical.decode(data)
        try:
            return Receipt(
                height=int(value["height"]),
                leaf_index=int(value["leaf_index"]),
                result=TxResult(str(value["status"]), str(value["message"]), value["output"]),
            )
        except (KeyError, TypeError, ValueError):
            raise DecodeError("not a receipt", "receipt") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "leaf_index": self.leaf_index,
            "status": self.result.status,
            "message": self.result.message,
            "output": self.result.output,
        }
