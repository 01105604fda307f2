"""A tabular softmax policy with known rewards: the harness on which every method's entropy effect is shown.

States are (prompt p, position t) for P prompts and a horizon of L positions; each state has its own logits over
A actions (``logits`` (P, L, A), the tabular softmax of 2505.22617 §3). A response to prompt p is one action per
position; its reward is the fraction of positions where the action is one of that state's correct actions.
Entropy and expected reward are exact (no sampling noise), so an entropy effect shows up cleanly.

The toy provides three engine primitives (``knobs/extras.py``): ``rollout_logits`` (its logits), ``greedy_rollout``
(the argmax response of each prompt) and ``values`` (a value table V(p, t), :class:`TabularCritic`, trained with
PPO's clipped value loss in the same update loop). A method needing others (texts, a tokenizer, LM logits) runs on
the toy only with its extras supplied by the batch.

    policy = TabularPolicy(seed=0)
    history = train_toy(methods.build("clip_cov"), policy, steps=30)
    history[-1]["entropy"], history[-1]["reward"]
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .batch import RolloutBatch
from .knobs.extras import RolloutContext
from .objective import PolicyObjective
from .ops.dynamics import exact_entropy
from .update import UpdateSettings, ValueLearner, policy_update


class TabularPolicy(torch.nn.Module):
    """Per-state logits z (P, L, A); π(a | p, t) = softmax(z[p, t])."""

    PROVIDES = frozenset({"rollout_logits", "greedy_rollout", "values"})
    """The engine primitives the toy provides (module doc)."""

    def __init__(self, num_prompts: int = 8, horizon: int = 4, num_actions: int = 8, correct_per_state: int = 2,
                 init_scale: float = 1.0, seed: int = 0):
        super().__init__()
        if not 0 < correct_per_state < num_actions:
            raise ValueError(f"correct_per_state must be in [1, num_actions), got {correct_per_state}")
        g = torch.Generator().manual_seed(seed)
        self.logits = torch.nn.Parameter(init_scale * torch.randn(num_prompts, horizon, num_actions, generator=g))
        scores = torch.rand(num_prompts, horizon, num_actions, generator=g)
        top = scores.topk(correct_per_state, dim=-1).indices
        correct = torch.zeros(num_prompts, horizon, num_actions, dtype=torch.bool)
        correct.scatter_(-1, top, True)
        self.register_buffer("correct", correct)

    @property
    def num_prompts(self) -> int:
        return self.logits.shape[0]

    @property
    def horizon(self) -> int:
        return self.logits.shape[1]

    @torch.no_grad()
    def entropy(self) -> float:
        """Mean exact entropy (nats) over all states."""
        return float(exact_entropy(self.logits).mean())

    @torch.no_grad()
    def expected_reward(self) -> float:
        """Exact expected reward E_p E_{o∼π}[R(o)] = mean over states of π(correct | state)."""
        p = torch.softmax(self.logits.float(), -1)
        return float((p * self.correct).sum(-1).mean())

    def logprobs_entropy(self, prompts: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(a_t | p, t) and the entropy of π(· | p, t), each (B, L), differentiable."""
        logp_all = torch.log_softmax(self.logits[prompts], -1)  # (B, L, A)
        logp = logp_all.gather(-1, actions[..., None]).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
        return logp, ent

    @torch.no_grad()
    def rollout(self, prompts: torch.Tensor, group_size: int, generator: torch.Generator, step: int = 0,
                reference: Optional["TabularPolicy"] = None) -> RolloutBatch:
        """``group_size`` responses to each prompt in ``prompts``; group ids are the positions in ``prompts``."""
        rep = prompts.repeat_interleave(group_size)
        probs = torch.softmax(self.logits[rep], -1)  # (B, L, A)
        B, L, A = probs.shape
        actions = torch.multinomial(probs.reshape(B * L, A), 1, generator=generator).view(B, L)
        logp, ent = self.logprobs_entropy(rep, actions)
        hit = self.correct[rep].gather(-1, actions[..., None]).squeeze(-1).float()
        ref = reference.logprobs_entropy(rep, actions)[0] if reference is not None else None
        return RolloutBatch(
            response_ids=actions, response_mask=torch.ones(B, L), old_logprobs=logp, rewards=hit.mean(-1),
            group_ids=torch.arange(len(prompts)).repeat_interleave(group_size), old_entropy=ent,
            ref_logprobs=ref, extras={"prompt_id": rep}, step=step,
        )

    @torch.no_grad()
    def greedy_rewards(self, prompts: torch.Tensor) -> torch.Tensor:
        """(B,) the reward of the argmax response to each of ``prompts`` (the ``greedy_rollout`` primitive)."""
        best = self.logits[prompts].argmax(-1, keepdim=True)  # (B, L, 1)
        return self.correct[prompts].gather(-1, best).squeeze(-1).float().mean(-1)

    def rollout_context(self, batch: RolloutBatch, critic: Optional["TabularCritic"] = None) -> RolloutContext:
        """The primitives of :attr:`PROVIDES` for a rollout batch of this policy (the toy has no texts)."""
        prompts = batch.extras["prompt_id"]
        return RolloutContext(
            batch=batch, texts=[], examples=[], correct=[],
            old_logits_fn=lambda rows: self.logits.detach()[prompts[rows]].float(),
            values_fn=(lambda: critic.values(batch)) if critic is not None else None,
            greedy_fn=lambda: self.greedy_rewards(prompts))


