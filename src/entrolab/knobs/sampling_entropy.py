"""Entropy-guided sampling strategies (issue 9): a controlled temperature, branching / tree rollouts, expert-guided
rollouts and a semantic-entropy curriculum. Each uses the sampling hooks of ``knobs/sampling.py`` and the branching
engine of ``train/branching.py`` (its docstring is the contract: rows, ``prompt_index``, ``group_ids``, ``trainable``,
tree extras). The advantages that read their extras live in ``knobs/rollout_advantage.py``.

Where rollouts fire (tokens positions are 0-based indices into a response):

- ``aepo_temperature`` (AEPO-Wang): every step, T = T_high if H_prev ≤ H_target else T_low for the extra rollouts;
- ``eptree`` (TreeRL): at the top-N tokens of each tree by surprisal −log π(o_t), T branches each, L iterations;
- ``fr3e``: at the top-K entropy tokens of a base trajectory, M continuations each;
- ``etmr`` (ETTRL): at the top-N entropy tokens of each of M sampled trees, B branches each;
- ``edr`` (ADR): right after a hard-mode marker, with probability clip(α + ΔH, 0, 1);
- ``cure``: at one token drawn uniformly from the top-k entropy tokens of each response, n2 continuations;
- ``mentor``: mixed rollouts sample from (1 − w_t)π_θ + w_t π*, w_t = min(1, H_t/γ_p);
- ``semantic_entropy_curriculum`` (SENT): prompts served from low to high semantic entropy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch

from ..batch import RolloutBatch
from .advantage import group_statistics
from .base import ConfigError, check_range
from .sampling import SAMPLINGS, SamplingStrategy


# ----------------------------------------------------------------------------------------------------------- helpers
def top_positions(scores: Sequence[float], k: int, allowed: Optional[Sequence[bool]] = None) -> list[int]:
    """Indices of the ``k`` largest ``scores`` (ties: the earlier position), among ``allowed`` ones."""
    idx = [i for i in range(len(scores)) if (allowed is None or allowed[i]) and math.isfinite(scores[i])]
    return sorted(idx, key=lambda i: (-scores[i], i))[:max(0, k)]


def select_rows(gen: Any, index: Sequence[int]) -> Any:
    """The rows ``index`` of a ``train.rollout.Generation`` (optional fields and extras sliced along)."""
    idx = torch.as_tensor(list(index), dtype=torch.long)
    out = dataclasses.replace(
        gen, input_ids=gen.input_ids[idx], attention_mask=gen.attention_mask[idx], response_ids=gen.response_ids[idx],
        response_mask=gen.response_mask[idx], truncated=gen.truncated[idx],
        trainable=None if gen.trainable is None else gen.trainable[idx],
        prompt_index=None if gen.prompt_index is None else gen.prompt_index[idx],
        group_ids=None if gen.group_ids is None else gen.group_ids[idx],
        extras={k: v[idx] for k, v in gen.extras.items()}, metrics=dict(gen.metrics))
    return out


def _uniform(generator: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=generator))


def _tree_metrics(tree: Any, traces: Sequence[Any], prompts: int) -> dict[str, float]:
    return {"sampling/rows": float(len(traces)), "sampling/rows_per_prompt": len(traces) / max(1, prompts),
            "sampling/forked_rows": float(sum(t.parent is not None for t in traces)),
            "sampling/generated_tokens": float(tree.tokens_spent())}


def _owned(trace: Any) -> range:
    """Token positions a trace generated itself (from its fork on): candidates for new forks, each counted once."""
    return range(int(trace.fork_step or 0) if trace.parent is not None else 0, trace.num_tokens)


# ----------------------------------------------------------------------------------------------------- AEPO-Wang
@SAMPLINGS.register("aepo_temperature")
@dataclass
class AEPOTemperature(SamplingStrategy):
    """AEPO (Wang et al., arXiv 2510.08141; 597358816/AEPO ``ray_trainer.py``): temperature as a controlled quantity.

    Each step: n rollouts per prompt at the rollout temperature; then the first ``prompt_fraction`` of the prompts
    are sampled n more times at

        T = T_high (1.2)  if H_prev ≤ H_target (0.5)  else  T_low (0.8),

    H_prev the mean token entropy of the previous step; those with GRPO advantage > 0.05 in their own group become
    REINFORCE samples (advantage 1, one-sided) that replace the first S rows of the batch, S = ``reinforce_samples``
    (60) when H_prev ≤ H_target else S/2. The main rows keep the GRPO advantage of their full group (computed before
    the replacement, as the released code does). ``extras``: ``reinforce`` (B,) 0/1 and ``seq_advantage`` (B,).
    State (checkpointed): H_prev and the last temperature. H_prev is unknown before the first step; it counts as
    ≤ H_target (T_high first). At small batches S is capped by the batch size (the paper's S = 60 is about 2% of a
    2,560-row batch: scale ``reinforce_samples`` with the batch).
    """

    target_entropy: float = 0.5
    temperature_high: float = 1.2
    temperature_low: float = 0.8
    reinforce_samples: int = 60
    prompt_fraction: float = 0.25
    positive_threshold: float = 0.05
    h_prev: Optional[float] = field(default=None, init=False)
    temperature: Optional[float] = field(default=None, init=False)

    def __post_init__(self) -> None:
        for k in ("target_entropy", "temperature_high", "temperature_low"):
            check_range("aepo_temperature", k, getattr(self, k), lo=0.0, lo_open=k != "target_entropy")
        check_range("aepo_temperature", "prompt_fraction", self.prompt_fraction, lo=0.0, hi=1.0, lo_open=True)
        check_range("aepo_temperature", "reinforce_samples", self.reinforce_samples, lo=0)

    def low_entropy(self) -> bool:
        return self.h_prev is None or self.h_prev <= self.target_entropy

    def controlled_temperature(self) -> float:
        """The bang-bang rule: T_high while entropy is at or below the target, T_low above it."""
        return self.temperature_high if self.low_entropy() else self.temperature_low

    def rollout(self, engine: Any, prompts: list[str], examples: list, n: int) -> Any:
        from ..generation.branching import stack_generations

        main = engine.generate(prompts, n)
        T = self.controlled_temperature()
        self.temperature = T
        k = max(1, math.ceil(len(prompts) * self.prompt_fraction))
        extra = engine.generate(prompts[:k], n, temperature=T)
        r_main, _ = engine.score(engine.decode(main), [examples[i] for i in main.prompt_index.tolist()])
        r_extra, _ = engine.score(engine.decode(extra), [examples[i] for i in extra.prompt_index.tolist()])
        adv_main = grpo_sequence_advantage(r_main, main.prompt_index)
        adv_extra = grpo_sequence_advantage(r_extra, extra.prompt_index)
        positives = [i for i in range(len(r_extra)) if float(adv_extra[i]) > self.positive_threshold]
        S = self.reinforce_samples if self.low_entropy() else self.reinforce_samples // 2
        take = positives[:min(S, len(positives), main.input_ids.shape[0])]
        B = main.input_ids.shape[0]
        rest = list(range(len(take), B))
        parts = []
        if take:
            g = select_rows(extra, take)
            g.group_ids = torch.arange(len(prompts), len(prompts) + len(take))  # one-sided: no group comparison
            g.extras = {"reinforce": torch.ones(len(take)), "seq_advantage": torch.ones(len(take))}
            parts.append(g)
        if rest:
            g = select_rows(main, rest)
            g.group_ids = g.prompt_index.clone()
            g.extras = {"reinforce": torch.zeros(len(rest)), "seq_advantage": adv_main[rest].float()}
            parts.append(g)
        out = stack_generations(parts, engine.tokenizer.pad_token_id)
        out.metrics = {"sampling/temperature": T, "sampling/reinforce_rows": float(len(take)),
                       "sampling/reinforce_candidates": float(len(positives)),
                       "sampling/generated_tokens": float(main.response_mask.sum() + extra.response_mask.sum())}
        if self.h_prev is not None:
            out.metrics["sampling/entropy_prev"] = self.h_prev
        return out

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        h = metrics.get("entropy/mean")
        if h is not None and math.isfinite(float(h)):
            self.h_prev = float(h)

    def state_dict(self) -> dict[str, Any]:
        return {"h_prev": self.h_prev, "temperature": self.temperature}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state) - {"h_prev", "temperature"})
        if unknown:
            raise ConfigError(f"aepo_temperature state has unknown entries {unknown}")
        self.h_prev = state.get("h_prev")
        self.temperature = state.get("temperature")


def grpo_sequence_advantage(rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(R − mean_G R)/(std_G R + ε) per row, 0 for groups of one (as the ``grpo`` estimator)."""
    mean, std, count = group_statistics(rewards.float(), groups)
    adv = (rewards.float() - mean) / (std + eps)
    return torch.where(count > 1, adv, torch.zeros_like(adv))


