"""Deliberately broken cores, for the test that proves the simulator's checks have teeth.

Each class disables exactly one safety rule of docs/design.md §4.1. They live outside consensus/
so no node can run them by configuration; only tests and `kledger sim --broken RULE` use them.

- double_vote: votes again in a round it already voted in (drops `r > highest_vote_round`);
- ignore_lock: after a TC, extends any QC (drops `qc_r >= max(tc.high_qc_rounds)`) and times out
  without regard to its lock (drops `qc_r >= highest_qc_round`);
- one_chain: commits a block as soon as it is certified, instead of on a 2-chain.
"""

from __future__ import annotations

from kledger.consensus.core import Core
from kledger.consensus.safety import SafetyRules, consecutive
from kledger.consensus.types import BlockInfo, QuorumCert, Round, SafetyData, TimeoutCert


class _DoubleVoteRules(SafetyRules):
    def is_safe_to_vote(self, round: Round, qc_round: Round, tc: TimeoutCert | None) -> bool:
        return round > qc_round and (
            consecutive(round, qc_round) or self.safe_to_extend(round, qc_round, tc)
        )

    @property
    def enforces_one_vote_per_round(self) -> bool:
        return False


class _IgnoreLockRules(SafetyRules):
    def safe_to_extend(self, round: Round, qc_round: Round, tc: TimeoutCert | None) -> bool:
        return tc is not None and consecutive(round, tc.round)

    def is_safe_to_timeout(self, round: Round, qc_round: Round, tc: TimeoutCert | None) -> bool:
        return round > max(self.data.highest_vote_round - 1, qc_round) and (
            consecutive(round, qc_round) or (tc is not None and consecutive(round, tc.round))
        )


class DoubleVoteCore(Core):
    def make_safety_rules(self, data: SafetyData) -> SafetyRules:
        return _DoubleVoteRules(data)


class IgnoreLockCore(Core):
    def make_safety_rules(self, data: SafetyData) -> SafetyRules:
        return _IgnoreLockRules(data)


class OneChainCore(Core):
    def committed_by(self, qc: QuorumCert) -> BlockInfo | None:
        return qc.data.certified


BROKEN_CORES: dict[str, type[Core]] = {
    "double_vote": DoubleVoteCore,
    "ignore_lock": IgnoreLockCore,
    "one_chain": OneChainCore,
}
