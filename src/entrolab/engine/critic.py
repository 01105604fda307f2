"""The native engine's value model: PPO's critic, the ``values`` primitive of the engine contract
(``knobs/extras.py``), built only when a component asks for it (the ``gae`` advantage, ``entrolab train --method
ppo``).

Two kinds, the run's choice (``critic.kind``):

- ``head`` (default): a linear value head V(s_t) = w·h_t + b on the policy's final hidden state h_t at each response
  position (the state before token t), initialised as Hugging Face initialises a new classification head
  (w ∼ N(0, 0.02²), b = 0; seeded). It reads the hidden states of the policy's own forward passes — the rollout pass
  and every update forward — detached: the value loss trains the head only, so the policy's update is exactly the
  method's and the critic costs no extra forward pass.
- ``model``: a separate critic, a copy of the policy (or the model at ``critic.model``) with its own value head,
  trained whole; one more forward and backward per micro-batch, twice the weights.

Either way the critic trains in the policy's update loop (``update.ValueLearner``): the clipped value loss
½·max((V − G)², (clip(V, V_old ± c) − G)²) on the returns G the advantage component wrote, with its own AdamW
(``critic.lr``, default verl's 1e-5), its own gradient clip, and the policy's PPO epochs and mini-batches. Its weights
(``critic.safetensors``) and optimizer state are saved in every checkpoint and restored on resume.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..batch import RolloutBatch
from ..errors import ConfigError
from ..update import ValueLearner
from .forward import response_hidden

__all__ = ["Critic", "CriticSettings", "ValueHead"]

CRITIC_KINDS = ("head", "model")


@dataclass
class CriticSettings:
    """The value model of methods that need one (the ``values`` primitive: ``gae``, ``ppo``); ignored otherwise."""

    kind: str = "head"
    """``head``: a linear value head on the policy's final hidden states (detached; trains the head only);
    ``model``: a separate critic model (a copy of the policy, or ``critic.model``) with its own head, trained whole."""
    model: Optional[str] = None
    """With kind=model: a local HF directory or ``.gguf`` for the critic's weights (None = a copy of the policy)."""
    lr: float = 1e-5
    """AdamW learning rate of the critic (verl's critic.optim.lr 1e-5)."""
    clip: Optional[float] = 0.5
    """Value clip c: predictions are clipped to V_old ± c in the loss (verl's cliprange_value 0.5); None = unclipped."""
    grad_clip: float = 1.0
    """Gradient-norm clip of the critic's own step (verl's critic grad_clip 1.0; 0 = off)."""
    weight_decay: float = 0.0
    """AdamW weight decay of the critic."""
    init_std: float = 0.02
    """Standard deviation of the value head's initial weights (Hugging Face's initializer_range 0.02; bias 0)."""

    def validate(self) -> None:
        if self.kind not in CRITIC_KINDS:
            raise ConfigError(f"critic.kind = {self.kind!r} is not allowed; choose one of: {', '.join(CRITIC_KINDS)}")
        if not self.lr > 0:
            raise ConfigError(f"critic.lr must be > 0, got {self.lr}")
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"critic.clip must be > 0 or null (unclipped), got {self.clip}")
        for key in ("grad_clip", "weight_decay", "init_std"):
            if getattr(self, key) < 0:
                raise ConfigError(f"critic.{key} = {getattr(self, key)!r} must be >= 0")
        if self.model is not None and self.kind != "model":
            raise ConfigError("critic.model names a critic model's weights: set critic.kind=model too")


class ValueHead(torch.nn.Module):
    """V(s_t) = w·h_t + b on final hidden states (…, D) → (…)."""

    def __init__(self, hidden_size: int, init_std: float = 0.02, seed: int = 0):
        super().__init__()
        self.score = torch.nn.Linear(hidden_size, 1)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.score.weight.copy_(torch.randn(self.score.weight.shape, generator=g) * init_std)
            self.score.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.score(hidden.to(self.score.weight.dtype)).squeeze(-1).float()


class CriticModel(torch.nn.Module):
    """A separate critic: a causal LM's backbone with a value head on its final hidden states."""

    def __init__(self, lm: Any, head: ValueHead):
        super().__init__()
        self.lm, self.head = lm, head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
        return self.head(response_hidden(self.lm, input_ids, attention_mask, prompt_len))


def _hidden_size(model: Any) -> int:
    return int(model.get_output_embeddings().weight.shape[1])


class Critic(ValueLearner):
    """The native engine's value model (module doc). ``module`` is what a checkpoint saves."""

    def __init__(self, policy: Any, settings: CriticSettings, seed: int = 0, critic_lm: Any = None):
        settings.validate()
        self.settings = settings
        head = ValueHead(_hidden_size(policy), settings.init_std, seed)
        if settings.kind == "head":
            self.module: torch.nn.Module = head
        else:
            lm = critic_lm if critic_lm is not None else copy.deepcopy(policy)
            self.module = CriticModel(lm.train(False).requires_grad_(True), head)
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        super().__init__(optimizer, clip=settings.clip, grad_clip=settings.grad_clip or None)

    @property
    def reads_policy_hidden(self) -> bool:
        """Whether values come from the policy's own hidden states (kind=head)."""
        return self.settings.kind == "head"

    def rollout_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                       hidden: Optional[torch.Tensor] = None, chunk_rows: int = 0) -> torch.Tensor:
        """(B, T) predictions at the rollout, no gradient: from the policy's rollout hidden states (kind=head, which
        must be given), else from the critic model's own forward, chunk by chunk."""
        with torch.no_grad():
            if self.reads_policy_hidden:
                if hidden is None:
                    raise ValueError("a value head reads the policy's rollout hidden states; none were kept")
                return self.module(hidden)
            size = chunk_rows or input_ids.shape[0]
            return torch.cat([self.module(input_ids[s:s + size], attention_mask[s:s + size], prompt_len)
                              for s in range(0, input_ids.shape[0], size)])

    def predict(self, micro: RolloutBatch) -> torch.Tensor:
        if self.reads_policy_hidden:
            hidden = micro.extras.get("policy_hidden")
            if hidden is None:
                raise ValueError("the value head needs the policy's hidden states of this update forward "
                                 "(NativeEngine.forward keeps them in extras['policy_hidden'])")
            return self.module(hidden.detach())
        ids, att = micro.extras["input_ids"], micro.extras["attention_mask"]
        return self.module(ids, att, ids.shape[1] - micro.response_ids.shape[1])