# ------------------------------------------------------------------------------------------------ tree rollouts
def _tree_rollout(engine: Any, prompts: list[str], roots_per_prompt: int, forks: int, branches: int,
                  iterations: int, score: str) -> tuple[Any, list]:
    """M roots per prompt; then, ``iterations`` times, in each tree fork ``branches`` continuations at the
    ``forks`` highest-scoring tokens not forked yet (``score``: "surprisal" −log π(o_t) or "entropy" H_t)."""
    tree = engine.branching()
    traces = tree.sample(prompts, roots_per_prompt, groups=list(range(len(prompts))))
    root_of = {t.id: t.id for t in traces}
    forked: set[tuple[int, int]] = set()
    for _ in range(iterations):
        requests = []
        for root in sorted(set(root_of.values())):
            members = [t for t in traces if root_of[t.id] == root]
            cands = []
            for t in members:
                vals = [-lp for lp in t.logprobs] if score == "surprisal" else list(t.entropies)
                cands += [(vals[j], t, j) for j in _owned(t) if (t.id, j) not in forked]
            cands.sort(key=lambda c: (-c[0], c[1].id, c[2]))
            for _, t, j in cands[:forks]:
                forked.add((t.id, j))
                requests.append((t, j, branches))
        new = tree.fork(requests)
        for t in new:
            root_of[t.id] = root_of[t.parent]
        traces += new
    return tree, traces


