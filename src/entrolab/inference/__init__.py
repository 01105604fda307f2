"""Entropy-guided generation and answer aggregation, usable on any Hugging Face causal LM.

- :mod:`entrolab.generation.decoder` (re-exported here) — batched KV-cached decoding that records each token's
  entropy and varentropy, with a per-step hook to stop, fork (KV-cache copy) or force sequences, and uncommitted
  probes.
- Strategies (registered by name in ``STRATEGIES``): ``sample``, ``vote:majority``, ``vote:inverse_entropy``,
  ``vote:min_entropy``, ``eat``, ``dts``, ``eager``, ``egl``, ``seat``.
- :mod:`.aggregate` — majority / inverse-entropy votes, min-entropy path, semantic entropy (likelihood and count
  forms), the SEAT loop; answer clustering lives in :mod:`entrolab.env.equivalence`.
- :mod:`.uncertainty` — registered uncertainty measures (token entropy, trace length, self-certainty, semantic
  entropy, answer clusters, vote confidence) and how well they predict errors (AUROC, PRR, bootstrap CIs).
"""

from ..generation.decoder import (
    Decoder,
    DecodeStats,
    Generation,
    StepView,
    Trace,
    entropy_varentropy,
    generate,
    select_cache,
    top_k_entropy,
)
from .aggregate import (
    SEATRound,
    Vote,
    cluster_distribution,
    inverse_entropy_vote,
    majority_vote,
    min_entropy_path,
    seat_loop,
    semantic_entropy,
    weighted_vote,
)
from .base import (
    STRATEGIES,
    GenerationSettings,
    Strategy,
    StrategyResult,
    build_strategy,
    strategy_names,
)
from .strategies import (
    DTS,
    EAT,
    EGL,
    SEAT,
    EAGer,
    InverseEntropyVote,
    MajorityVote,
    MinEntropyPath,
    SampleStrategy,
)
from .uncertainty import (
    MEASURES,
    Evidence,
    MeanTokenEntropy,
    TraceLength,
    auroc,
    prr,
    score_measures,
    uncertainty_block,
)

__all__ = [
    "DTS", "EAT", "EGL", "SEAT", "EAGer", "InverseEntropyVote", "MajorityVote", "MinEntropyPath", "SampleStrategy",
    "STRATEGIES", "GenerationSettings", "Strategy", "StrategyResult", "build_strategy", "strategy_names",
    "DecodeStats", "Decoder", "Generation", "StepView", "Trace", "entropy_varentropy", "generate", "select_cache",
    "top_k_entropy",
    "SEATRound", "Vote", "cluster_distribution", "inverse_entropy_vote", "majority_vote", "min_entropy_path",
    "seat_loop", "semantic_entropy", "weighted_vote",
    "MEASURES", "Evidence", "MeanTokenEntropy", "TraceLength", "auroc", "prr", "score_measures", "uncertainty_block",
]
