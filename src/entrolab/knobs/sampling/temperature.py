"""The sampling knob's temperature control: AEPO-Wang's bang-bang temperature for extra rollouts (arXiv 2510.08141).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional

import torch

from ...errors import ConfigError
from ...generation.rows import select_rows, stack_generations
from ...registry import check_range
from ..advantage.base import group_statistics
from .base import SAMPLINGS, SamplingStrategy

if TYPE_CHECKING:
    from ...generation.engine import RolloutEngine


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
    """H_target, nats per token: T_high while last step's mean entropy ≤ it, else T_low."""
    temperature_high: float = 1.2
    """T_high: temperature of the extra rollouts while entropy is at or below the target."""
    temperature_low: float = 0.8
    """T_low: temperature of the extra rollouts while entropy is above the target."""
    reinforce_samples: int = 60
    """S: rows replaced by REINFORCE samples (S/2 above target; capped by the batch; paper 60)."""
    prompt_fraction: float = 0.25
    """Fraction of the step's prompts (the first ones) sampled n more times at the controlled T."""
    positive_threshold: float = 0.05
    """Extra rollouts whose in-group GRPO advantage exceeds this become REINFORCE samples."""
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

    def rollout(self, engine: "RolloutEngine", prompts: list[str], examples: list, n: int) -> Any:
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
