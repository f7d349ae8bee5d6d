"""The safety rules of DiemBFT v4 (report, Algorithm 4) / Jolteon, exactly as docs/design.md §4.1.

    consecutive(a, b)            = a == b + 1
    safe_to_extend(r, qc_r, tc)  = consecutive(r, tc.round) and qc_r >= max(tc.high_qc_rounds)
    safe_to_vote(r, qc_r, tc)    = r > max(highest_vote_round, qc_r)
                                   and (consecutive(r, qc_r) or safe_to_extend(r, qc_r, tc))
    safe_to_timeout(r, qc_r, tc) = qc_r >= highest_qc_round
                                   and r > max(highest_vote_round - 1, qc_r)
                                   and (consecutive(r, qc_r) or consecutive(r, tc.round))

The class holds the SafetyData and returns the new SafetyData for every vote or timeout; the
core emits it as a Persist effect ahead of the message. Methods are separate so a test-only
subclass (cluster/sim/broken.py) can disable one rule and prove the simulator catches it.
"""

from __future__ import annotations

from dataclasses import replace

from kledger.consensus.types import QuorumCert, Round, SafetyData, TimeoutCert, Vote


def consecutive(later: int, earlier: int) -> bool:
    return later == earlier + 1


class SafetyRules:
    def __init__(self, data: SafetyData) -> None:
        self.data = data

    def safe_to_extend(self, round: Round, qc_round: Round, tc: TimeoutCert | None) -> bool:
        """The lock: after a TC, extend only a QC at least as high as every signer's high QC."""
        return tc is not None and consecutive(round, tc.round) and qc_round >= tc.max_high_qc_round

    def is_safe_to_vote(self, round: Round, qc_round: Round, tc: TimeoutCert | None) -> bool:
        """One vote per round, never below the QC it extends (DiemBFT v4 Alg. 4, safe_to_vote)."""
        return round > max(self.data.highest_vote_round, qc_round) and (
            consecutive(round, qc_round) or self.safe_to_extend(round, qc_round, tc)
        )

    def is_safe_to_timeout(self, round: Round, qc_round: Round, tc: TimeoutCert | None) -> bool:
        """DiemBFT v4 Alg. 4, safe_to_timeout."""
        return (
            qc_round >= self.data.highest_qc_round
            and round > max(self.data.highest_vote_round - 1, qc_round)
            and (consecutive(round, qc_round) or (tc is not None and consecutive(round, tc.round)))
        )

    def record_vote(
        self, vote: Vote, qc_round: Round, high_qc: QuorumCert, last_tc: TimeoutCert | None
    ) -> SafetyData:
        assert vote.round > self.data.highest_vote_round or not self.enforces_one_vote_per_round
        self.data = replace(
            self.data,
            highest_vote_round=Round(max(self.data.highest_vote_round, vote.round)),
            highest_qc_round=Round(max(self.data.highest_qc_round, qc_round)),
            last_vote=vote,
            high_qc=high_qc,
            last_tc=last_tc,
        )
        return self.data

    def record_timeout(
        self, round: Round, high_qc: QuorumCert, last_tc: TimeoutCert | None
    ) -> SafetyData:
        return self._record_round(round, high_qc, last_tc)

    def record_proposal(
        self, round: Round, high_qc: QuorumCert, last_tc: TimeoutCert | None
    ) -> SafetyData:
        """A proposal leaves without our own vote on it (our own check refused its payload):
        the round counts as voted in, so a restart never proposes it again. A timeout in it
        stays allowed (safe_to_timeout admits highest_vote_round itself)."""
        return self._record_round(round, high_qc, last_tc)

    def _record_round(
        self, round: Round, high_qc: QuorumCert, last_tc: TimeoutCert | None
    ) -> SafetyData:
        self.data = replace(
            self.data,
            highest_vote_round=Round(max(self.data.highest_vote_round, round)),
            high_qc=high_qc,
            last_tc=last_tc,
        )
        return self.data

    @property
    def enforces_one_vote_per_round(self) -> bool:
        return True
