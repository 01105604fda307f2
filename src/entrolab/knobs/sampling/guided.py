"""Guided rollouts of the sampling knob: another distribution steers generation where the policy is uncertain or
wrong — MENTOR's expert mixture (arXiv 2510.04140) and EDGE-GRPO's guided error correction (arXiv 2507.21848; its
advantage half, EDA, is the ``edge_grpo`` estimator in ``knobs/advantage/entropy.py``).

It uses the sampling hook of ``knobs/sampling/base.py`` and the branching engine of ``generation/branching.py`` (whose
docstring is the contract for rows, ``trainable`` masks and tree extras).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch

from ...errors import ConfigError
from ...generation.decoder import cache_kwargs, output_cache, select_cache
from ...registry import check_range
from .base import SAMPLINGS, SamplingStrategy
from .trees import _tree_metrics

if TYPE_CHECKING:
    from ...generation.engine import RolloutEngine


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
    """N₂: extra rollouts per prompt from the expert mixture π_mix, on top of rollout.n (0 = none)."""
    on_policy: Optional[int] = None
    """N₁: on-policy rollouts per prompt; None = rollout.n (script 8)."""
    entropy_p: float = 0.95
    """p: γ_p is the p-quantile of the on-policy token entropies; expert weight w_t = min(1, H_t/γ_p)."""

    def __post_init__(self) -> None:
        check_range("mentor", "mixed", self.mixed, lo=0)
        check_range("mentor", "entropy_p", self.entropy_p, lo=0.0, hi=1.0)
        if self.on_policy is not None:
            check_range("mentor", "on_policy", self.on_policy, lo=1)

    def rollout(self, engine: "RolloutEngine", prompts: list[str], examples: list, n: int) -> Any:
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


HINT = " Wait! Something is wrong here."


ANSWER_HINT = "\nWait! Something is wrong here. After verification, the correct answer is \\boxed{{{answer}}}."


KEEP, REGENERATE, ANSWER = 0, 1, 2  # ``extras['gec_action']`` per row


@SAMPLINGS.register("edge_gec")
@dataclass
class EDGEGuidedErrorCorrection(SamplingStrategy):
    """EDGE-GRPO Guided Error Correction, GEC (arXiv 2507.21848; code ``grpo_aha_trainer.py``).

    Sample ``n`` responses per prompt and score them once (``engine.score``: the task's verifier). Every response
    that is not correct (the code: reward ≠ 2, i.e. format and accuracy not both right) is rewritten, the branch drawn
    from ``engine.generator`` (one uniform per wrong row, in row order — reproducible and resumable):

    - with probability ``p_regenerate`` (0.5): append ``" Wait! Something is wrong here."`` and sample a new
      continuation after it (KV cache of the response re-used; at most ``continuation_tokens`` new tokens);
    - otherwise: append ``"\\nWait! Something is wrong here. After verification, the correct answer is
      \\boxed{gt}."`` (gt = ``example.answer``) and end the response (EOS). The code picks, with probability 0.5
      each, this answer injection or replacing the response by the dataset's worked solution; our tasks carry no
      worked solutions, so both halves of this branch are the answer injection (no second draw is made).

    The response's own EOS is dropped before the injection (the code decodes without special tokens). Rows keep
    their prompt's group, so the group size stays ``n``; the trainer scores the final rows as usual.

    Loss mask (``trainable``), where the code trains the whole rewritten completion:

    - the original response before the injection is context only (0): it was sampled and judged wrong, and the code
      would credit it with the rewritten row's (often positive) advantage;
    - the injected text (and the EOS closing an answer injection) is trained when ``train_injected`` (default
      True): the guided correction is learned through it — without it an answer-injected row carries no gradient
      at all and only shifts its group's statistics, and the "Wait!" cue is what the paper wants the model to take
      up. It is not sampled from the policy (``extras['gec_action']`` marks the rows, ``Trace.forced`` the tokens);
      ``train_injected=False`` trains only the sampled continuation;
    - the new continuation is trained (1); rows that were correct are kept and trained as sampled.

    Departures: the code runs GEC only when the batch's padded prompt is shorter than 256 tokens, and gives the
    continuation 256 new tokens (first pass 1024); here it always runs, and ``continuation_tokens`` defaults to
    ``rollout.max_new_tokens``. GEC reads the gold answer, so it is not label-free.
    """

    p_regenerate: float = 0.5
    """Probability a wrong response gets the 'Wait!' cue and a new continuation; else the answer injection."""
    continuation_tokens: Optional[int] = None
    """Most new tokens of a regenerated continuation; None = rollout.max_new_tokens (code 256)."""
    train_injected: bool = True
    """Train the injected text (and an answer injection's EOS); False trains only sampled continuations."""

    def __post_init__(self) -> None:
        check_range("edge_gec", "p_regenerate", self.p_regenerate, lo=0.0, hi=1.0)
        if self.continuation_tokens is not None:
            check_range("edge_gec", "continuation_tokens", self.continuation_tokens, lo=1)

    def choose(self, correct: Sequence[bool], generator: Optional[torch.Generator]) -> list[int]:
        """The action of each row: KEEP for correct ones; for each wrong one (in order) one uniform u from
        ``generator``: REGENERATE if u < ``p_regenerate``, else ANSWER."""
        out = []
        for ok in correct:
            if ok:
                out.append(KEEP)
            else:
                u = float(torch.rand((), generator=generator))
                out.append(REGENERATE if u < self.p_regenerate else ANSWER)
        return out

    def rollout(self, engine: "RolloutEngine", prompts: list[str], examples: list, n: int) -> Any:
        tree = engine.branching()
        roots = tree.sample(prompts, n, groups=list(range(len(prompts))))
        _, correct = engine.score([t.text for t in roots], [examples[t.group] for t in roots])
        actions = self.choose(correct, engine.generator)
        eos = getattr(engine.tokenizer, "eos_token_id", None)
        budget = self.continuation_tokens or engine.max_new_tokens
        plans: dict[int, tuple[list[int], int, str]] = {}  # root id → (tokens to inject, length limit, stop reason)
        requests = []
        for t, act in zip(roots, actions):
            if act == KEEP:
                continue
            pos = t.num_tokens - 1 if t.finish_reason == "eos" else t.num_tokens  # drop the response's EOS
            if act == REGENERATE:
                toks = engine.encode([HINT])[0]
                plans[t.id] = (toks, pos + len(toks) + budget, "length")
            else:
                answer = getattr(examples[t.group], "answer", None)
                if answer is None:
                    raise ConfigError("edge_gec needs examples with a gold 'answer' to inject")
                toks = engine.encode([ANSWER_HINT.format(answer=answer)])[0] + ([int(eos)] if eos is not None else [])
                plans[t.id] = (toks, pos + len(toks), "hook")
            requests.append((t, pos, 1))
        started: set[int] = set()

        def inject(view: Any) -> None:
            for r, tr in enumerate(view.traces):
                toks, limit, reason = plans[tr.parent]
                if tr.id not in started:
                    started.add(tr.id)
                    view.force(r, toks)
                elif len(tr.token_ids) >= limit:
                    view.stop(r, reason)

        kids = tree.fork(requests, hook=inject, max_new_tokens=max(p[1] for p in plans.values())) if requests else []
        by_root = {k.parent: k for k in kids}
        traces = [by_root.get(t.id, t) for t in roots]
        inj = float(self.train_injected)
        trainable = [[0.0 if t.parent is not None and j < t.fork_step else (inj if t.forced[j] else 1.0)
                      for j in range(t.num_tokens)] for t in traces]
        gen = tree.pack(traces, [t.group for t in traces], trainable=trainable)
        gen.extras["gec_action"] = torch.tensor(actions, dtype=torch.long)
        wrong = sum(a != KEEP for a in actions)
        gen.metrics = {"sampling/rows": float(len(traces)),
                       "sampling/gec_first_pass_accuracy": 1.0 - wrong / max(1, len(actions)),
                       "sampling/gec_regenerated": float(sum(a == REGENERATE for a in actions)),
                       "sampling/gec_answer_injected": float(sum(a == ANSWER for a in actions)),
                       "sampling/generated_tokens": float(tree.tokens_spent())}
        return gen