@SAMPLINGS.register("eptree")
@dataclass
class EPTree(SamplingStrategy):
    """EPTree rollouts of TreeRL (Hou et al., arXiv 2506.11902; THUDM/TreeRL ``entropy_chain_local_manager.py``).

    Sample M = ``trees`` full responses per prompt; then ``iterations`` (L) times, in each tree, score every token the
    tree generated by the sampled-token surprisal s_t = −log π(o_t | ·) (the code's "cross-entropy", not the full
    entropy), take the top N = ``forks`` and fork T = ``branches`` continuations from each prefix o_<t (KV cache
    re-used), generated to completion. Leaves per prompt: M(1 + L·N·T) for L = 1 (6·(1 + 2·2) = 30 at the
    defaults m=6, n=2, l=1, t=2 of ``treerl-qw14b.sh``). Rows are the leaves (full root-to-leaf responses), grouped by
    prompt, with the tree extras for ``treerl`` advantages. The optional diverse selection (upsampling) and the
    repetition masks of the code are not implemented.
    """

    trees: int = 6
    forks: int = 2
    iterations: int = 1
    branches: int = 2
    score: str = "surprisal"

    def __post_init__(self) -> None:
        for k in ("trees", "branches"):
            check_range("eptree", k, getattr(self, k), lo=1)
        for k in ("forks", "iterations"):
            check_range("eptree", k, getattr(self, k), lo=0)
        if self.score not in ("surprisal", "entropy"):
            raise ConfigError(f"eptree.score = {self.score!r}; choose surprisal or entropy")

    def rollout(self, engine: Any, prompts: list[str], examples: list, n: int) -> Any:
        tree, traces = _tree_rollout(engine, prompts, self.trees, self.forks, self.branches, self.iterations,
                                     self.score)
        gen = tree.pack(traces, [t.group for t in traces])
        gen.metrics = _tree_metrics(tree, traces, len(prompts))
        return gen


