"""Agentic sampling: entropy-guided branching after tool calls (ARPO, AEPO-Dong), with their advantage and clip rules.

Both methods run the multi-turn tool environment (``env/tools.py``: ``<tool>PROGRAM</tool>`` → ``<result>...
</result>`` appended as attended, untrained tokens) on the branching engine (``generation/branching.py``) and decide, at
the first decoding step after each tool observation, whether to fork the trajectory into extra branches. Forks take
their first token independently from the post-observation distribution, so the branches share everything up to
and including the observation. A prompt's rows never exceed the global budget ``n`` (= ``rollout.n``); slots that
branching leaves unused are filled with fresh samples from the prompt.

**Segment entropy** (both methods, released code): for a model segment (the tokens between two observations)
``H_seg = Σ_{j < min(k, len)} H_j / log|V|`` over its first k = 20 tokens; ``H_init`` is the trajectory's first
segment, ``ΔH = H_seg − H_init`` for the segment that ended with the tool call just answered (at the first call,
ΔH = 0). Departure: the code sums −p log p over vLLM's top-10 log-probs of each token; we use the full-vocabulary
entropy the decoder measures (the top-10 sum is its truncation).

ARPO (Dong et al., 2507.19849; code ``dongguanting/ARPO`` ``vllm_rollout_with_tools.py``, read in a public copy):

    start N = initial_rollouts trajectories per prompt; after each observation, for up to beam_size − 1 extra
    branches (while the prompt has budget): branch iff clip(U − w·ΔH, 0, 1) ≤ τ,  U ~ U(0, 1)

(the paper writes P_t = α + β·ΔH_t > τ). Defaults from the 7B reasoning script: n = 16, initial_rollouts = 8,
beam_size = 2, τ = 0.5, w = 0.2. Advantage: GRPO over all rows of a prompt; a token shared by several branches is
attributed the average advantage of those branches — implicitly ("soft", the default: each row keeps its own
advantage, and the shared token's summed gradient is the average's) or explicitly ("hard", ``mode="hard"``).

AEPO-Dong (Dong et al., 2510.14545; code read in the AEPO folder of a public ARPO/ATPO copy, ``verl_aepo_entropy``):

- *entropy pre-monitoring*: one tool-using pre-rollout per prompt (discarded) gives H_root (its first segment) and
  H̄_tool (the mean segment entropy over its segments); the prompt starts with
  m = clip(⌊n·σ(β·(H_root − H̄_tool))⌋ + 1, 1, n) trajectories, β = 0.5 (code), the rest of the budget is for
  branching (paper: m = k·σ(β(H_root − H̄_tool)));
- *branch penalty*: branch iff clip((U + w·ΔH)·max(0, 1 − γ·l), 0, 1) ≥ τ with l the number of consecutive
  branching decisions on this path, γ = 0.05 (code), w = 0.2, τ = 0.5, beam_size = 2, initial 8 of n = 16 when
  pre-monitoring is off (the released script runs with it off; the paper's method has it on, our default);
- *entropy-balanced clipping*: PPO-clip's value, with a gradient weight 1+ε_h (PPO: 0) on high-ratio positive
  tokens and 0 on low-ratio negative ones — exactly the gradient of CE-GPPO's rule (``ce_gppo`` in ``knobs/clip/rules.py``)
  with β_low = 0, β_high = 1, which the ``aepo_dong`` preset uses (c = 3); and *entropy-aware advantage*
  (:class:`AEPOEntropyAdvantage`), below.

Departures shared by both, with reasons: trajectories decode asynchronously (token-level batches) instead of in
segment-synchronous rounds, so a prompt's fresh samples are added one per prompt per *decoding pass* (after all of
its rows finished) rather than per round; AEPO's consecutive-branch count is per path (the paper's wording) where
the code counts consecutive rounds per prompt; H_root reuses the pre-rollout's first segment instead of a second,
50-token generation; the tool is entrolab's sandboxed calculator, not a search engine or conda Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

from ...errors import ConfigError
from ...generation.decoder import StepView, top_p_mask
from ...generation.tools import (
    ToolHook,
    engine_tools,
    pack_tool_traces,
    segment_entropy,
    tool_state,
)
from ...registry import check_range
from .base import SAMPLINGS, SamplingStrategy

if TYPE_CHECKING:
    from ...generation.engine import RolloutEngine

ENTROPY_TOKENS = 20  # the code's min(20, len) — both methods


# ---------------------------------------------------------------------------------------------------- branching
class _Budget:
    """Per-prompt row budget of one rollout: rows so far (roots + forks) vs the global budget n."""

    def __init__(self, n: int, groups: int):
        self.n = n
        self.rows = [0] * groups

    def remaining(self, g: int) -> int:
        return self.n - self.rows[g]


def _segment_delta(trace: Any, vocab: int, tokens: int) -> float:
    """ΔH = H(segment that ended with the call just answered) − H(first segment) (module doc)."""
    st = tool_state(trace)
    h_init = segment_entropy(trace, 0, st["obs"][0][0], tokens, vocab)
    h_now = segment_entropy(trace, st["seg_starts"][-2], st["obs"][-1][0], tokens, vocab)
    return h_now - h_init


def _fork_tokens(view: StepView, row: int, k: int) -> list[int]:
    """``k`` first tokens, drawn independently (with replacement) from the row's next-token distribution."""
    dec = view.decoder
    logp = view.logprobs[row]
    if dec.greedy:
        return [int(logp.argmax())] * k
    probs = logp.exp()
    if dec.top_p < 1.0:
        probs = torch.where(top_p_mask(logp, dec.top_p), probs, torch.zeros_like(probs))
    gen_device = dec.generator.device if dec.generator is not None else probs.device
    return [int(t) for t in torch.multinomial(probs.to(gen_device), k, replacement=True, generator=dec.generator)]


