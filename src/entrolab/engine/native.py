"""The native engine: entrolab's own implementation of the engine contract (``docs/architecture.md``) for one machine
and a Hugging Face causal LM. It provides every primitive of ``knobs/extras.py``:

- **rollout** (:meth:`NativeEngine.rollout`): the step's prompts (a curriculum strategy may choose them), generation
  through the ``RolloutEngine`` (a sampling strategy may take it over; else plain or multi-turn tool sampling),
  the verifier's scores and the reward source's rewards, one no-grad forward for the rollout policy's log-probs and
  entropies (hidden states kept when a diagnostic asks), the reference's log-probs when a KL term needs them, and
  the components' rollout extras from the rollout policy's logits and texts;
- **the update forward** (:meth:`NativeEngine.forward`): current log-probs and entropies with gradient, and the
  components' forward extras from the current logits;
- **a value model** when a component needs the ``values`` primitive (PPO's ``gae``): the critic of
  ``engine/critic.py``, its rollout predictions handed to the components, trained in the policy's update loop
  (:meth:`NativeEngine.auxiliary_updates`) and checkpointed with the run;
- **greedy rollouts** (``greedy_rollout``): one greedy response per prompt, scored by the verifier, on demand.

Nothing here knows a method: components compute their own extras from these primitives.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ..batch import RolloutBatch
from ..env.reward_sources import REWARD_SOURCES, ScoredRollout
from ..env.tasks import format_prompt
from ..errors import ConfigError
from ..generation.branching import IdCounter
from ..generation.engine import RolloutEngine
from ..generation.rows import Generation
from ..knobs.extras import PRIMITIVES, ForwardContext, RolloutContext
from ..objective import PolicyObjective
from ..ops.entropy import fused_logprobs_entropy
from ..update import AuxiliaryUpdate
from .critic import Critic, CriticSettings
from .forward import lm_head, policy_logprobs_entropy, response_hidden
from .models import load_policy
from .rollout import PromptStream, Rollout

__all__ = ["NativeEngine", "SamplingSettings", "check_context", "context_limit", "stable_id"]


def stable_id(text: str) -> int:
    """A process-independent 63-bit id of a prompt id string (python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(str(text).encode(), digest_size=8).digest(), "little") >> 1


def context_limit(model: Any) -> Optional[int]:
    """The model's context length in tokens (``max_position_embeddings`` or ``n_positions`` of its config), or None
    when the config does not say."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_context(model: Any, tokenizer: Any, prompts: list[str], examples: list, max_new_tokens: int) -> None:
    """Refuse prompts that with ``max_new_tokens`` response tokens do not fit the model's context (they would train
    on silently mangled positions), naming the longest prompt's length and the limit."""
    limit = context_limit(model)
    if limit is None or not prompts:
        return
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] + max_new_tokens > limit:
        ex = examples[longest]
        raise ConfigError(
            f"prompt {getattr(ex, 'id', longest)!r} is {lengths[longest]} tokens (chat template included); with "
            f"rollout.max_new_tokens = {max_new_tokens} it needs {lengths[longest] + max_new_tokens} positions, but "
            f"the model's context is {limit} tokens; shorten the prompts (the data set's questions, "
            "data.system_prompt) or lower rollout.max_new_tokens")


@dataclass
class SamplingSettings:
    """How the native engine samples and forwards."""

    n: int
    """Responses per prompt (the group size G)."""
    temperature: float
    """Sampling temperature; log-probs and entropies are those of softmax(z/T)."""
    top_p: float
    """Nucleus threshold."""
    max_new_tokens: int
    """Response length cap."""
    chunk_rows: int = 0
    """Rows per no-grad forward chunk (0 = the whole batch at once)."""
    keep_hidden: bool = False
    """Keep the rollout pass's final hidden states (a diagnostic measures the update's effect on them)."""


