"""Reward sources: where a rollout's rewards come from. ``data.reward_source`` names one, and so may a method whose
objective needs it (EVOL-RL's novelty rewards); an engine runs the source once per rollout batch, right after the
task's verifier has scored the responses and before anything reads the rewards.

- ``verifier``: the task's checker (or ``data.reward_fn``), as scored — the default;
- ``majority_vote``: label-free TTRL pseudo-labels (Zuo et al., arXiv 2504.16084): reward 1 when a response's answer
  is equivalent to its group's most frequent answer, else 0; the pseudo-label is also the correctness that
  correctness-reading components see;
- ``evol_rl``: EVOL-RL's label-free "majority selects, novelty varies" rewards (arXiv 2509.15194).

Label-free sources never change what the trainer reports as ``reward/accuracy``: that stays the verifier's verdict.
A source is a small class with ``rewrite(scored) -> (rewards, correct)``; adding one is one class and one registry
line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch

from ..registry import Registry
from .equivalence import cluster_answers, load_embedder
from .rewards import extract_answer

__all__ = ["REWARD_SOURCES", "RewardSource", "ScoredRollout", "answer_clusters", "evol_rl_rewards",
           "majority_vote_rewards"]


@dataclass
class ScoredRollout:
    """What a reward source reads: the responses of one rollout batch, as the verifier scored them."""

    texts: list[str]
    rewards: torch.Tensor  # (B,) the verifier's rewards
    correct: list[bool]  # the verifier's verdicts
    group_ids: torch.Tensor  # (B,) responses to one prompt share an id
    _answers: Optional[list[Optional[str]]] = None

    def answers(self) -> list[Optional[str]]:
        """Each response's final answer (``\\boxed{}``, else the last number), cached."""
        if self._answers is None:
            self._answers = [extract_answer(t) for t in self.texts]
        return self._answers


class RewardSource:
    """Base: ``rewrite(scored) -> (rewards (B,), correct list)``."""

    name: ClassVar[str] = ""
    label_free: ClassVar[bool] = False

    def rewrite(self, scored: ScoredRollout) -> tuple[torch.Tensor, list[bool]]:
        raise NotImplementedError


def _stamp(name: str, cls: Any) -> None:
    cls.name = name


REWARD_SOURCES: Registry[type[RewardSource]] = Registry("reward source", on_register=_stamp)


@REWARD_SOURCES.register("verifier")
class Verifier(RewardSource):
    """The task's verifier (or ``data.reward_fn``): rewards and correctness as scored."""

    def rewrite(self, scored: ScoredRollout) -> tuple[torch.Tensor, list[bool]]:
        return scored.rewards, scored.correct


@REWARD_SOURCES.register("majority_vote")
class MajorityVote(RewardSource):
    """TTRL label-free rewards (arXiv 2504.16084): :func:`majority_vote_rewards` of each group's answers; the
    pseudo-labels replace the correctness too (a new list: the verifier's own verdicts are left alone)."""

    label_free = True

    def rewrite(self, scored: ScoredRollout) -> tuple[torch.Tensor, list[bool]]:
        r = majority_vote_rewards(scored.answers(), scored.group_ids)
        return r.to(scored.rewards.dtype), [bool(x) for x in r.tolist()]


@REWARD_SOURCES.register("evol_rl")
class EvolRLNovelty(RewardSource):
    """EVOL-RL (arXiv 2509.15194): :func:`evol_rl_rewards` — majority selects, novelty varies. The novelty embeds the
    response after ``</think>``. Correctness (for components that read it) stays the verifier's."""

    label_free = True

    def rewrite(self, scored: ScoredRollout) -> tuple[torch.Tensor, list[bool]]:
        texts = [t.split("</think>", 1)[-1] for t in scored.texts]
        return evol_rl_rewards(scored.answers(), texts, scored.group_ids).to(scored.rewards.dtype), scored.correct


# ============================================================================================ answers
def answer_clusters(answers: Sequence[Optional[str]], group_ids: torch.Tensor, equivalence: str = "math",
                    embedder: Optional[Callable[[Sequence[str]], Any]] = None) -> torch.Tensor:
    """(B,) cluster id of each answer within its group (0, 1, ... by first appearance), −1 for a missing answer."""
    B = len(answers)
    if group_ids.shape[0] != B:
        raise ValueError(f"answer_clusters: {B} answers but {group_ids.shape[0]} group ids")
    out = torch.full((B,), -1, dtype=torch.long)
    for g in torch.unique(group_ids).tolist():
        idx = [i for i in range(B) if int(group_ids[i]) == g]
        present = [i for i in idx if answers[i] is not None and str(answers[i]).strip()]
        if not present:
            continue
        kw = {"embedder": embedder} if equivalence == "embedding" and embedder is not None else {}
        ids = cluster_answers([answers[i] for i in present], mode=equivalence, **kw)
        for i, c in zip(present, ids):
            out[i] = c
    return out