class AgenticBranching(SamplingStrategy):
    """Shared rollout of ARPO and AEPO-Dong: tool environment + branch after observations + fill the budget.

    Subclasses set the dataclass fields ``initial_rollouts``, ``beam_size``, ``branch_probability``,
    ``entropy_weight``, ``entropy_tokens`` and implement :meth:`branch` (one decision) and may override
    :meth:`initial_counts`.
    """

    def _check(self, name: str) -> None:
        if self.initial_rollouts < 1:
            raise ConfigError(f"{name}.initial_rollouts = {self.initial_rollouts} must be >= 1 (rows started per "
                              "prompt; rollout.n is the total budget)")
        if self.beam_size < 1:
            raise ConfigError(f"{name}.beam_size = {self.beam_size} must be >= 1 (1 = never branch)")
        check_range(name, "branch_probability", self.branch_probability, lo=0.0, hi=1.0)
        check_range(name, "entropy_weight", self.entropy_weight, lo=0.0)
        if self.entropy_tokens < 1:
            raise ConfigError(f"{name}.entropy_tokens = {self.entropy_tokens} must be >= 1")

    # -- decisions -----------------------------------------------------------------------------------------------------
    def branch(self, u: float, delta_h: float, trace: Any) -> bool:
        raise NotImplementedError

    def after_decision(self, trace: Any, branched: bool) -> None:
        """Update per-path state after a tool step's decisions (AEPO's consecutive-branch count)."""

    def initial_counts(self, engine: "RolloutEngine", tree: Any, prompt_ids: list[list[int]], n: int) -> list[int]:
        """Rows started per prompt (``tree``: the rollout's branching engine, for pre-rollouts)."""
        return [min(self.initial_rollouts, n)] * len(prompt_ids)

    def _uniform(self, engine: "RolloutEngine") -> float:
        return float(torch.rand((), generator=engine.generator)) if engine.generator is not None else float(
            torch.rand(()))

    def observation_hook(self, engine: "RolloutEngine", budget: _Budget, log: list):
        """The ``on_observation`` callback of the tool hook: branch each row that just read an observation."""

        def on_observation(view: StepView, rows: list[int]) -> None:
            vocab = int(view.logits.shape[-1])
            for r in rows:
                tr = view.traces[r]
                g = tr.group
                dh = _segment_delta(tr, vocab, self.entropy_tokens)
                copies = 0
                for _ in range(min(self.beam_size - 1, budget.remaining(g))):
                    if self.branch(self._uniform(engine), dh, tr):
                        copies += 1
                        budget.rows[g] += 1
                self.after_decision(tr, copies > 0)
                log.append((tr.id, len(tr.token_ids), dh, copies))
                if copies:
                    view.fork(r, _fork_tokens(view, r, copies + 1))

        return on_observation

    # -- the sampling hook ---------------------------------------------------------------------------------------------
    def rollout(self, engine: "RolloutEngine", prompts: list[str], examples: list, n: int) -> Optional[Any]:
        env = engine_tools(engine)
        prompt_ids = engine.encode(prompts)
        tree = engine.branching()
        counts = self.initial_counts(engine, tree, prompt_ids, n)
        budget = _Budget(n, len(prompts))
        traces: list = []
        log: list = []
        pending = list(counts)
        passes = 0
        while any(pending):
            passes += 1
            for g, c in enumerate(pending):
                budget.rows[g] += c
            rows = [g for g, c in enumerate(pending) for _ in range(c)]
            hook = ToolHook(env, engine.tokenizer, on_observation=self.observation_hook(engine, budget, log))
            traces += tree.sample([prompt_ids[g] for g in rows], 1, groups=rows, hook=hook)
            # A prompt whose rows have all finished gets one fresh sample per pass until its budget is spent (code).
            pending = [1 if budget.remaining(g) > 0 else 0 for g in range(len(prompts))]
        traces = sorted(traces, key=lambda t: (t.group, t.id))
        gen = pack_tool_traces(tree, traces, [t.group for t in traces])
        gen.metrics.update({
            "sampling/initial_rows_mean": float(sum(counts)) / max(len(counts), 1),
            "sampling/branches": float(sum(c for *_, c in log)),
            "sampling/branch_decisions": float(len(log)),
            "sampling/passes": float(passes),
        })
        if log:
            gen.metrics["sampling/delta_h_mean"] = sum(d for _, _, d, _ in log) / len(log)
        return gen


