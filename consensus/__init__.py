"""The BFT protocol (2-chain HotStuff / Jolteon / DiemBFT v4) as a deterministic, I/O-free core.

Public API, re-exported here: the data types (consensus.types), the messages and their wire form
(consensus.messages), the safety rules (consensus.safety) and the core with its inputs and
effects (consensus.core). See docs/consensus.md.
"""

from kledger.consensus.codec import DecodeError
from kledger.consensus.core import (
    Applied,
    Broadcast,
    Commit,
    Core,
    CoreConfig,
    Deliver,
    Effect,
    Equivocation,
    Input,
    PayloadAvailable,
    PayloadSource,
    Persist,
    ProposeTimer,
    RequestSync,
    RestoredState,
    RoundTimer,
    SaveBlock,
    Send,
    SetTimer,
    SyncDone,
    Timer,
    TimerFired,
)
from kledger.consensus.messages import (
    BlockRequest,
    BlockResponse,
    EpochProof,
    EpochRequest,
    Message,
    Proposal,
    Timeout,
    decode_message,
    encode_message,
)
from kledger.consensus.types import (
    Block,
    BlockId,
    BlockInfo,
    Height,
    QuorumCert,
    Round,
    SafetyData,
    SafetyFloor,
    TimeoutCert,
    Vote,
    VoteData,
    genesis_block,
)
from kledger.consensus.validators import NodeId, ValidatorSet

__all__ = [
    "Applied", "Block", "BlockId", "BlockInfo", "BlockRequest", "BlockResponse", "Broadcast",
    "Commit", "Core", "CoreConfig", "DecodeError", "Deliver", "Effect", "EpochProof",
    "EpochRequest", "Equivocation", "Height", "Input", "Message", "NodeId", "PayloadAvailable",
    "PayloadSource", "Persist", "Proposal",
    "ProposeTimer", "QuorumCert", "RequestSync", "RestoredState", "Round", "RoundTimer",
    "SafetyData", "SafetyFloor", "SaveBlock", "Send", "SetTimer", "SyncDone", "Timeout",
    "TimeoutCert", "Timer", "TimerFired", "ValidatorSet", "Vote", "VoteData", "decode_message",
    "encode_message", "genesis_block",
]  # fmt: skip
