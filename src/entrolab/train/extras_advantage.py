"""Engine extras of the advantage knob (issue 6) and label-free rewards.

Rollout-extras providers (computed once per rollout batch, no gradient; see ``extras.py``) for the components of
``knobs/advantage/entropy.py``:

- ``answer_cluster`` (B,) int64: each response's final answer (``RolloutContext.answers``) clustered by meaning
  within its group by ``equivalence.cluster_answers`` (the one equivalence implementation: math-verify, or the
  packaged MiniLM embedder with ``equivalence="embedding"``), numbered by first appearance; −1 for no answer;
- ``correct`` (B,) float 0/1: the verifier's verdict — or the majority-vote pseudo-label under a label-free reward
  source, which runs first;
- ``phase`` (B, T) int64: 1 thinking, 2 answer, 0 the marker tokens and padding (``phase_ids``);
- ``step_id`` (B, T) int64: 0, 1, 2, ... the delimiter-split step of each token (``step_ids``);
- ``self_certainty`` and ``sampled_logit`` (B, T): logsumexp(z) − mean_v z and z of the sampled token, from the
  rollout policy's temperature-scaled logits (``RolloutContext.old_logits``, a chunk of rows at a time).

Label-free rewards (TTRL-style, Zuo et al. 2504.16084): ``majority_vote_rewards`` gives each response reward 1 when its
answer is equivalent to its group's most frequent answer and 0 otherwise (no answer: 0). The ``majority_vote_reward``
provider rewrites ``ctx.rewards`` (and ``ctx.correct``) with them; ``entrolab train`` runs it, before every other
provider, for any method when ``data.reward_source=majority_vote``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from .config import REWARD_SOURCES
from .extras import (
    ROLLOUT_EXTRAS,
    RolloutContext,
    component_needing,
    first_prefix_reaching,
)

LABEL_FREE_EXTRA = {"majority_vote": "majority_vote_reward"}


# ============================================================================================ answers
def answer_clusters(answers: Sequence[Optional[str]], group_ids: torch.Tensor, equivalence: str = "math",
                    embedder: Optional[Callable[[Sequence[str]], Any]] = None) -> torch.Tensor:
    """(B,) cluster id of each answer within its group (0, 1, ... by first appearance), −1 for a missing answer."""
    from ..env.equivalence import cluster_answers

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


@ROLLOUT_EXTRAS.register("majority_vote_reward")
def _majority_vote_reward(ctx: RolloutContext) -> torch.Tensor:
    """Label-free rewards: replace the verifier's rewards and correctness by majority-vote pseudo-labels (the
    verifier's own verdict still gives the trainer's ``reward/accuracy``). Returns the pseudo-labels (B,)."""
    r = majority_vote_rewards(ctx.answers(), ctx.batch.group_ids)
    ctx.rewards = r.to(ctx.rewards.dtype)
    ctx.correct = [bool(x) for x in r.tolist()]  # a new list: the trainer's own list is left alone
    return r


@ROLLOUT_EXTRAS.register("answer_cluster")
def _answer_cluster(ctx: RolloutContext) -> torch.Tensor:
    """(B,) answer clusters within each group (EMPO, SEED-GRPO), with the component's ``equivalence`` mode."""
    mode = str(getattr(component_needing(ctx.objective, "answer_cluster"), "equivalence", "math"))
    return answer_clusters(ctx.answers(), ctx.batch.group_ids, mode)


@ROLLOUT_EXTRAS.register("correct")
def _correct(ctx: RolloutContext) -> torch.Tensor:
    """(B,) 1.0 for a correct response (verifier, or majority-vote pseudo-label), else 0.0."""
    return torch.tensor([float(bool(c)) for c in ctx.correct], dtype=torch.float32)


# ============================================================================================ token spans
def _span(mask_row: torch.Tensor) -> int:
    """Length of a response up to its last valid token (a loss mask may have holes, e.g. tool observations)."""
    valid = torch.nonzero(mask_row > 0).flatten()
    return int(valid.max()) + 1 if valid.numel() else 0