@SAMPLINGS.register("arpo")
@dataclass
class ARPOSampling(AgenticBranching):
    """ARPO entropy-based adaptive branching after tool calls (Dong et al., 2507.19849; module doc):
    branch iff clip(U − w·ΔH, 0, 1) ≤ τ, up to ``beam_size`` − 1 extra branches per observation within the budget
    ``rollout.n``; ``initial_rollouts`` rows started per prompt (capped at n, as the code does). Defaults: the 7B
    reasoning script (n = 16 there; with a smaller ``rollout.n`` lower ``initial_rollouts`` to keep a budget)."""

    initial_rollouts: int = 8
    """Rows started per prompt, capped at n = rollout.n; the rest of the budget is for branches (7B script 8)."""
    beam_size: int = 2
    """Rows per branching point: up to beam_size − 1 extra branches per observation (1 = never branch)."""
    branch_probability: float = 0.5
    """τ ∈ [0, 1]: branch iff clip(U − w·ΔH, 0, 1) ≤ τ, U uniform (7B script 0.5)."""
    entropy_weight: float = 0.2
    """w: weight of the segment entropy change ΔH (entropy normalised by log|V|) (7B script 0.2)."""
    entropy_tokens: int = ENTROPY_TOKENS
    """k: first tokens of a segment summed into its entropy H_seg (the code's 20)."""

    def __post_init__(self) -> None:
        self._check("arpo")

    def branch(self, u: float, delta_h: float, trace: Any) -> bool:
        return min(1.0, max(0.0, u - self.entropy_weight * delta_h)) <= self.branch_probability


