"""Collects validators' signatures over committed headers into commit certificates.

Why a separate round: a header holds execution results (tx_log_root, state_root). Consensus votes
certify block ids before execution, so after a node commits and executes a block it signs the
resulting header and broadcasts the signature; q matching signatures form the certificate that
verifiers check (node/chain/header.py). Honest nodes execute the same committed blocks
deterministically, so they sign the same hash; a signature over any other hash is evidence of a
faulty signer and is counted, never stored.

Epochs (docs/design.md §4.8): a header of epoch e is certified by q of set e (the marker block's
header, the epoch's last, by the old set). Which set a height has is known once this node
executed it (`executed` names it); signatures that come earlier wait unchecked, from signers of
the current or the pending next set only, and are checked when the height's set is known.

Rules kept:
- a signature counts only if it verifies under the key its height's epoch set names for the
  signer, and names the header hash this node computed itself for that height;
- signatures for heights this node has not executed yet wait in a bounded window
  (`max_heights_ahead`), at most one per signer and height;
- once a height has a certificate, later signatures for it are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.header import CommitCertificate, commit_sign_bytes
from kledger.node.chain.keys import COMMIT_TAG, verify


@dataclass(frozen=True, slots=True)
class HeaderSignature:
    height: int
    header_hash: bytes
    signer: str
    signature: bytes


@dataclass(slots=True)
class _Pending:
    header_hash: bytes | None = None  # our own hash, once we executed the height
    validators: ValidatorSet | None = None  # the height's epoch set, once we executed it
    signatures: dict[str, tuple[bytes, bytes]] = field(
        default_factory=dict
    )  # signer -> (hash, sig), checked
    # signer -> (hash, sig) received before the height's set was known: checked at `executed`.
    unchecked: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)


class Certifier:
    def __init__(
        self,
        validators: ValidatorSet,
        save: Callable[[int, CommitCertificate], None],
        executed_height: int = 0,
        max_heights_ahead: int = 256,
    ) -> None:
        self._validators = validators  # the current epoch's set
        self._next: ValidatorSet | None = None  # the decided next set, while pending
        self._save = save
        self._max_heights_ahead = max_heights_ahead
        self._pending: dict[int, _Pending] = {}
        # Heights <= this one have certificates or were given up on: a height that misses its
        # quorum (e.g. signatures sent while this node was down) stays uncertified, and proofs
        # use a later certified header instead (the log is append-only).
        self._certified_up_to = executed_height
        self._executed_height = executed_height
        self._done_ahead: set[int] = set()  # certified heights above _certified_up_to
        self.dropped: dict[str, int] = {}

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def follow(self, current: ValidatorSet, pending_next: ValidatorSet | None) -> None:
        """The epoch moved on (or a next set was decided): whose early signatures may wait."""
        self._validators = current
        self._next = pending_next

    def executed(
        self, height: int, header_hash: bytes, validators: ValidatorSet | None = None
    ) -> CommitCertificate | None:
        """This node executed `height` and computed `header_hash`; `validators` is the set of
        the header's epoch (default: the current set). Its own signature arrives through `add`
        like any other."""
        self._executed_height = max(self._executed_height, height)
        self._give_up_below(height - self._max_heights_ahead)
        if height <= self._certified_up_to or height in self._done_ahead:
            return None
        pending = self._pending.setdefault(height, _Pending())
        pending.header_hash = header_hash
        pending.validators = validators if validators is not None else self._validators
        unchecked, pending.unchecked = pending.unchecked, {}
        for signer, (hash_, signature) in unchecked.items():
            if not self._verifies(pending.validators, signer, hash_, signature):
                continue
            pending.signatures[signer] = (hash_, signature)
        for signer, (hash_, _) in list(pending.signatures.items()):
            if hash_ != header_hash:
                # A validator signed another header for this height: it is faulty.
                del pending.signatures[signer]
                self._drop("conflicting_header")
        return self._try_certify(height)

    def _verifies(
        self, validators: ValidatorSet, signer: str, header_hash: bytes, signature: bytes
    ) -> bool:
        key = validators.public_key(signer)
        if key is None:
            self._drop("not_a_validator")
            return False
        if not verify(key, COMMIT_TAG, commit_sign_bytes(header_hash), signature):
            self._drop("bad_signature")
            return False
        return True

    def already_certified(self, height: int) -> None:
        """A certificate for `height` arrived with block sync; stop collecting for it."""
        self._pending.pop(height, None)
        self._mark_done(height)

    def add(self, signature: HeaderSignature) -> CommitCertificate | None:
        """Take one validator's header signature; returns a certificate when it completes one."""
        signer = signature.signer
        if not self._validators.contains(signer) and not (
            self._next is not None and self._next.contains(signer)
        ):
            self._drop("not_a_validator")
            return None
        if signature.height <= self._certified_up_to or signature.height in self._done_ahead:
            self._drop("already_certified")
            return None
        if signature.height > self._executed_height + self._max_heights_ahead:
            self._drop("too_far_ahead")
            return None
        pending = self._pending.setdefault(signature.height, _Pending())
        if signer in pending.signatures or signer in pending.unchecked:
            self._drop("duplicate")
            return None
        entry = (signature.header_hash, signature.signature)
        if pending.validators is None:
            pending.unchecked[signer] = entry  # its height's set is not known here yet
            return None
        if not self._verifies(pending.validators, signer, *entry):
            return None
        if pending.header_hash is not None and signature.header_hash != pending.header_hash:
            self._drop("conflicting_header")
            return None
        pending.signatures[signer] = entry
        return self._try_certify(signature.height)

    def _try_certify(self, height: int) -> CommitCertificate | None:
        pending = self._pending.get(height)
        if pending is None or pending.header_hash is None or pending.validators is None:
            return None
        signatures = tuple(sorted((s, sig) for s, (_, sig) in pending.signatures.items()))
        if len(signatures) < pending.validators.quorum:
            return None
        certificate = CommitCertificate(pending.header_hash, signatures)
        del self._pending[height]
        self._save(height, certificate)
        self._mark_done(height)
        return certificate

    def _give_up_below(self, height: int) -> None:
        if height <= self._certified_up_to:
            return
        for old in [h for h in self._pending if h <= height]:
            del self._pending[old]
            self._drop("uncertified_height_given_up")
        self._done_ahead = {h for h in self._done_ahead if h > height}
        self._certified_up_to = height
        while self._certified_up_to + 1 in self._done_ahead:
            self._certified_up_to += 1
            self._done_ahead.discard(self._certified_up_to)

    def _mark_done(self, height: int) -> None:
        if height <= self._certified_up_to:
            return
        self._done_ahead.add(height)
        while self._certified_up_to + 1 in self._done_ahead:
            self._certified_up_to += 1
            self._done_ahead.discard(self._certified_up_to)
