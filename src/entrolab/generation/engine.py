"""The engine a sampling strategy receives: ``RolloutEngine``, the generation half of the engine contract
(``docs/architecture.md``). It wraps a policy model and tokenizer with the run's sampling settings and the callables
an engine supplies (scoring, the prompt stream, the expert model); the native trainer builds one, and so can any
engine that lets strategies generate.

A ``SamplingStrategy`` (``knobs/sampling/base.py``) may take over generation::

    def rollout(self, engine: RolloutEngine, prompts: list[str], examples: list, n: int) -> Generation | None
    def select_examples(self, engine: RolloutEngine, count: int) -> list | None   # the prompt stream (curricula)

``None`` means "plain sampling" (``n`` rows per prompt with HF ``generate``). ``prompts`` are the chat-formatted
inputs of ``examples``. A returned ``generation.rows.Generation`` may hold any number of rows; it sets
``prompt_index`` (row → example, so the trainer scores each row against the right answer), ``group_ids`` (row →
advantage group; default ``prompt_index``), ``trainable`` (the loss mask: tool outputs, a re-used prefix, ... are
attended but not trained), ``extras`` (→ ``RolloutBatch.extras``; ``(B, T, ...)`` tensors are token-aligned and are
padded on the right when the trainer stacks batches; row ids must be unique per run — take them from
``engine.new_ids``) and ``metrics``. The trainer then computes rewards, old log-probs and entropies of the final rows
in its one fused forward pass, exactly as for plain sampling. ``engine`` (a :class:`RolloutEngine`) offers:

- ``model``, ``tokenizer``, ``temperature``, ``top_p``, ``max_new_tokens``, ``generator``, ``step``;
- ``generate(prompts, n, temperature=None) -> Generation`` (plain HF sampling; rows prompt-major);
- ``branching(**decoder_kwargs) -> BranchingRollout`` (below) and ``decoder(**kwargs) -> generation.decoder.Decoder``;
- ``encode(prompts)``, ``decode(generation)``, ``score(texts, examples) -> (rewards (B,), correct list)``;
- ``expert()``: a second HF model with the same vocabulary (``model.expert``; MENTOR), ``next_examples(k)``: the
  trainer's prompt stream, ``format(example)``: its chat-formatted input, ``new_ids(k)``: run-unique integer ids.

All generation paths go through it: :meth:`RolloutEngine.rollout` asks the strategy first and falls back to
:meth:`RolloutEngine.plain` — ``n`` plain samples per prompt, multi-turn with the tool when the task has one (tool
turns: ``generation/tools.py``), else HF sampling — which evaluation uses too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import torch

from ..errors import ConfigError
from .branching import BranchingRollout, IdCounter
from .decoder import Decoder, encode_prompts
from .hf_sampling import hf_generate
from .rows import Generation
from .tools import tool_generate

if TYPE_CHECKING:
    from ..env.tools import ToolEnvironment

__all__ = ["RolloutEngine"]


@dataclass
class RolloutEngine:
    """What an engine hands a sampling strategy (module doc): the policy, the sampling settings, and the callables
    the engine supplies. Engines other than ``entrolab train`` build one with their own callables; a missing one
    makes the method that needs it fail with a clear error."""

    model: Any
    """The policy (a Hugging Face causal LM)."""
    tokenizer: Any
    """Its tokenizer (left padding is set where prompts are batched)."""
    temperature: float
    """Sampling temperature; entropies and log-probs are those of softmax(z/T)."""
    top_p: float
    """Nucleus threshold of the sampler."""
    max_new_tokens: int
    """Response length cap."""
    generator: Optional[torch.Generator] = None
    """The run's generator for every random draw a strategy makes (reproducible, checkpointed)."""
    step: int = 0
    """The RL step being sampled."""
    score_fn: Optional[Callable[[Sequence[str], Sequence[Any]], tuple[torch.Tensor, list[bool]]]] = None
    """(texts, examples) → (rewards (B,), correct): the task's verifier."""
    expert_fn: Optional[Callable[[], Any]] = None
    """() → the expert model (MENTOR), loaded on first use."""
    examples_fn: Optional[Callable[[int], list]] = None
    """(k) → the next k examples of the run's prompt stream."""
    format_fn: Optional[Callable[[Any], str]] = None
    """(example) → its chat-formatted model input."""
    ids: IdCounter = field(default_factory=IdCounter)
    """Run-unique trace and tree-node ids."""
    tools: Optional["ToolEnvironment"] = None
    """A tool task's calculator (``env/tools.py``): plain sampling becomes multi-turn; None = no tools."""

    # ------------------------------------------------------------------------------------------------ generation paths
    def rollout(self, strategy: Any, prompts: list[str], examples: list, n: int) -> Generation:
        """The step's rows: the sampling strategy's own generation if it takes over, else :meth:`plain`."""
        gen = strategy.rollout(self, prompts, examples, n)
        return gen if gen is not None else self.plain(prompts, n)

    def plain(self, prompts: Sequence[str], n: int, *, greedy: bool = False) -> Generation:
        """``n`` plain samples per prompt (rows prompt-major), or the greedy response (``n`` = 1): multi-turn with the
        tool on a tool task, else HF sampling at the run's temperature and top-p."""
        if self.tools is not None:
            return tool_generate(self, prompts, n, self.tools, **({"greedy": True} if greedy else {}))
        if greedy:
            return hf_generate(self.model, self.tokenizer, prompts, n, 1.0, 1.0, self.max_new_tokens, do_sample=False)
        return hf_generate(self.model, self.tokenizer, prompts, n, self.temperature, self.top_p, self.max_new_tokens)

    def new_ids(self, k: int = 1) -> list[int]:
        return self.ids.take(k)

    def encode(self, prompts: Sequence[Union[str, Sequence[int]]]) -> list[list[int]]:
        return encode_prompts(self.tokenizer, prompts)

    def decoder(self, **kwargs: Any) -> Decoder:
        kw: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                                  generator=self.generator, id_start=self.ids.next)
        kw.update(kwargs)
        return Decoder(kw.pop("model", self.model), self.tokenizer, **kw)

    def branching(self, **kwargs: Any) -> BranchingRollout:
        kw = dict(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                  generator=self.generator)
        kw.update(kwargs)
        model = kw.pop("model", self.model)
        return BranchingRollout(model, self.tokenizer, ids=self.ids, **kw)

    def generate(self, prompts: Sequence[str], n: int, temperature: Optional[float] = None) -> Generation:
        """``n`` plain samples per prompt (HF ``generate``), with ``prompt_index`` set."""
        g = hf_generate(self.model, self.tokenizer, prompts, n, temperature or self.temperature, self.top_p,
                     self.max_new_tokens)
        g.prompt_index = torch.arange(len(prompts)).repeat_interleave(n)
        return g

    def decode(self, gen: Generation) -> list[str]:
        ids = gen.response_ids.masked_fill(gen.response_mask == 0, self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def score(self, texts: Sequence[str], examples: Sequence[Any]) -> tuple[torch.Tensor, list[bool]]:
        if self.score_fn is None:
            raise ConfigError("this engine cannot score rollouts")
        return self.score_fn(texts, examples)

    def expert(self) -> Any:
        if self.expert_fn is None:
            raise ConfigError("this method needs an expert model: set model.expert to a local HF model directory "
                              "with the policy's vocabulary")
        return self.expert_fn()

    def format(self, example: Any) -> str:
        """The chat-formatted model input of an example (as the trainer builds it)."""
        if self.format_fn is None:
            raise ConfigError("this engine cannot format prompts")
        return self.format_fn(example)

    def next_examples(self, k: int) -> list:
        if self.examples_fn is None:
            raise ConfigError("this engine has no prompt stream to draw from")
        return self.examples_fn(k)