@SAMPLINGS.register("aepo_dong")
@dataclass
class AEPODongSampling(AgenticBranching):
    """AEPO-Dong entropy-balanced rollout (2510.14545; module doc): entropy pre-monitoring splits the budget
    (m = clip(⌊n·σ(β·(H_root − H̄_tool))⌋ + 1, 1, n) initial rows), then branch iff
    clip((U + w·ΔH)·max(0, 1 − γ·l), 0, 1) ≥ τ with l consecutive branching decisions on the path.
    Defaults (code): β = 0.5, γ = 0.05, w = 0.2, τ = 0.5, beam 2; ``initial_rollouts`` (8) only when
    ``pre_monitoring`` is off."""

    initial_rollouts: int = 8
    """Rows started per prompt when pre_monitoring is off, capped at n = rollout.n."""
    beam_size: int = 2
    """Rows per branching point: up to beam_size − 1 extra branches per observation (1 = never branch)."""
    branch_probability: float = 0.5
    """τ ∈ [0, 1]: branch iff clip((U + w·ΔH)·max(0, 1 − γ·l), 0, 1) ≥ τ (code 0.5)."""
    entropy_weight: float = 0.2
    """w: weight of the segment entropy change ΔH (entropy normalised by log|V|) (code 0.2)."""
    entropy_tokens: int = ENTROPY_TOKENS
    """k: first tokens of a segment summed into its entropy H_seg (the code's 20)."""
    pre_monitoring: bool = True
    """Split the budget by one discarded tool pre-rollout per prompt (the paper's method; the script runs off)."""
    monitor_beta: float = 0.5
    """β in m = clip(⌊n·σ(β·(H_root − H̄_tool))⌋ + 1, 1, n) initial rows (code 0.5)."""
    branch_penalty: float = 0.05
    """γ ∈ [0, 1]: branch chance scaled by max(0, 1 − γ·l), l consecutive branchings on the path (code 0.05)."""

    def __post_init__(self) -> None:
        self._check("aepo_dong")
        check_range("aepo_dong", "monitor_beta", self.monitor_beta, lo=0.0)
        check_range("aepo_dong", "branch_penalty", self.branch_penalty, lo=0.0, hi=1.0)

    def branch(self, u: float, delta_h: float, trace: Any) -> bool:
        streak = tool_state(trace).get("consecutive", 0)
        p = (u + self.entropy_weight * delta_h) * max(0.0, 1.0 - self.branch_penalty * streak)
        return min(1.0, max(0.0, p)) >= self.branch_probability

    def after_decision(self, trace: Any, branched: bool) -> None:
        st = tool_state(trace)  # forks copy it after this step, so children inherit the streak
        st["consecutive"] = st.get("consecutive", 0) + 1 if branched else 0

    @staticmethod
    def initial_rows(h_root: float, h_tool: float, n: int, beta: float) -> int:
        """m = clip(⌊n·σ(β·(H_root − H̄_tool))⌋ + 1, 1, n) (code's ``int(n·sigmoid) + 1``)."""
        return max(1, min(n, int(n / (1.0 + math.exp(-beta * (h_root - h_tool)))) + 1))

    def initial_counts(self, engine: "RolloutEngine", tree: Any, prompt_ids: list[list[int]], n: int) -> list[int]:
        if not self.pre_monitoring:
            return super().initial_counts(engine, tree, prompt_ids, n)

        hook = ToolHook(engine_tools(engine), engine.tokenizer)
        pre = tree.sample(prompt_ids, 1, groups=list(range(len(prompt_ids))), hook=hook)
        vocab = _vocab_size(engine)
        counts = [min(self.initial_rollouts, n)] * len(prompt_ids)
        for t in pre:
            st = tool_state(t)
            bounds = list(st["seg_starts"])
            ends = [s for s, _ in st["obs"]] + [t.num_tokens]
            segs = [segment_entropy(t, a, b, self.entropy_tokens, vocab) for a, b in zip(bounds, ends)]
            counts[t.group] = self.initial_rows(segs[0], sum(segs) / len(segs), n, self.monitor_beta)
        return counts  # the pre-rollouts are not trained on; their tokens count in sampling/generated_tokens


def _vocab_size(engine: "RolloutEngine") -> int:
    head = engine.model.get_output_embeddings() if hasattr(engine.model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return len(engine.tokenizer)