@SAMPLINGS.register("etmr")
@dataclass
class ETMR(SamplingStrategy):
    """ETMR, entropy-fork tree majority rollout of ETTRL (Liu et al., arXiv 2508.11356).

    M = ``trees`` trees per prompt (None = ``rollout.n``), each started from one full sample; the top N = ``forks``
    positions by token entropy H_t of each sample are forks; at each, B = ``branches`` continuations to completion.
    Rollouts per prompt R_tree = M(1 + B·N) (N = 3, B = 2 typical); all leaves form the prompt's group (they vote
    for the TTRL pseudo-label with ``data.reward_source=majority_vote``).
    """

    trees: Optional[int] = None
    forks: int = 3
    branches: int = 2

    def __post_init__(self) -> None:
        if self.trees is not None:
            check_range("etmr", "trees", self.trees, lo=1)
        check_range("etmr", "forks", self.forks, lo=0)
        check_range("etmr", "branches", self.branches, lo=1)

    def rollout(self, engine: Any, prompts: list[str], examples: list, n: int) -> Any:
        tree, traces = _tree_rollout(engine, prompts, self.trees or n, self.forks, self.branches, 1, "entropy")
        gen = tree.pack(traces, [t.group for t in traces])
        gen.metrics = _tree_metrics(tree, traces, len(prompts))
        return gen


@SAMPLINGS.register("fr3e")
@dataclass
class FR3ERollout(SamplingStrategy):
    """FR3E first-return, entropy-eliciting explore (Zheng et al., arXiv 2507.07017).

    First return: n base trajectories per prompt (their own GRPO group). From the first ``bases`` of them, the K =
    ``states`` highest-entropy positions t_1 < … < t_K give intermediate states S_j = (q, o_<t_j). Entropy-eliciting
    explore: M = ``per_state`` continuations from each S_j (KV cache re-used); each state's M rollouts are one group,
    whose mean reward is V(S_j) (``fr3e`` advantages). Groups whose rewards all tie are dropped (``keep``: the paper's
    rejection sampling). K and M are not reported in the paper: 2 and 4 here are readings.
    ``extras``: ``state_index`` (B,) j (0 for base rows) and ``state_base`` (B,) the base trajectory's trace id.
    """

    states: int = 2
    per_state: int = 4
    bases: int = 1

    def __post_init__(self) -> None:
        check_range("fr3e", "states", self.states, lo=0)
        check_range("fr3e", "per_state", self.per_state, lo=1)
        check_range("fr3e", "bases", self.bases, lo=0)

    def keep(self, batch: RolloutBatch) -> torch.Tensor:
        _, std, count = group_statistics(batch.rewards, batch.group_ids)
        return (std > 0) & (count > 1)

    def rollout(self, engine: Any, prompts: list[str], examples: list, n: int) -> Any:
        tree = engine.branching()
        roots = tree.sample(prompts, n, groups=list(range(len(prompts))))
        requests, meta = [], []
        for p in range(len(prompts)):
            for base in [t for t in roots if t.group == p][:self.bases]:
                pos = sorted(top_positions(base.entropies, self.states))
                for j, t in enumerate(pos, start=1):
                    requests.append((base, t, self.per_state))
                    meta.append((base.id, j))
        kids = tree.fork(requests)
        # Decoder.resume creates the children of request i consecutively, in request order.
        info = {}
        it = iter(kids)
        next_group = len(prompts)
        for (base_id, j), (_, _, m) in zip(meta, requests):
            for _ in range(m):
                info[next(it).id] = (base_id, j, next_group)
            next_group += 1
        traces = roots + kids
        gen = tree.pack(traces, [t.group for t in traces],
                        group_ids=[t.group if t.id not in info else info[t.id][2] for t in traces])
        gen.extras["state_index"] = torch.tensor([info[t.id][1] if t.id in info else 0 for t in traces])
        gen.extras["state_base"] = torch.tensor([info[t.id][0] if t.id in info else t.id for t in traces])
        gen.metrics = _tree_metrics(tree, traces, len(prompts))
        return gen