def phase_ids(tokenizer: Any, response_ids: torch.Tensor, mask: torch.Tensor, markers: Sequence[str]) -> torch.Tensor:
    """(B, T) PEAR phases: 1 before the first occurrence of any of ``markers`` (thinking), 0 on the tokens that hold
    the marker, 2 after it (answer); a response without a marker is all thinking. 0 where ``mask`` is 0 (padding,
    tokens the loss does not train)."""
    B, T = response_ids.shape
    out = torch.zeros((B, T), dtype=torch.long)
    for i in range(B):
        L = _span(mask[i])
        out[i, :L] = 1
        ids = response_ids[i, :L].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=False)
        hits = [(text.find(m), m) for m in markers if m in text]
        if not hits:
            continue
        pos, marker = min(hits)
        start = first_prefix_reaching(tokenizer, ids, pos + 1) - 1    # the token holding the marker's first char
        end = first_prefix_reaching(tokenizer, ids, pos + len(marker))  # one past the token completing it
        out[i, start:end] = 0
        out[i, end:L] = 2
    return out * (mask > 0)


def step_ids(tokenizer: Any, response_ids: torch.Tensor, mask: torch.Tensor, delimiter: str) -> torch.Tensor:
    """(B, T) step index of each token: a new step starts at the token after the one completing each occurrence of
    ``delimiter`` in the decoded response (non-overlapping; a delimiter inside a token splits after that token).
    The whole response up to its last valid token is decoded; ids past it are 0."""
    if not delimiter:
        raise ValueError("step_ids: the delimiter must be a non-empty string")
    B, T = response_ids.shape
    out = torch.zeros((B, T), dtype=torch.long)
    for i in range(B):
        L = _span(mask[i])
        ids = response_ids[i, :L].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=False)
        starts = torch.zeros(L, dtype=torch.long)
        pos = text.find(delimiter)
        while pos >= 0:
            k = first_prefix_reaching(tokenizer, ids, pos + len(delimiter))
            if k < L:
                starts[k] = 1
            pos = text.find(delimiter, pos + len(delimiter))
        out[i, :L] = torch.cumsum(starts, 0)
    return out


@ROLLOUT_EXTRAS.register("phase")
def _phase(ctx: RolloutContext) -> torch.Tensor:
    """(B, T) thinking/answer phases at the component's ``phase_marker`` ('|'-separated markers; PEAR)."""
    from ..knobs.advantage.entropy import DEFAULT_PHASE_MARKER

    markers = str(getattr(component_needing(ctx.objective, "phase"), "phase_marker", DEFAULT_PHASE_MARKER)).split("|")
    b = ctx.batch
    return phase_ids(ctx.tokenizer, b.response_ids, b.mask, markers)


@ROLLOUT_EXTRAS.register("step_id")
def _step_id(ctx: RolloutContext) -> torch.Tensor:
    """(B, T) steps split at the component's ``step_delimiter`` (EMPG, ACPO; DART-GUI reads them too)."""
    from ..knobs.advantage.entropy import DEFAULT_STEP_DELIMITER

    delimiter = str(getattr(component_needing(ctx.objective, "step_id"), "step_delimiter", DEFAULT_STEP_DELIMITER))
    b = ctx.batch
    return step_ids(ctx.tokenizer, b.response_ids, b.mask, delimiter)


# ============================================================================================ logits
def _certainty_and_logit(ctx: RolloutContext) -> None:
    if "self_certainty" in ctx.cache:
        return
    from ..knobs.advantage.entropy import self_certainty_from_logits

    b = ctx.batch
    cert, logit = [], []
    for rows, z in ctx.old_logits():
        z = z.float()
        cert.append(self_certainty_from_logits(z))
        logit.append(z.gather(-1, b.response_ids[rows, :, None].long().to(z.device)).squeeze(-1))
    ctx.cache["self_certainty"] = torch.cat(cert).cpu() * b.mask
    ctx.cache["sampled_logit"] = torch.cat(logit).cpu() * b.mask


@ROLLOUT_EXTRAS.register("self_certainty")
def _self_certainty(ctx: RolloutContext) -> torch.Tensor:
    """(B, T) token self-certainty logsumexp(z) − mean_v z of the rollout policy (UCAS)."""
    _certainty_and_logit(ctx)
    return ctx.cache["self_certainty"]


@ROLLOUT_EXTRAS.register("sampled_logit")
def _sampled_logit(ctx: RolloutContext) -> torch.Tensor:
    """(B, T) the rollout policy's (temperature-scaled) logit of each sampled token (UCAS)."""
    _certainty_and_logit(ctx)
    return ctx.cache["sampled_logit"]


def label_free_extras(reward_source: str) -> list[str]:
    """The provider(s) that a ``data.reward_source`` runs before all others (none for ``verifier``)."""
    if reward_source not in REWARD_SOURCES:
        raise ValueError(f"reward source {reward_source!r} is unknown; choose one of {', '.join(REWARD_SOURCES)}")
    return [LABEL_FREE_EXTRA[reward_source]] if reward_source in LABEL_FREE_EXTRA else []
