"""Following validator-set changes offline: the chain of epoch-ending links a bundle carries and
the check that turns a trusted set (the genesis set, or a checkpoint the user passes) into the
set that certifies a header of a later epoch (docs/design.md §7.4).

An epoch-ending link is the epoch's last header (its `next_validator_set_hash` names the next
set), that header's commit certificate (by the ending epoch's own set) and the next set's
members:

    {"header": Header.to_json(), "certificate": CommitCertificate.to_json(),
     "next_validators": {"epoch": e + 1, "validators": [[org, KEY_HEX], ...]}}

A trusted checkpoint (`kledger verify ... --trust-epoch FILE`, written by `--export-trust`):

    {"format": "kledger-trusted-epoch/v1", "chain_id": str, "epoch": int,
     "validators": [[org, KEY_HEX], ...], "first_height": int}

Rules kept here, in the order they are checked (the first failure is the answer, naming the
link's index in the bundle and the rule):
- links are consecutive epochs (no gap, no reordering); links below the trusted epoch are
  older than the trust and are skipped, and the first one used is of the trusted epoch;
- each used link's header is of this chain and of its epoch, certified by a quorum of THAT
  epoch's set (signers outside it refused, quorum counted against its n), ends its epoch (a
  zero next_validator_set_hash is refused), lies above the previous epoch's end, and its
  next set hashes to its next_validator_set_hash and is of the following epoch;
- a header is then checked against the set of its own epoch, and only if its height lies in
  that epoch's span (above the previous epoch's last height, at most its own last height):
  a header above an epoch's end "signed by that epoch's set" is refused.
Nothing is skipped and nothing is trusted that a link does not prove.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.genesis import Genesis
from kledger.node.chain.header import (
    HASH_BYTES,
    ZERO_HASH,
    CommitCertificate,
    Header,
    certificate_problem,
)
from kledger.node.errors import DecodeError

TRUST_FORMAT = "kledger-trusted-epoch/v1"
# At most this many links in one bundle (the node serves the last MAX_EPOCH_LINKS before the
# header's epoch; an older start needs a --trust-epoch checkpoint). A link is about 1 KB.
MAX_EPOCH_LINKS = 64
MAX_VALIDATORS = 256


def members_to_json(validators: ValidatorSet) -> list[list[str]]:
    return [[v.node_id, v.public_key.hex()] for v in validators.validators]


def parse_validator_set(epoch: Any, members: Any, where: str) -> ValidatorSet:
    """A validator set from JSON (epoch, [[org, KEY_HEX], ...]). Raises DecodeError."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 2**64:
        raise DecodeError("must be an integer in 0..2**64-1", f"{where}.epoch")
    if not isinstance(members, list) or not 0 < len(members) <= MAX_VALIDATORS:
        raise DecodeError(
            f"must be a list of 1..{MAX_VALIDATORS} [org, key]", f"{where}.validators"
        )
    pairs: list[tuple[str, bytes]] = []
    for index, item in enumerate(members):
        name = f"{where}.validators[{index}]"
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise DecodeError("must be [org, KEY_HEX]", name)
        if not isinstance(item[1], str) or len(item[1]) != 2 * HASH_BYTES:
            raise DecodeError(f"key must be {HASH_BYTES} bytes of hex", name)
        try:
            pairs.append((item[0], bytes.fromhex(item[1])))
        except ValueError:
            raise DecodeError("key is not valid hex", name) from None
    try:
        return ValidatorSet.of(epoch, pairs)
    except ValueError as exc:
        raise DecodeError(str(exc), f"{where}.validators") from None


@dataclass(frozen=True, slots=True)
class EpochLink:
    """One ended epoch: its last header, that header's certificate, the set that follows."""

    header: Header
    certificate: CommitCertificate
    next_validators: ValidatorSet

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header.to_json(),
            "certificate": self.certificate.to_json(),
            "next_validators": {
                "epoch": self.next_validators.epoch,
                "validators": members_to_json(self.next_validators),
            },
        }

    @staticmethod
    def from_json(value: Any, where: str) -> EpochLink:
        if not isinstance(value, dict):
            raise DecodeError("must be an object", where)
        following = value.get("next_validators")
        if not isinstance(following, dict):
            raise DecodeError("must be {epoch, validators}", f"{where}.next_validators")
        return EpochLink(
            header=Header.from_json(value.get("header")),
            certificate=CommitCertificate.from_json(value.get("certificate")),
            next_validators=parse_validator_set(
                following.get("epoch"), following.get("validators"), f"{where}.next_validators"
            ),
        )


def chain_to_json(chain: tuple[EpochLink, ...]) -> list[dict[str, Any]]:
    return [link.to_json() for link in chain]


def parse_chain(value: Any, name: str = "epoch_chain") -> tuple[EpochLink, ...]:
    if not isinstance(value, list):
        raise DecodeError("must be a list of epoch-ending links", name)
    if len(value) > MAX_EPOCH_LINKS:
        raise DecodeError(f"more than {MAX_EPOCH_LINKS} links", name)
    return tuple(EpochLink.from_json(item, f"{name}[{index}]") for index, item in enumerate(value))