@SAMPLINGS.register("cure")
@dataclass
class CURERollout(SamplingStrategy):
    """CURE stage 1, critical-token re-concatenation (Li et al., arXiv 2508.11016; bytedance/CURE
    ``dapo_ray_trainer.py``, ``run_cure_stage_1.sh``).

    Sample n1 responses per prompt (None = ``rollout.n``; 4 in the paper). For each, sort its tokens by full-vocab
    entropy, keep the first ``critical_top_k`` (20) valid ones — not special tokens, and decoding to at least
    ``min_chars`` (2) non-space characters (the code skips those with ≤ 1) — and draw one uniformly: the critical
    index k. From q ⊕ o_<k sample n2 (3) continuations (KV cache re-used). The group = n1 originals + n1·n2
    continuations (16); the prefix belongs to the prompt, so only continuation tokens are trained (``trainable``).
    A response with no valid token is not re-concatenated. DAPO's dynamic sampling (``dynamic_sampling``) drops
    groups whose rewards all tie and regenerates (``optim.max_gen_batches``). Stage 2 is plain DAPO from the
    stage-1 checkpoint (``--method dapo``).
    """

    n1: Optional[int] = None
    n2: int = 3
    critical_top_k: int = 20
    min_chars: int = 2
    dynamic_sampling: bool = True

    def __post_init__(self) -> None:
        if self.n1 is not None:
            check_range("cure", "n1", self.n1, lo=1)
        check_range("cure", "n2", self.n2, lo=0)
        check_range("cure", "critical_top_k", self.critical_top_k, lo=1)

    @property
    def refill(self) -> bool:  # type: ignore[override]
        return self.dynamic_sampling

    def keep(self, batch: RolloutBatch) -> torch.Tensor:
        if not self.dynamic_sampling:
            return super().keep(batch)
        _, std, count = group_statistics(batch.rewards, batch.group_ids)
        return (std > 0) & (count > 1)

    def critical_index(self, trace: Any, tokenizer: Any, generator: Optional[torch.Generator]) -> Optional[int]:
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        valid = []
        for j in sorted(range(trace.num_tokens), key=lambda j: (-trace.entropies[j], j)):
            tok = trace.token_ids[j]
            if tok in special:
                continue
            text = tokenizer.decode([tok])
            if len(text.replace(" ", "").strip()) < self.min_chars:
                continue
            valid.append(j)
            if len(valid) == self.critical_top_k:
                break
        if not valid:
            return None
        return valid[int(torch.randint(len(valid), (), generator=generator))]

    def rollout(self, engine: Any, prompts: list[str], examples: list, n: int) -> Any:
        tree = engine.branching()
        roots = tree.sample(prompts, self.n1 or n, groups=list(range(len(prompts))))
        requests = []
        for t in roots:
            k = self.critical_index(t, engine.tokenizer, engine.generator)
            if k is not None and self.n2 > 0:
                requests.append((t, k, self.n2))
        kids = tree.fork(requests)
        traces = roots + kids
        trainable = [[0.0 if (t.parent is not None and j < t.fork_step) else 1.0 for j in range(t.num_tokens)]
                     for t in traces]
        gen = tree.pack(traces, [t.group for t in traces], trainable=trainable)
        gen.metrics = _tree_metrics(tree, traces, len(prompts))
        return gen


