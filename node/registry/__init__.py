"""The K-copyright registry: the deterministic state machine the node runs on committed blocks.

Contract with the node driver:
    Registry(genesis)
      .genesis_writes()                 orgs, roles, admin + member keys, validators, tariff, SMT
      .genesis_state_root()
      .state_root(view)                 the SMT root as stored
      .check_admission(view, tx, body)  cheap checks before ordering; raises node.errors.Refused
      .execute_block(view, txs, ctx)    -> BlockOutcome(results, writes, state_root,
                                           validator_change=None)
      .execute_epoch_change(view, set, ctx)  the marker block (docs/design.md §4.8): no txs,
                                           NEXT becomes the current set; validator_change=set

Execution is deterministic: no clock (time is ctx.timestamp_ms), no randomness, no float, no
dependence on dict order (state values are canonical msgpack, iteration is by sorted key). A
transaction that breaks a rule gets a failure TxResult naming the field or rule and changes no
state; later transactions of the block see the writes of earlier ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kledger.consensus.validators import ValidatorSet
from kledger.node.chain import canonical
from kledger.node.chain.genesis import Genesis
from kledger.node.chain.receipt import TxResult
from kledger.node.chain.tx import SignedTx, TxBody
from kledger.node.errors import Refused, Status, StoreCorrupt
from kledger.node.registry import governance, permissions, state, usage
from kledger.node.registry.env import Env
from kledger.node.registry.state import BlockContext, StateReader, TxState
from kledger.node.registry.txtypes import TX_TYPES, TxType
from kledger.node.storage import keyspace, state_tree
from kledger.node.storage.keyspace import ReadView, WriteSet

__all__ = ["BlockContext", "BlockOutcome", "Registry"]

log = logging.getLogger("kledger.registry")

# The receipt status of a tx whose execution hit a bug of ours (never a rule of the registry).
INTERNAL = "INTERNAL"
# Exceptions that say the node itself cannot go on (its memory or its store): they stop it
# loudly instead of becoming a tx's failure receipt, which would differ between nodes.
NODE_BROKEN: tuple[type[BaseException], ...] = (MemoryError, StoreCorrupt)


def _bug_message(exc: Exception) -> str:
    return f"execution failed on a node bug ({type(exc).__name__}); the tx changed nothing"


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    results: list[TxResult]
    writes: WriteSet
    state_root: bytes
    validator_change: ValidatorSet | None


def _tx_type(body: TxBody) -> TxType:
    tx_type = TX_TYPES.get(body.type)
    if tx_type is None:
        raise Refused(
            Status.INVALID_ARGUMENT,
            f"unknown transaction type {body.type!r} (known: {', '.join(sorted(TX_TYPES))})",
            "type",
        )
    return tx_type


def _authorize(
    reader: StateReader, tx: SignedTx, tx_type: TxType, payload: dict[str, object]
) -> permissions.Signer:
    if tx_type.signer == "validator":
        return governance.ready_signer(reader, tx.signer, str(payload.get("org")))
    signer = permissions.resolve_signer(reader, tx.signer)
    if tx_type.signer == "admin":
        if not signer.admin or signer.org != payload.get("org"):
            raise Refused(
                Status.PERMISSION_DENIED,
                f"{tx_type.name} needs the admin key of {payload.get('org')}",
                "signer",
            )
    elif tx_type.signer == "member":
        permissions.require_roles(signer, tx_type.roles(payload), tx_type.name)
    return signer


class Registry:
    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self._genesis_writes = self._build_genesis()

    def _build_genesis(self) -> WriteSet:
        changes: WriteSet = {}

        def put(key: bytes, value: object) -> None:
            changes[key] = canonical.encode(value)

        for org in self.genesis.orgs:
            put(state.org_key(org.org_id), {
                "org": org.org_id, "name": org.name, "roles": list(org.roles),
                "admin_key": org.admin_key.hex(),
                "validator_key": org.validator_key.hex() if org.validator_key else "",
                "active": True,
            })  # fmt: skip
            put(state.member_key(org.admin_key), {"org": org.org_id, "roles": [], "admin": True})
            for member in org.member_keys:
                put(
                    state.member_key(member),
                    {"org": org.org_id, "roles": list(org.roles), "admin": False},
                )
        validators = governance.validators_record(self.genesis.validator_set)
        put(state.VALIDATORS_KEY, validators)
        put(state.epoch_validators_key(validators["epoch"]), validators)
        put(state.tariff_key(usage.DEFAULT_TARIFF["version"]), usage.DEFAULT_TARIFF)  # type: ignore[arg-type]
        _, tree = state_tree.update(keyspace.DictView(), 0, changes)
        return {**changes, **tree}

    def genesis_writes(self) -> WriteSet:
        return dict(self._genesis_writes)

    def genesis_state_root(self) -> bytes:
        root = self._genesis_writes[state_tree.ROOT_KEY]
        assert root is not None
        return state_tree.decode_ref(root)[1]

    def state_root(self, view: ReadView) -> bytes:
        return state_tree.stored_root(view)

    def check_payload(self, body: TxBody) -> None:
        """The stateless checks (type, payload shape and identifiers) that every replica runs
        on a proposed tx before voting: a tx that fails them can never be valid. Raises
        Refused."""
        _tx_type(body).check(body.payload)

    def check_admission(self, view: ReadView, tx: SignedTx, body: TxBody) -> None:
        """Type, payload shape and identifiers, registered signer, role. Raises Refused."""
        tx_type = _tx_type(body)
        payload = tx_type.check(body.payload)
        _authorize(StateReader(view), tx, tx_type, payload)

    def execute_block(
        self, view: ReadView, txs: Sequence[tuple[SignedTx, TxBody]], ctx: BlockContext
    ) -> BlockOutcome:
        block_writes: WriteSet = {}
        results: list[TxResult] = []
        for tx, body in txs:
            st = TxState(view, block_writes)
            try:
                tx_type = _tx_type(body)
                payload = tx_type.check(body.payload)
                signer = _authorize(st, tx, tx_type, payload)
                output = tx_type.apply(st, Env(ctx, signer, tx.tx_hash), payload)
            except Refused as refusal:
                results.append(TxResult(status=refusal.status.name, message=refusal.message))
                continue
            except NODE_BROKEN:
                raise
            except Exception as exc:
                # Our bug, reached by some tx: the tx fails alone and the chain goes on. The
                # receipt names only the exception type, which every node running this code
                # reaches identically (a message may hold addresses or other node-local text).
                log.error(
                    "execution bug: tx %s raised %s",
                    tx.tx_hash.hex(),
                    type(exc).__name__,
                    exc_info=True,
                )
                results.append(TxResult(status=INTERNAL, message=_bug_message(exc)))
                continue
            block_writes.update(st.writes)
            results.append(TxResult(output=output))
        root, tree_writes = state_tree.update(view, ctx.height, block_writes)
        return BlockOutcome(
            results=results,
            writes={**block_writes, **tree_writes},
            state_root=root,
            validator_change=None,
        )

    def execute_epoch_change(
        self, view: ReadView, marker: ValidatorSet, ctx: BlockContext
    ) -> BlockOutcome:
        """The epoch's last block, whose payload is the epoch-change marker: no txs; the
        decided next set becomes the current one (raises StoreCorrupt if it is not the one the
        marker names, which the vote rule excludes)."""
        assert marker.epoch == ctx.epoch + 1, "a marker names the next epoch"
        st = TxState(view, {})
        governance.enact_epoch_change(st, marker)
        root, tree_writes = state_tree.update(view, ctx.height, st.writes)
        return BlockOutcome(
            results=[],
            writes={**st.writes, **tree_writes},
            state_root=root,
            validator_change=marker,
        )

    def current_set(self, view: ReadView) -> ValidatorSet:
        """The set of the epoch the executed state is in (state.VALIDATORS_KEY)."""
        return governance.validator_set_of(governance.current_validators(StateReader(view)))

    def validators_of_epoch(self, view: ReadView, epoch: int) -> ValidatorSet | None:
        """The set of `epoch` from the executed state's history, or None if not reached yet."""
        record = StateReader(view).get(state.epoch_validators_key(epoch))
        return None if record is None else governance.validator_set_of(record)

    def ready_next_set(self, view: ReadView) -> ValidatorSet | None:
        """The decided next set with every new key announced (the marker to propose)."""
        return governance.ready_next_set(StateReader(view))

    def next_set_record(self, view: ReadView) -> dict[str, Any] | None:
        """The pending decision as stored (epoch, validators, decided_height, waiting_for)."""
        record: dict[str, Any] | None = StateReader(view).get(state.NEXT_VALIDATORS_KEY)
        return record