@dataclass(frozen=True, slots=True)
class TrustedEpoch:
    """A set the verifier trusts without proof: the genesis set (epoch 0 from height 1) or a
    checkpoint the user passed. `first_height` is the epoch's first height (its span's start)."""

    chain_id: str
    validators: ValidatorSet
    first_height: int

    @property
    def epoch(self) -> int:
        return self.validators.epoch

    @staticmethod
    def of_genesis(genesis: Genesis) -> TrustedEpoch:
        return TrustedEpoch(genesis.chain_id, genesis.validator_set, 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TRUST_FORMAT,
            "chain_id": self.chain_id,
            "epoch": self.epoch,
            "validators": members_to_json(self.validators),
            "first_height": self.first_height,
        }

    @staticmethod
    def from_json(value: Any) -> TrustedEpoch:
        if not isinstance(value, dict) or value.get("format") != TRUST_FORMAT:
            raise DecodeError(f'must be "{TRUST_FORMAT}"', "trust.format")
        chain_id, first = value.get("chain_id"), value.get("first_height")
        if not isinstance(chain_id, str):
            raise DecodeError("must be a string", "trust.chain_id")
        if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first < 2**64:
            raise DecodeError("must be an integer >= 1", "trust.first_height")
        validators = parse_validator_set(value.get("epoch"), value.get("validators"), "trust")
        return TrustedEpoch(chain_id, validators, first)


@dataclass(frozen=True, slots=True)
class EpochSpan:
    """A set the links proved, and the heights its epoch covers (last None: still running)."""

    validators: ValidatorSet
    first_height: int
    last_height: int | None


@dataclass(frozen=True, slots=True)
class FollowedEpochs:
    """What a verified chain of links proves: each epoch's set and span, from the trust on."""

    spans: dict[int, EpochSpan]

    @property
    def latest(self) -> EpochSpan:
        return self.spans[max(self.spans)]

    def header_problem(self, cert: CommitCertificate, header: Header, name: str) -> str | None:
        """Why `cert` does not certify `header` with the set of the header's epoch."""
        span = self.spans.get(header.epoch)
        if span is None:
            known = f"{min(self.spans)}..{max(self.spans)}"
            return (
                f"{name}: header of epoch {header.epoch}, the links prove the sets of epochs "
                f"{known} only"
            )
        if header.height < span.first_height or (
            span.last_height is not None and header.height > span.last_height
        ):
            end = "" if span.last_height is None else f"..{span.last_height}"
            return (
                f"{name}: header at height {header.height} names epoch {header.epoch}, whose "
                f"span is heights {span.first_height}{end} (a header's epoch is the epoch "
                "whose span holds its height)"
            )
        problem = certificate_problem(cert, header, span.validators)
        return f"{name}: {problem}" if problem else None

    def trust_after(self, chain_id: str) -> TrustedEpoch:
        """The newest proven set as a checkpoint (what --export-trust writes)."""
        latest = self.latest
        return TrustedEpoch(chain_id, latest.validators, latest.first_height)


def follow_epochs(
    chain: tuple[EpochLink, ...], trust: TrustedEpoch, chain_id: str
) -> FollowedEpochs | str:
    """Check the links in order from `trust` (module docstring); the sets they prove, or the
    first problem naming the link and the rule."""
    if trust.chain_id != chain_id:
        return f"trusted epoch is of chain {trust.chain_id!r}, the bundle of {chain_id!r}"
    for index, link in enumerate(chain):
        expected = chain[0].header.epoch + index
        if link.header.epoch != expected:
            return (
                f"epoch_chain[{index}]: header of epoch {link.header.epoch} where epoch "
                f"{expected} must follow epoch {expected - 1} (links must be consecutive "
                "epochs: no gap, no reordering)"
            )
    used = [(i, link) for i, link in enumerate(chain) if link.header.epoch >= trust.epoch]
    if used and used[0][1].header.epoch != trust.epoch:
        index, link = used[0]
        return (
            f"epoch_chain[{index}]: starts at epoch {link.header.epoch} but the trusted set is "
            f"of epoch {trust.epoch}: the links of epochs {trust.epoch}..{link.header.epoch - 1} "
            "are missing (pass --trust-epoch with a later checkpoint)"
        )
    spans: dict[int, EpochSpan] = {}
    current, first_height = trust.validators, trust.first_height
    for index, link in used:
        name = f"epoch_chain[{index}]"
        header = link.header
        if header.chain_id != chain_id:
            return f"{name}: header is of chain {header.chain_id!r}"
        if header.height < first_height:
            return (
                f"{name}: epoch {header.epoch} ends at height {header.height}, not above the "
                f"previous epoch's end (it starts at height {first_height})"
            )
        problem = certificate_problem(link.certificate, header, current)
        if problem:
            return f"{name}: certificate of the last header of epoch {header.epoch}: {problem}"
        if header.next_validator_set_hash == ZERO_HASH:
            return (
                f"{name}: header at height {header.height} does not end epoch {header.epoch} "
                "(its next_validator_set_hash is zero)"
            )
        following = link.next_validators
        if following.digest() != header.next_validator_set_hash:
            return (
                f"{name}: next_validators does not match the next_validator_set_hash of the "
                f"header at height {header.height}"
            )
        if following.epoch != header.epoch + 1:
            return f"{name}: next_validators is of epoch {following.epoch}, not {header.epoch + 1}"
        spans[header.epoch] = EpochSpan(current, first_height, header.height)
        current, first_height = following, header.height + 1
    spans[current.epoch] = EpochSpan(current, first_height, None)
    return FollowedEpochs(spans)