# ------------------------------------------------------------------------------------------------------------- ADR
@SAMPLINGS.register("edr")
@dataclass
class EntropyDynamicRollout(SamplingStrategy):
    """EDR, the entropy-guided dynamic branch rollout of ADR (Adaptive Dual Reasoner, arXiv 2510.10207).

    During decoding, at each easy→hard transition — the step right after a response completes one of ``markers``
    (``|``-separated; ADR's ``<hard>`` unit tag and its reflection keywords) — the sequence branches into ``branches`` sequences with
    probability SP = clip(α + ΔH, 0, 1), α = 0.5, where ΔH = (H_t − H̄_easy) / ln|V|: the entropy of the step after
    the marker minus the mean entropy of the tokens since the previous transition, normalised by the maximum entropy
    (the paper's normalisation was not recovered; this is a reading). Branches continue independently (children
    sample their own tokens from the shared KV cache). At most ``max_rows`` rows per prompt (None = 2n).
    """

    alpha: float = 0.5
    branches: int = 2
    markers: str = "<hard>|Wait|However|Alternatively"
    max_rows: Optional[int] = None

    def __post_init__(self) -> None:
        check_range("edr", "branches", self.branches, lo=2)
        if not all(self.marker_list()):
            raise ConfigError(f"edr.markers = {self.markers!r}: give non-empty markers separated by '|', "
                              "e.g. '<hard>|Wait'")

    def marker_list(self) -> list[str]:
        return self.markers.split("|")

    def hook(self, engine: Any, budget: dict[int, int]) -> Any:
        from ..generation.decoder import top_p_mask

        markers = self.marker_list()
        width = max(len(m) for m in markers) + 8
        log_v: Optional[float] = None

        def step(view: Any) -> None:
            nonlocal log_v
            if log_v is None:
                log_v = math.log(view.logits.shape[-1])
            for r, tr in enumerate(view.traces):
                if not tr.token_ids:
                    continue
                tail = view.text(r, last=width)
                if not any(tail.endswith(m) for m in markers):
                    continue
                last = tr.extra.get("edr_last", 0)
                easy = tr.entropies[last:]
                tr.extra["edr_last"] = tr.num_tokens
                h_t = float(view.entropy[r])
                dh = (h_t - (sum(easy) / len(easy) if easy else h_t)) / log_v
                sp = min(1.0, max(0.0, self.alpha + dh))
                tr.extra.setdefault("edr_sp", []).append(sp)
                if budget.get(tr.group, 0) < self.branches - 1 or _uniform(engine.generator) >= sp:
                    continue
                budget[tr.group] -= self.branches - 1
                probs = view.logprobs[r].exp()
                if engine.top_p < 1.0:
                    probs = torch.where(top_p_mask(view.logprobs[r], engine.top_p), probs, torch.zeros_like(probs))
                toks = torch.multinomial(probs.unsqueeze(0).to("cpu"), self.branches, replacement=True,
                                         generator=engine.generator)[0]
                view.fork(r, toks.tolist())

        return step

    def rollout(self, engine: Any, prompts: list[str], examples: list, n: int) -> Any:
        tree = engine.branching()
        cap = self.max_rows or 2 * n
        budget = {p: cap - n for p in range(len(prompts))}
        traces = tree.sample(prompts, n, groups=list(range(len(prompts))), hook=self.hook(engine, budget))
        gen = tree.pack(traces, [t.group for t in traces])
        gen.metrics = _tree_metrics(tree, traces, len(prompts))
        sps = [s for t in traces for s in t.extra.get("edr_sp", [])]
        gen.metrics["sampling/transitions"] = float(len(sps))
        if sps:
            gen.metrics["sampling/branch_prob_mean"] = sum(sps) / len(sps)
        return gen


