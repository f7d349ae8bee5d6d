"""Payload field checks shared by every transaction type: each returns the normalized value or
raises Refused(INVALID_ARGUMENT) naming the field (`payload.<name>`) and the rule."""

from __future__ import annotations

import re
from typing import Any

from kledger.node.errors import invalid
from kledger.node.registry import identifiers

MAX_ID_CHARS = 64
MAX_ITEMS = 200
ID_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$")
DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
PERIOD = re.compile(r"^(\d{4})-(\d{2})$")
HEX32 = re.compile(r"^[0-9a-f]{64}$")
MAX_DATE = "9999-12-31"


def where(path: str) -> str:
    return f"payload.{path}" if not path.startswith("payload") else path


def obj(value: Any, path: str, allowed: frozenset[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("must be a map", where(path))
    if allowed is not None and not allowed.issuperset(value):
        unknown = sorted(set(value) - allowed)
        raise invalid(f"unknown field(s) {', '.join(unknown)}", where(path))
    return value


def text(
    payload: dict[str, Any], name: str, path: str, required: bool = True, max_chars: int = 512
) -> str:
    value = payload.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise invalid("must be a non-empty string", where(f"{path}{name}"))
    if len(value) > max_chars:
        raise invalid(f"must be at most {max_chars} characters", where(f"{path}{name}"))
    return value


def token(payload: dict[str, Any], name: str, path: str = "", required: bool = True) -> str:
    value = payload.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not ID_TOKEN.match(value):
        raise invalid(
            f"must be an id of 1..{MAX_ID_CHARS} chars [A-Za-z0-9._:+-]", where(f"{path}{name}")
        )
    return value


def integer(
    payload: dict[str, Any],
    name: str,
    path: str,
    low: int,
    high: int,
    *,
    default: int | None = None,
) -> int:
    value = payload.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(f"must be an integer in {low}..{high}", where(f"{path}{name}"))
    return value


def boolean(payload: dict[str, Any], name: str, path: str, default: bool = False) -> bool:
    value = payload.get(name, default)
    if not isinstance(value, bool):
        raise invalid("must be true or false", where(f"{path}{name}"))
    return value


def choice(
    payload: dict[str, Any],
    name: str,
    path: str,
    options: frozenset[str],
    default: str | None = None,
) -> str:
    value = payload.get(name, default)
    # The type test first: a list or map is unhashable, and a set membership test on one
    # raises instead of answering (the chain-halt bug of a Byzantine proposer's `"kind": []`).
    if not isinstance(value, str) or value not in options:
        raise invalid(f"must be one of {', '.join(sorted(options))}", where(f"{path}{name}"))
    return value


def items(payload: dict[str, Any], name: str, path: str, required: bool = True) -> list[Any]:
    value = payload.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        raise invalid("must be a non-empty list", where(f"{path}{name}"))
    if len(value) > MAX_ITEMS:
        raise invalid(f"must have at most {MAX_ITEMS} items", where(f"{path}{name}"))
    return value


def code(
    payload: dict[str, Any], name: str, kind: str, path: str = "", required: bool = True
) -> str:
    value = payload.get(name)
    if value is None and not required:
        return ""
    return identifiers.parse_code(kind, value, where(f"{path}{name}"))


def date(payload: dict[str, Any], name: str, path: str, default: str | None = None) -> str:
    value = payload.get(name, default)
    match = DATE.match(value) if isinstance(value, str) else None
    if not match or not (1 <= int(match.group(2)) <= 12 and 1 <= int(match.group(3)) <= 31):
        raise invalid("must be a date YYYY-MM-DD", where(f"{path}{name}"))
    assert isinstance(value, str)
    return value


def period(payload: dict[str, Any], name: str, path: str = "") -> str:
    value = payload.get(name)
    match = PERIOD.match(value) if isinstance(value, str) else None
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise invalid("must be a period YYYY-MM", where(f"{path}{name}"))
    assert isinstance(value, str)
    return value


def territories(payload: dict[str, Any], name: str, path: str, default: list[str]) -> list[str]:
    raw = payload.get(name, default)
    if not isinstance(raw, list) or not raw or len(raw) > MAX_ITEMS:
        raise invalid("must be a non-empty list of territories", where(f"{path}{name}"))
    parsed = {
        identifiers.parse_territory(t, where(f"{path}{name}[{i}]")) for i, t in enumerate(raw)
    }
    return sorted(parsed)


def hex32(value: Any, path: str) -> str:
    if not isinstance(value, str) or not HEX32.match(value.lower()):
        raise invalid("must be 64 hex characters (a SHA-256 or Ed25519 key)", where(path))
    return value.lower()