class NativeEngine:
    """Rollouts and the update forward of ``entrolab train`` (module doc)."""

    name = "entrolab train"
    PROVIDES = frozenset(PRIMITIVES)

    def __init__(self, model: Any, tokenizer: Any, objective: PolicyObjective, task: Any, reward: Any,
                 settings: SamplingSettings, generator: torch.Generator, *, reward_source: str = "verifier",
                 system_prompt: Optional[str] = None, expert_fn: Optional[Callable[[], Any]] = None,
                 critic: Optional[CriticSettings] = None, seed: int = 0):
        objective.check_engine(self.name, self.PROVIDES)
        self.model, self.tokenizer = model, tokenizer
        self.objective, self.task, self.reward, self.settings = objective, task, reward, settings
        self.reward_source = REWARD_SOURCES.get(reward_source)()
        self.system_prompt = system_prompt
        self.stream = PromptStream(task)
        self.reference = copy.deepcopy(model).requires_grad_(False).eval() if objective.needs_reference else None
        self.generation = RolloutEngine(
            model=model, tokenizer=tokenizer, temperature=settings.temperature, top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens, generator=generator, score_fn=self.score, expert_fn=expert_fn,
            examples_fn=self.stream.take, format_fn=self.format, ids=IdCounter(), tools=getattr(task, "tools", None))
        self.critic = self._build_critic(critic or CriticSettings(), seed) \
            if "values" in objective.engine_primitives else None

    def _build_critic(self, settings: CriticSettings, seed: int) -> Critic:
        lm = None
        if settings.kind == "model" and settings.model is not None:
            lm, _ = load_policy(settings.model, seed=seed)
            if lm.get_input_embeddings().weight.shape[0] != self.model.get_input_embeddings().weight.shape[0]:
                raise ConfigError(f"critic.model {settings.model}: its vocabulary differs from the policy's; the "
                                  "critic reads the policy's token ids")
        return Critic(self.model, settings, seed, critic_lm=lm)

    # ------------------------------------------------------------------------------------------------ text
    def format(self, example: Any) -> str:
        """The chat-formatted input: the task's own prompt (system prompt, few-shot turns), or ``system_prompt``."""
        if self.system_prompt is None:
            return self.task.format_prompt(self.tokenizer, example)
        return format_prompt(self.tokenizer, example.prompt, self.system_prompt, getattr(self.task, "fewshot", None))

    def score(self, texts: list[str], examples: list) -> tuple[torch.Tensor, list[bool]]:
        """The verifier's ``(rewards (B,), correct)``, scored in parallel in the reward's bounded worker pool."""
        scored = self.reward.score_batch(texts, examples)
        return torch.tensor([r for r, _ in scored], dtype=torch.float32), [bool(ok) for _, ok in scored]

    # ------------------------------------------------------------------------------------------------ rollout
    def rollout(self, step: int, count: int) -> Rollout:
        """``count`` prompts' rollouts for RL step ``step`` (module doc)."""
        s, gen_engine = self.settings, self.generation
        gen_engine.step = step
        examples = self.objective.sampling.select_examples(gen_engine, count)
        if examples is None:
            examples = self.stream.take(count)
        prompts = [self.format(ex) for ex in examples]
        check_context(self.model, self.tokenizer, prompts, examples, s.max_new_tokens)
        t = time.perf_counter()
        gen = gen_engine.rollout(self.objective.sampling, prompts, examples, s.n)
        timings = {"generate": time.perf_counter() - t}
        texts = gen_engine.decode(gen)
        row_prompt = (gen.prompt_index.tolist() if gen.prompt_index is not None
                      else [i for i in range(len(examples)) for _ in range(s.n)])
        rows = [examples[i] for i in row_prompt]
        rewards, correct = self.score(texts, rows)
        group_ids = gen.group_ids if gen.group_ids is not None else torch.tensor(row_prompt, dtype=torch.long)
        rewards, source_correct = self.reward_source.rewrite(ScoredRollout(texts, rewards, correct, group_ids))

        t = time.perf_counter()
        head = self.critic is not None and self.critic.reads_policy_hidden
        old_lp, old_ent, hidden = self._forward_in_chunks(gen, self.model, keep_hidden=s.keep_hidden or head)
        ref_lp = self._forward_in_chunks(gen, self.reference)[0] if self.reference is not None else None
        batch = RolloutBatch(
            response_ids=gen.response_ids, response_mask=gen.loss_mask, old_logprobs=old_lp, rewards=rewards,
            group_ids=group_ids, old_entropy=old_ent, ref_logprobs=ref_lp, step=step,
            extras={**gen.extras, "input_ids": gen.input_ids, "attention_mask": gen.attention_mask,
                    "prompt_id": torch.tensor([stable_id(ex.id) for ex in rows], dtype=torch.long)},
        )
        ctx = RolloutContext(batch=batch, texts=texts, examples=rows, correct=source_correct,
                             tokenizer=self.tokenizer, temperature=s.temperature,
                             old_logits_fn=self._old_logits_fn(gen, hidden), chunk_rows=s.chunk_rows or 8,
                             values_fn=self._values_fn(gen, hidden),
                             greedy_fn=lambda: self.greedy_rewards(prompts, examples, row_prompt))
        extras = self.objective.rollout_extras(ctx)
        if extras:
            batch = batch.replace(extras={**batch.extras, **extras})
        hidden = hidden if s.keep_hidden else None
        timings["old_logprob"] = time.perf_counter() - t
        return Rollout(batch=batch, texts=texts, examples=rows, correct=correct, truncated=gen.truncated,
                       hidden=hidden, metrics=dict(gen.metrics), timings=timings,
                       generated_tokens=int(gen.metrics.get("sampling/generated_tokens", gen.response_mask.sum())))

    def _forward_in_chunks(self, gen: Generation, model: Any, keep_hidden: bool = False):
        """No-grad log-probs/entropies (and optionally hidden states) of ``model`` on a generation, chunk by chunk."""
        size = self.settings.chunk_rows or gen.input_ids.shape[0]
        T = self.settings.temperature
        logps, ents, hids = [], [], []
        with torch.no_grad():
            for s in range(0, gen.input_ids.shape[0], size):
                sl = slice(s, s + size)
                if keep_hidden:
                    h = response_hidden(model, gen.input_ids[sl], gen.attention_mask[sl], gen.prompt_len)
                    w, b = lm_head(model)
                    lp, en = fused_logprobs_entropy(h, w, gen.response_ids[sl], temperature=T, bias=b)
                    hids.append(h)
                else:
                    lp, en = policy_logprobs_entropy(model, gen.input_ids[sl], gen.attention_mask[sl],
                                                     gen.prompt_len, gen.response_ids[sl], T)
                logps.append(lp)
                ents.append(en)
        return torch.cat(logps), torch.cat(ents), (torch.cat(hids) if keep_hidden else None)

    def _old_logits_fn(self, gen: Generation, hidden: Optional[torch.Tensor]) -> Callable[[slice], torch.Tensor]:
        """(rows) → the rollout policy's temperature-scaled logits: from the kept hidden states, else from one forward
        per row chunk shared by every component that reads them."""
        w, b = lm_head(self.model)
        T = self.settings.temperature
        chunks: dict[tuple[int, int], torch.Tensor] = {}

        def old_logits(rows: slice) -> torch.Tensor:
            with torch.no_grad():
                if hidden is not None:
                    h = hidden[rows]
                else:
                    key = (rows.start, rows.stop)
                    if key not in chunks:
                        chunks[key] = response_hidden(self.model, gen.input_ids[rows], gen.attention_mask[rows],
                                                      gen.prompt_len)
                    h = chunks[key]
                return torch.nn.functional.linear(h, w, b).float() / T

        return old_logits

    def _values_fn(self, gen: Generation, hidden: Optional[torch.Tensor]) -> Optional[Callable[[], torch.Tensor]]:
        """() → the critic's (B, T) predictions at the rollout (the ``values`` primitive), or None without a critic."""
        critic = self.critic
        if critic is None:
            return None
        return lambda: critic.rollout_values(gen.input_ids, gen.attention_mask, gen.prompt_len, hidden,
                                             self.settings.chunk_rows)

    def greedy_rewards(self, prompts: list[str], examples: list, row_prompt: list[int]) -> torch.Tensor:
        """(B,) the verifier's reward of one greedy response to each row's prompt (the ``greedy_rollout`` primitive):
        one greedy generation per distinct prompt (multi-turn with the tool on a tool task)."""
        used = sorted(set(row_prompt))
        gen = self.generation.plain([prompts[i] for i in used], 1, greedy=True)
        rewards, _ = self.score(self.generation.decode(gen), [examples[i] for i in used])
        by_prompt = dict(zip(used, rewards.tolist()))
        return torch.tensor([by_prompt[i] for i in row_prompt], dtype=torch.float32)

    # ------------------------------------------------------------------------------------------------ update forward
    def forward(self, micro: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Current log-probs and entropies (b, T) with gradient; forward extras go into ``micro.extras`` (and the
        final hidden states into ``extras['policy_hidden']`` when a value head reads them)."""
        ids, att = micro.extras["input_ids"], micro.extras["attention_mask"]
        P = ids.shape[1] - micro.response_ids.shape[1]
        T = self.settings.temperature
        head = self.critic is not None and self.critic.reads_policy_hidden
        if not self.objective.has_forward_extras and not head:
            return policy_logprobs_entropy(self.model, ids, att, P, micro.response_ids, T)
        hidden = response_hidden(self.model, ids, att, P)
        w, b = lm_head(self.model)
        logp, ent = fused_logprobs_entropy(hidden, w, micro.response_ids, temperature=T, bias=b)
        if head:
            micro.extras["policy_hidden"] = hidden.detach()
        if self.objective.has_forward_extras:
            ctx = ForwardContext(micro=micro, hidden=hidden, weight=w, bias=b, temperature=T)
            micro.extras.update(self.objective.forward_extras(ctx))
        return logp, ent

    # ------------------------------------------------------------------------------------------------ state
    def auxiliary_updates(self) -> list[AuxiliaryUpdate]:
        """Models trained in the policy's update loop (``update.policy_update``'s ``aux``): the critic, if any."""
        return [self.critic] if self.critic is not None else []

    def checkpoint_models(self) -> dict[str, torch.nn.Module]:
        """Models a checkpoint saves besides the policy: the reference (a method may have reset it to a later
        policy) and the critic."""
        out: dict[str, torch.nn.Module] = {}
        if self.reference is not None:
            out["reference"] = self.reference
        if self.critic is not None:
            out["critic"] = self.critic.module
        return out

    def state_dict(self) -> dict[str, Any]:
        """The engine's optimizer state beyond the policy's (the critic's AdamW)."""
        return {"critic": self.critic.state_dict()} if self.critic is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.critic is not None and "critic" in state:
            self.critic.load_state_dict(state["critic"])

    # ------------------------------------------------------------------------------------------------ actions
    def reset_reference(self) -> None:
        """Copy the current policy into the reference (ProRL-style resets)."""
        if self.reference is None:
            self.reference = copy.deepcopy(self.model).requires_grad_(False).eval()
        else:
            self.reference.load_state_dict(self.model.state_dict())