# ---------------------------------------------------------------------------------------------------------- MENTOR
class ExpertMixer:
    """A decoder hook that makes every live sequence sample from π_mix = (1 − w_t)·π_θ + w_t·π*, with
    w_t = min(1, H_t/γ) (MENTOR, arXiv 2510.04140). The expert π* runs alongside with its own KV cache (rows follow
    the live sequences by trace id); the mixed token is forced into the policy's sequence. Both distributions are at
    the sampling temperature; top-p is not applied to the mixture."""

    def __init__(self, expert: Any, gamma: float, temperature: float, generator: Optional[torch.Generator]):
        self.expert = expert
        self.gamma = max(float(gamma), 1e-8)
        self.temperature = temperature
        self.generator = generator
        self.cache: Any = None
        self.mask: Optional[torch.Tensor] = None
        self.logits: Optional[torch.Tensor] = None
        self.rows: dict[int, int] = {}
        self.weights: list[float] = []

    def _advance(self, traces: list) -> None:
        from ..generation.decoder import cache_kwargs, output_cache, select_cache

        dev = next(self.expert.parameters()).device
        if self.cache is None:
            width = max(len(t.prompt_ids) for t in traces)
            ids = torch.zeros((len(traces), width), dtype=torch.long)
            mask = torch.zeros((len(traces), width), dtype=torch.long)
            for i, t in enumerate(traces):
                ids[i, width - len(t.prompt_ids):] = torch.tensor(t.prompt_ids)
                mask[i, width - len(t.prompt_ids):] = 1
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            with torch.no_grad():
                out = self.expert(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                                  use_cache=True)
            self.mask = mask.to(dev)
        else:
            idx = torch.tensor([self.rows[t.id] for t in traces], device=dev)
            cache = select_cache(self.cache, idx)
            mask = torch.cat([self.mask.index_select(0, idx), torch.ones((len(traces), 1), dtype=torch.long,
                                                                          device=dev)], 1)
            ids = torch.tensor([[t.token_ids[-1]] for t in traces], device=dev)
            with torch.no_grad():
                out = self.expert(input_ids=ids, attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                                  use_cache=True, **cache_kwargs(self.expert, cache))
            self.mask = mask
        self.cache = output_cache(out)
        self.logits = out.logits[:, -1, :].float()
        self.rows = {t.id: i for i, t in enumerate(traces)}

    def __call__(self, view: Any) -> None:
        self._advance(view.traces)
        V = min(view.logprobs.shape[-1], self.logits.shape[-1])
        p_pol = view.logprobs[:, :V].exp()
        p_exp = torch.softmax(self.logits[:, :V].to(p_pol.device) / self.temperature, -1)
        w = (view.entropy / self.gamma).clamp(max=1.0).unsqueeze(-1)
        mix = (1 - w) * p_pol + w * p_exp
        toks = torch.multinomial(mix.cpu(), 1, generator=self.generator).squeeze(-1)
        for r, tok in enumerate(toks.tolist()):
            view.force(r, [tok])
        self.weights += w.squeeze(-1).tolist()


@SAMPLINGS.register("mentor")
@dataclass
class MentorRollout(SamplingStrategy):
    """MENTOR mixed-policy rollouts (Jiang et al., arXiv 2510.04140; Jiangzs1028/MENTOR ``train.sh``).

    N₁ on-policy rollouts per prompt (None = ``rollout.n``; 8 in the script) and N₂ = ``mixed`` (4) rollouts from
    π_mix = (1 − w_t)·π_θ + w_t·π*, w_t = min(1, H_t/γ_p): expert guidance only where the policy is uncertain.
    γ_p is the p-quantile (p = 0.95, ``entropy_p``) of the on-policy rollouts' token entropies in the batch. The
    expert is any HF model with the policy's vocabulary (``model.expert``). We sample π_mix token by token instead
    of the paper's speculative draft-and-verify sampler: the same distribution, more expert forward passes.
    ``extras``: ``mixed`` (B,) 0/1 for ``mentor`` advantages. Whether the N₂ are part of ``rollout.n`` was not
    checked; here they are extra.
    """

    mixed: int = 4
    on_policy: Optional[int] = None
    entropy_p: float = 0.95

    def __post_init__(self) -> None:
        check_range("mentor", "mixed", self.mixed, lo=0)
        check_range("mentor", "entropy_p", self.entropy_p, lo=0.0, hi=1.0)
        if self.on_policy is not None:
            check_range("mentor", "on_policy", self.on_policy, lo=1)

    def rollout(self, engine: Any, prompts: list[str], examples: list, n: int) -> Any:
        tree = engine.branching()
        groups = list(range(len(prompts)))
        on = tree.sample(prompts, self.on_policy or n, groups=groups)
        ents = torch.tensor([h for t in on for h in t.entropies] or [0.0])
        gamma = float(torch.quantile(ents, self.entropy_p))
        traces, mixer = list(on), None
        if self.mixed:
            mixer = ExpertMixer(engine.expert(), gamma, engine.temperature, engine.generator)
            traces += tree.sample(prompts, self.mixed, groups=groups, hook=mixer)
        gen = tree.pack(traces, [t.group for t in traces])
        gen.extras["mixed"] = torch.tensor([0.0] * len(on) + [1.0] * (len(traces) - len(on)))
        gen.metrics = {**_tree_metrics(tree, traces, len(prompts)), "sampling/entropy_gamma": gamma}
        if mixer is not None and mixer.weights:
            gen.metrics["sampling/expert_weight_mean"] = sum(mixer.weights) / len(mixer.weights)
        return gen