class TabularCritic(ValueLearner):
    """The toy's value model: a table V(p, t) (zeros at the start), trained with PPO's clipped value loss
    (``update.ValueLearner``) by its own optimizer, in the same loop as the policy."""

    def __init__(self, policy: TabularPolicy, lr: float = 0.1, optimizer: str = "adam", clip: Optional[float] = 0.5):
        self.table = torch.nn.Parameter(torch.zeros(policy.num_prompts, policy.horizon))
        super().__init__(_optimizer(optimizer, [self.table], lr), clip=clip, grad_clip=None)

    def predict(self, micro: RolloutBatch) -> torch.Tensor:
        return self.table[micro.extras["prompt_id"]]

    @torch.no_grad()
    def values(self, batch: RolloutBatch) -> torch.Tensor:
        return self.table[batch.extras["prompt_id"]].clone()


@dataclass
class ToySettings:
    """Step settings of the toy harness. Adam (per-parameter step sizes, as in LM training) with lr 0.1, two PPO
    epochs of two mini-batches (so updates after the first are off-policy): GRPO's entropy falls from ≈1.75 to
    ≈0.4 nats in 30 steps while the expected reward rises from ≈0.3 to ≈0.95."""

    steps: int = 30
    prompts_per_step: int = 4
    group_size: int = 8
    lr: float = 0.1
    optimizer: str = "adam"
    ppo_epochs: int = 2
    mini_batches: int = 2
    seed: int = 0
    critic_lr: float = 0.1
    """Learning rate of the value table (methods that need the ``values`` primitive: PPO's GAE)."""


def _optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer {name!r} is unknown; choose sgd or adam")


def train_toy(objective: PolicyObjective, policy: TabularPolicy, settings: Optional[ToySettings] = None,
              critic: Optional[TabularCritic] = None, **overrides: Any) -> list[dict[str, float]]:
    """Train ``policy`` in place with ``objective``; returns per-step records (entropy and reward are exact,
    measured before the step's update; a final record holds the state after the last update). A method needing the
    ``values`` primitive trains ``critic`` alongside (a fresh :class:`TabularCritic` when None)."""
    s = dataclasses.replace(settings or ToySettings())
    for k, v in overrides.items():
        if not hasattr(s, k):
            raise ValueError(f"train_toy: unknown setting {k!r}")
        setattr(s, k, v)
    gen = torch.Generator().manual_seed(s.seed)
    reference = copy.deepcopy(policy).requires_grad_(False) if objective.needs_reference else None
    params = list(policy.parameters()) + objective.parameters()
    opt = _optimizer(s.optimizer, params, s.lr)
    upd = UpdateSettings(ppo_epochs=s.ppo_epochs, mini_batches=s.mini_batches, grad_clip=None)
    needs = objective.engine_primitives - {"generation"}
    provided = bool(needs) and needs <= getattr(policy, "PROVIDES", frozenset())
    if provided and "values" in needs:
        critic = critic if critic is not None else TabularCritic(policy, s.critic_lr, s.optimizer)
    else:
        critic = None
    history: list[dict[str, float]] = []
    for step in range(s.steps):
        record = {"step": float(step), "entropy": policy.entropy(), "reward": policy.expected_reward()}
        prompts = torch.randperm(policy.num_prompts, generator=gen)[: s.prompts_per_step]
        batch = policy.rollout(prompts, s.group_size, gen, step=step, reference=reference)
        record["sample_reward"] = float(batch.rewards.mean())
        if provided:  # the components' own extras, from the primitives the toy provides
            extras = objective.rollout_extras(policy.rollout_context(batch, critic))
            batch = batch.replace(extras={**batch.extras, **extras})
        batch = batch.select(objective.keep(batch))
        if batch.batch_size:
            batch = objective.prepare(objective.compute_advantages(batch))

            def forward(mb: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
                return policy.logprobs_entropy(mb.extras["prompt_id"], mb.response_ids)

            record.update(policy_update(objective, batch, forward, opt, params, upd, gen,
                                        aux=[critic] if critic is not None else ()))
        objective.on_step_end(record)
        actions = objective.pop_actions()
        if "reset_reference" in actions and reference is not None:
            reference.load_state_dict(policy.state_dict())
        if "reset_optimizer" in actions:
            opt = _optimizer(s.optimizer, params, s.lr)
        history.append(record)
    history.append({"step": float(s.steps), "entropy": policy.entropy(), "reward": policy.expected_reward()})
    return history


def one_update_entropy(objective: PolicyObjective, seed: int = 0, lr: float = 0.1, ppo_epochs: int = 2,
                       mini_batches: int = 2, **policy_kwargs: Any) -> tuple[float, float]:
    """Entropy before and after one rollout + update from a fresh policy with ``seed`` (same batch for every
    objective given the same seed) — the "same state" comparison used to show a method's entropy effect."""
    policy = TabularPolicy(seed=seed, **policy_kwargs)
    h0 = policy.entropy()
    hist = train_toy(objective, policy, ToySettings(steps=1, lr=lr, ppo_epochs=ppo_epochs,
                                                     mini_batches=mini_batches, seed=seed))
    return h0, hist[-1]["entropy"]