def majority_vote_rewards(answers: Sequence[Optional[str]], group_ids: torch.Tensor, equivalence: str = "math",
                          embedder: Optional[Callable[[Sequence[str]], Any]] = None) -> torch.Tensor:
    """(B,) TTRL-style label-free rewards: 1 when a response's answer is equivalent to the majority answer of its
    group (the largest cluster of present answers; ties go to the cluster seen first), else 0; a group with no
    answer at all gets 0 everywhere."""
    cluster = answer_clusters(answers, group_ids, equivalence, embedder)
    rewards = torch.zeros(len(answers))
    for g in torch.unique(group_ids).tolist():
        idx = torch.nonzero(group_ids == g).flatten()
        c = cluster[idx]
        present = c[c >= 0]
        if present.numel() == 0:
            continue
        counts = torch.bincount(present)
        top = int(counts.max())
        majority = next(int(x) for x in present.tolist() if int(counts[x]) == top)  # first seen among the tied
        rewards[idx] = (c == majority).float()
    return rewards


# ============================================================================================ EVOL-RL
def evol_rl_rewards(answers: "list[Optional[str]]", texts: "list[str]", group_ids: torch.Tensor, *,
                    embed: Optional[Any] = None, equivalence: str = "math") -> torch.Tensor:
    """EVOL-RL's label-free rewards (Zhou et al., 2509.15194; ``reward_manager/semantic_novelty.py``), (B,):
    "majority selects, novelty varies".

    Per prompt (``group_ids``): the answers are clustered (``equivalence.cluster_answers``, mode
    ``equivalence``) and the largest cluster of present answers is the majority (ties: first seen). With s_ij the
    cosine similarity of the embedded ``texts`` (the response after ``</think>``),
        ν_i = 1 − [0.5·mean_{j ∈ set(i), j≠i} s_ij + 0.5·max_{j≠i} s_ij],     set(i) = majority or non-majority,
    min–max normalised within each set to ν̂ ∈ [0, 1] (a set whose ν are all equal gets ½, a singleton 1), and
        r_i = 0.5 + 0.5·ν̂_i (majority),   r_i = −1 + 0.5·ν̂_i (non-majority),   r_i = −1 (no answer).
    ``embed``: strings → (n, d) tensor (default: ``equivalence.load_embedder()``, all-MiniLM-L6-v2; the paper uses
    Qwen3-Embedding-4B served by vLLM).
    """
    B = len(answers)
    if len(texts) != B or group_ids.shape[0] != B:
        raise ValueError(f"evol_rl_rewards: {B} answers, {len(texts)} texts and {group_ids.shape[0]} group ids")
    embed = embed if embed is not None else load_embedder()
    rewards = torch.full((B,), -1.0)
    for g in torch.unique(group_ids).tolist():
        idx = [i for i in range(B) if int(group_ids[i]) == g]
        present = [i for i in idx if answers[i] is not None and str(answers[i]).strip()]
        if not present:
            continue
        ids = cluster_answers([answers[i] for i in present], mode=equivalence)
        counts: dict[int, int] = {}
        for c in ids:
            counts[c] = counts.get(c, 0) + 1
        top = max(counts.values())
        major_id = next(c for c in ids if counts[c] == top)
        in_major = {i: c == major_id for i, c in zip(present, ids)}
        e = torch.nn.functional.normalize(torch.as_tensor(embed([texts[i] for i in present])).float(), dim=-1)
        sim = e @ e.T
        n = len(present)
        nu = torch.zeros(n)
        for a in range(n):
            others = [b for b in range(n) if b != a]
            same = [b for b in others if in_major[present[b]] == in_major[present[a]]]
            s_max = float(sim[a, others].max()) if others else 0.0
            s_mean = float(sim[a, same].mean()) if same else 0.0
            nu[a] = 1.0 - (0.5 * s_mean + 0.5 * s_max)
        for major in (True, False):
            members = [a for a in range(n) if in_major[present[a]] == major]
            if not members:
                continue
            v = nu[members]
            span = float(v.max() - v.min())
            hat = torch.ones_like(v) if len(members) == 1 else (
                torch.full_like(v, 0.5) if span <= 1e-12 else (v - v.min()) / span)
            base = 0.5 if major else -1.0
            for a, h in zip(members, hat.tolist()):
                rewards[present[a]] = base + 0.5 * h
    return rewards