# -------------------------------------------------------------------------------------------------------- SENT
@SAMPLINGS.register("semantic_entropy_curriculum")
@dataclass
class SemanticEntropyCurriculum(SamplingStrategy):
    """The semantic-entropy curriculum of SENT (Cao et al., arXiv 2512.04359): train on prompts from low to high
    semantic entropy, in stages.

    Prompts are drawn from the training stream in pools of ``pool_size``; each prompt's semantic entropy
    SE = −Σ_C p(C) log p(C) (arXiv 2302.09664, discrete form p(C) = |C|/M) is estimated from M = ``samples``
    answers sampled at the rollout temperature, clustered by answer equivalence (``equivalence``: math, exact). The
    pool is sorted by SE (ascending, stable) and split into ``stages`` equal stages served in order: stage 1 (lowest
    SE) first. Served prompts are then sampled as usual. The queue is checkpointed. SENT's formulas and pool sizes
    were not recovered (abstract, README and script names only): pool-wise ordering and M = 4 are readings.
    """

    pool_size: int = 64
    stages: int = 2
    samples: int = 4
    equivalence: str = "math"
    queue: list = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        check_range("semantic_entropy_curriculum", "pool_size", self.pool_size, lo=1)
        check_range("semantic_entropy_curriculum", "stages", self.stages, lo=1)
        check_range("semantic_entropy_curriculum", "samples", self.samples, lo=1)
        if self.equivalence not in ("math", "exact"):
            raise ConfigError(f"semantic_entropy_curriculum.equivalence = {self.equivalence!r}; choose math or exact")
        self._served: list[dict] = []

    def semantic_entropies(self, engine: Any, examples: list) -> list[float]:
        from ..env.equivalence import cluster_answers
        from ..inference.aggregate import semantic_entropy
        from ..env.rewards import extract_answer

        gen = engine.generate([engine.format(ex) for ex in examples], self.samples)
        answers = [extract_answer(t) for t in engine.decode(gen)]
        out = []
        for i in range(len(examples)):
            ans = answers[i * self.samples:(i + 1) * self.samples]
            out.append(semantic_entropy(cluster_answers(ans, self.equivalence), form="count"))
        return out

    def select_examples(self, engine: Any, count: int) -> list:
        while len(self.queue) < count:
            pool = engine.next_examples(max(self.pool_size, count - len(self.queue)))
            se = self.semantic_entropies(engine, pool)
            order = sorted(range(len(pool)), key=lambda i: (se[i], i))
            per = math.ceil(len(pool) / self.stages)
            self.queue += [{"example": dataclasses.asdict(pool[i]), "se": se[i], "stage": rank // per + 1}
                           for rank, i in enumerate(order)]
        self._served, self.queue = self.queue[:count], self.queue[count:]
        from ..env.tasks import Example

        return [Example(**item["example"]) for item in self._served]

    def rollout(self, engine: Any, prompts: list[str], examples: list, n: int) -> Any:
        gen = engine.generate(prompts, n)
        if self._served:
            gen.metrics = {"sampling/curriculum_stage": float(max(s["stage"] for s in self._served)),
                           "sampling/semantic_entropy": sum(s["se"] for s in self._served) / len(self._served)}
        return gen

    def state_dict(self) -> dict[str, Any]:
        return {"queue": [dict(item) for item in self.queue]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state) - {"queue"})
        if unknown:
            raise ConfigError(f"semantic_entropy_curriculum state has unknown entries {unknown}")
        self.queue = [dict(item) for item in state.get("queue", [])]
