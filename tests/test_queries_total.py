"""Registry queries are total: any string a client puts in any field of any query gets an
answer or a refusal naming the field (INVALID_ARGUMENT, NOT_FOUND, ...), never an exception
(an empty or `a/b` party id once raised AssertionError: UNKNOWN at the edge). Refusal messages
quote a bounded prefix of the input, so an oversized argument cannot blow the gRPC trailer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kledger.node.errors import MAX_MESSAGE_CHARS, Refused, Status
from kledger.node.registry.queries import RegistryQueries
from tests.test_registry import Chain, catalog

CHAIN = Chain()
catalog(CHAIN)
TEXT = st.text(max_size=40) | st.sampled_from(
    ["", "a/b", "/", "KR", "PR", "work", "isrc", "iswc", "cid", "uci", "recording", "2026-01",
     "2026-01-01", "composer", "W1", "KRA402600001", "T-034.524.680-1", "x" * 5_000, "\x00"]
)  # fmt: skip

QUERIES: dict[str, tuple[str, ...]] = {
    "resolve": ("kind", "value", "territory", "date"),
    "shares_at": ("kind", "value", "right", "territory", "date"),
    "unmatched_usage": ("period", "territory"),
    "statement": ("party_id", "period"),
    "distribution": ("distribution_id",),
    "ai_training": ("kind", "value", "territory", "date", "scope"),
    "persona_claims": ("kind", "value"),
    "subjects_of": ("kind", "value"),
}


@pytest.mark.parametrize("name", sorted(QUERIES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_query_answers_or_refuses(name: str, data: st.DataObject) -> None:
    args: dict[str, Any] = {arg: data.draw(TEXT, label=arg) for arg in QUERIES[name]}
    queries = RegistryQueries(CHAIN.view, CHAIN.time_ms)
    try:
        getattr(queries, name)(**args)
    except Refused as refusal:
        assert refusal.field, refusal
        assert len(refusal.message) <= MAX_MESSAGE_CHARS + len(refusal.field) + 2


def test_bad_ids_are_invalid_arguments_naming_the_field() -> None:
    queries = RegistryQueries(CHAIN.view, CHAIN.time_ms)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: queries.statement("", "2026-01"), "party_id"),
        (lambda: queries.statement("a/b", "2026-01"), "party_id"),
        (lambda: queries.statement("composer", "26-1"), "period"),
        (lambda: queries.distribution("a/b"), "distribution_id"),
        (lambda: queries.resolve("work", "a/b"), "code"),
        (lambda: queries.resolve("iswc", "T-034.524.680-1", date="2026-13-01"), "date"),
    ]
    for call, field in cases:
        with pytest.raises(Refused) as caught:
            call()
        assert caught.value.status.name == "INVALID_ARGUMENT" and caught.value.field == field


def test_a_refusal_quotes_a_bounded_prefix_of_its_input() -> None:
    long = Refused(Status.NOT_FOUND, "no party " + "x" * 100_000, "party_id")
    assert len(long.message) <= MAX_MESSAGE_CHARS + len("party_id: ")
    assert long.message.startswith("party_id: no party xxx") and "100009 chars" in long.message
