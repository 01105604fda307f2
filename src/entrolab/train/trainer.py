"""The single-machine RL trainer for Hugging Face causal LMs: entropy-aware GRPO/PPO with any catalog method.

One step, top to bottom (``Trainer.step``):

1. sample ``prompts_per_step`` questions and ``rollout.n`` responses each (``generate``, KV cache, left padding);
2. score them (verifiable reward), and take log-probs and entropies of the rollout policy in one forward pass
   (fused kernel), plus reference log-probs only when a KL term needs them;
3. the sampling knob may drop groups (dynamic sampling regenerates, up to ``optim.max_gen_batches``);
4. advantage knob, then ``ppo_epochs`` × ``mini_batches`` AdamW steps (``entrolab.update.policy_update``);
5. diagnostics: entropy distribution, centred-covariance tails (2505.22617 Table 1), predicted vs. actual ΔH on the
   same batch after the update (Lemma 1), the live entropy–performance law fit;
6. evaluation every ``eval.every`` steps, records, atomic checkpoints.

The model stays in ``eval()`` mode throughout (no dropout), so an update's forward pass equals the rollout pass.
"""

from __future__ import annotations

import copy
import math
import random
import time
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from .. import methods
from ..batch import RolloutBatch
from ..engine.forward import (
    lm_head,
    policy_logprobs_entropy,
    response_hidden,
    shared_prompt_response_hidden,
)
from ..errors import ConfigError
from ..generation.hf_sampling import hf_generate as generate
from ..generation.rows import Generation
from ..ops.dynamics import (
    PAPER_TAIL_FRACTIONS,
    centered_covariance,
    covariance_tail_means,
    entropy_change_from_hidden,
)
from ..ops.masked import masked_mean, masked_quantiles
from ..update import UpdateSettings, policy_update
from . import checkpoint as ckpt
from .config import TrainConfig, config_from_dict
from .extras import (
    FORWARD_EXTRAS,
    ForwardContext,
    RolloutContext,
    compute_forward_extras,
    compute_rollout_extras,
    provided_extras,
)
from .extras_advantage import label_free_extras
from .tracking import JsonlLog, Progress, TensorBoardLog, default_run_dir, write_config

# The RolloutBatch.extras this trainer computes for components (``train/extras.py`` has their providers).
ENGINE_EXTRAS = provided_extras()


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. three steps in a row with non-finite loss or gradients)."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2107.03374): 1 − C(n−c, k)/C(n, k) for c correct of n samples."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _tail_key(f: float) -> str:
    return f"dynamics/cov_top_{f * 100:g}pct"


def stable_id(text: str) -> int:
    """A process-independent 63-bit id of a prompt id string (python's hash() is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(str(text).encode(), digest_size=8).digest(), "little") >> 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Build everything a run needs from a ``TrainConfig``; ``train()`` runs it, ``Trainer.resume(dir)`` continues it.

    ``model``/``tokenizer`` may be passed in (tests use tiny in-memory models); otherwise ``config.model`` loads them.
    """

    def __init__(self, config: TrainConfig, model=None, tokenizer=None, run_dir: Optional[Path] = None):
        from ..engine import models
        from ..env import rewards, tasks

        self.config = config.validate()
        c = self.config
        seed_everything(c.seed)
        self.generator = torch.Generator().manual_seed(c.seed)
        self.objective = methods.build(c.algorithm.method, **c.algorithm.overrides)
        self.objective.check_engine("entrolab train", provided_extras())  # before any expensive work
        self.forward_extras = sorted(self.objective.engine_extras & FORWARD_EXTRAS.names())
        if model is None:
            if c.model.name == "tiny":
                model, tokenizer = models.tiny_model(seed=c.seed)
            else:
                model, tokenizer = models.load_model(c.model.name, dtype=c.model.dtype, gguf_file=c.model.gguf_file)
        if c.model.lora_rank > 0:
            model = self._add_lora(model)
        self.model, self.tokenizer = model, tokenizer
        self.model.eval()
        self.updates = UpdateSettings(ppo_epochs=c.optim.ppo_epochs, mini_batches=c.optim.mini_batches,
                                      micro_batch_size=c.optim.micro_batch_size,
                                      grad_clip=c.optim.grad_clip or None)
        self.objective.check_update_regime(self.updates.updates_per_rollout)
        self.reference = None
        if self.objective.needs_reference:
            self.reference = copy.deepcopy(self.model).requires_grad_(False).eval()

        task_params: dict[str, Any] = {"seed": c.seed}
        if c.data.task in ("arithmetic", "tool_arithmetic") and c.data.difficulty is not None:
            task_params["difficulty"] = c.data.difficulty
        if c.data.task == "file":
            task_params = {"path": c.data.path, "prompt_key": c.data.prompt_key, "answer_key": c.data.answer_key,
                           "seed": c.seed}
        self.task = tasks.build_task(c.data.task, **task_params)
        self.max_new_tokens = c.rollout.max_new_tokens or tasks.DEFAULT_MAX_NEW_TOKENS
        if self.objective.aggregation == "seq-mean-token-sum-norm" and self.objective.norm_length is None:
            # Dr. GRPO divides by a constant length: the generation budget, the same for every batch.
            self.objective.norm_length = float(self.max_new_tokens)
        self.reward = rewards.build_reward(self.task, format_weight=c.data.format_reward, custom=c.data.reward_fn)
        self.heldout = list(self.task.heldout(c.data.heldout_size)) if c.data.heldout_size else []
        self.data_position = 0
        self._stream: Optional[Iterator] = None
        self._expert = None  # model.expert, loaded when a sampling strategy asks for it
        from ..generation.branching import IdCounter

        self._ids = IdCounter()  # run-unique trace / tree-node ids of branching rollouts

        # Policy parameters, plus any a method component owns (e.g. a learned log-partition head).
        self.params = [p for p in self.model.parameters() if p.requires_grad] + self.objective.parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=c.optim.lr, weight_decay=c.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)

        self.run_dir = Path(run_dir) if run_dir else (
            Path(c.logging.run_dir) if c.logging.run_dir else default_run_dir(c.algorithm.method))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.run_dir / "config.yaml", c.to_yaml())
        self.metrics_log = JsonlLog(self.run_dir / "metrics.jsonl")
        self.samples_log = JsonlLog(self.run_dir / "samples.jsonl")
        self.history: list[dict[str, Any]] = []
        self.step_index = 0  # the next step to run
        self.nonfinite_streak = 0

    # ------------------------------------------------------------------------------------------ set-up helpers
    def _add_lora(self, model):
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ConfigError("model.lora_rank > 0 needs peft: pip install 'entrolab[peft]'") from None
        m = self.config.model
        return get_peft_model(model, LoraConfig(r=m.lora_rank, lora_alpha=m.lora_alpha,
                                                target_modules=list(m.lora_targets), lora_dropout=0.0))

    def _lr_factor(self, step: int) -> float:
        o = self.config.optim
        if o.warmup_steps and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        span = max(1, o.steps - o.warmup_steps)
        frac = min(1.0, (step - o.warmup_steps) / span)
        return 1.0 - frac if o.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))

    def _next_examples(self, n: int) -> list:
        if self._stream is None:
            self._stream = iter(self.task.train_examples(start=self.data_position))
        out = list(islice(self._stream, n))
        if len(out) < n:
            raise TrainingError(f"the training data ran out at position {self.data_position + len(out)}; "
                                "use more data or fewer optim.steps")
        self.data_position += n
        return out

    # ------------------------------------------------------------------------------------------ rollout
    def _format(self, example) -> str:
        """The chat-formatted input: the task's own prompt (system prompt, few-shot turns), or data.system_prompt."""
        if self.config.data.system_prompt is None:
            return self.task.format_prompt(self.tokenizer, example)
        from ..env.tasks import format_prompt

        return format_prompt(self.tokenizer, example.prompt, self.config.data.system_prompt,
                             getattr(self.task, "fewshot", None))

    def _forward_in_chunks(self, gen: Generation, model, keep_hidden: bool = False):
        """No-grad log-probs/entropies (and optionally hidden states) of ``model`` on a generation, micro-batched."""
        size = self.config.optim.micro_batch_size or gen.input_ids.shape[0]
        logps, ents, hids = [], [], []
        T = self.config.rollout.temperature
        with torch.no_grad():
            for s in range(0, gen.input_ids.shape[0], size):
                sl = slice(s, s + size)
                if keep_hidden:
                    h = response_hidden(model, gen.input_ids[sl], gen.attention_mask[sl], gen.prompt_len)
                    from ..ops.entropy import fused_logprobs_entropy

                    w, b = lm_head(model)
                    lp, en = fused_logprobs_entropy(h, w, gen.response_ids[sl], temperature=T, bias=b)
                    hids.append(h)
                else:
                    lp, en = policy_logprobs_entropy(model, gen.input_ids[sl], gen.attention_mask[sl],
                                                     gen.prompt_len, gen.response_ids[sl], T)
                logps.append(lp)
                ents.append(en)
        return torch.cat(logps), torch.cat(ents), (torch.cat(hids) if keep_hidden else None)

    def _rollout(self, timers: dict[str, float]) -> tuple[RolloutBatch, Generation, list, list[str], list[bool], Any]:
        c = self.config
        # Sampling hook (generation/branching.py): a strategy may choose the prompts and take over generation.
        engine = self._rollout_engine()
        examples = self.objective.sampling.select_examples(engine, c.optim.prompts_per_step)
        if examples is None:
            examples = self._next_examples(c.optim.prompts_per_step)
        prompts = [self._format(ex) for ex in examples]
        t = time.perf_counter()
        gen = self.objective.sampling.rollout(engine, prompts, examples, c.rollout.n)
        if gen is None and engine.tools is not None:  # multi-turn tool rollouts, n per prompt
            from ..generation.tools import tool_generate

            gen = tool_generate(engine, prompts, c.rollout.n)
        if gen is None:
            gen = generate(self.model, self.tokenizer, prompts, c.rollout.n, c.rollout.temperature, c.rollout.top_p,
                           self.max_new_tokens)
        timers["generate"] += time.perf_counter() - t
        texts = self._decode(gen)
        row_prompt = (gen.prompt_index.tolist() if gen.prompt_index is not None
                      else [i for i in range(len(examples)) for _ in range(c.rollout.n)])
        rep_examples = [examples[i] for i in row_prompt]
        scored = [self.reward.score(text, ex) for text, ex in zip(texts, rep_examples)]
        rewards = torch.tensor([r for r, _ in scored], dtype=torch.float32)
        correct = [bool(ok) for _, ok in scored]

        t = time.perf_counter()
        keep_hidden = c.diagnostics.measure_delta_h
        old_lp, old_ent, hidden = self._forward_in_chunks(gen, self.model, keep_hidden=keep_hidden)
        ref_lp = self._forward_in_chunks(gen, self.reference)[0] if self.reference is not None else None
        timers["old_logprob"] += time.perf_counter() - t
        group_ids = gen.group_ids if gen.group_ids is not None else torch.tensor(row_prompt, dtype=torch.long)
        batch = RolloutBatch(
            response_ids=gen.response_ids, response_mask=gen.loss_mask, old_logprobs=old_lp, rewards=rewards,
            group_ids=group_ids, old_entropy=old_ent, ref_logprobs=ref_lp, step=self.step_index,
            extras={**gen.extras, "input_ids": gen.input_ids, "attention_mask": gen.attention_mask,
                    "prompt_id": torch.tensor([stable_id(ex.id) for ex in rep_examples], dtype=torch.long)},
        )
        if self.objective.engine_extras or c.data.reward_source != "verifier":
            t = time.perf_counter()
            batch = self._rollout_extras(batch, gen, texts, rep_examples, correct, hidden)
            timers["old_logprob"] += time.perf_counter() - t
        return batch, gen, rep_examples, texts, correct, hidden

    def _rollout_extras(self, batch: RolloutBatch, gen: Generation, texts, examples, correct,
                        hidden: Optional[torch.Tensor] = None) -> RolloutBatch:
        """The extras some component needs, from their providers (``train/extras.py``); a label-free reward source
        may replace the rewards here (the verifier's correctness still gives ``reward/accuracy``). Providers that
        read the rollout policy's logits get them from the rollout pass's hidden states when it kept them, else
        from one forward pass per row chunk, shared by all such providers."""
        w, b = lm_head(self.model)
        T = self.config.rollout.temperature
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

        ctx = RolloutContext(batch=batch, texts=texts, examples=examples, correct=correct, objective=self.objective,
                             tokenizer=self.tokenizer, temperature=T, rewards=batch.rewards.clone(),
                             old_logits_fn=old_logits, chunk_rows=self.config.optim.micro_batch_size or 8)
        # A label-free reward source (data.reward_source) runs first: later providers see its rewards/correctness.
        first = label_free_extras(self.config.data.reward_source)
        extras = compute_rollout_extras(ctx, first)
        extras.update(compute_rollout_extras(ctx, sorted(set(self.objective.engine_extras) - set(first))))
        return batch.replace(rewards=ctx.rewards, extras={**batch.extras, **extras})

    def _rollout_engine(self):
        """What a sampling strategy's ``rollout``/``select_examples`` hooks get (``generation/branching.py``)."""
        from ..generation.branching import RolloutEngine

        c = self.config

        def score(texts, examples):
            out = [self.reward.score(t, ex) for t, ex in zip(texts, examples)]
            return torch.tensor([r for r, _ in out], dtype=torch.float32), [bool(ok) for _, ok in out]

        return RolloutEngine(model=self.model, tokenizer=self.tokenizer, temperature=c.rollout.temperature,
                             top_p=c.rollout.top_p, max_new_tokens=self.max_new_tokens, generator=self.generator,
                             step=self.step_index, score_fn=score, expert_fn=self._expert_model,
                             examples_fn=self._next_examples, format_fn=self._format, ids=self._ids,
                             tools=getattr(self.task, "tools", None))

    def _expert_model(self):
        """The expert of MENTOR-style rollouts (``model.expert``), loaded once; same vocabulary as the policy."""
        if self._expert is None:
            from ..engine import models

            name = self.config.model.expert
            if name is None and self.config.model.name == "tiny":
                name = "tiny"  # smoke tests: a second tiny model (another seed)
            if name is None:
                raise ConfigError("this method needs an expert model: set model.expert to a local HF model "
                                  "directory (or .gguf) sharing the policy's tokenizer")
            if name == "tiny":
                expert, _ = models.tiny_model(seed=self.config.seed + 1)
            else:
                expert, _ = models.load_model(name, dtype=self.config.model.dtype)
            if expert.get_output_embeddings().weight.shape[0] != self.model.get_output_embeddings().weight.shape[0]:
                raise ConfigError(f"model.expert={name!r} has a different vocabulary size than the policy; "
                                  "choose an expert with the policy's tokenizer")
            self._expert = expert.eval().requires_grad_(False)
        return self._expert

    def _decode(self, gen: Generation) -> list[str]:
        ids = gen.response_ids.masked_fill(gen.response_mask == 0, self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        c = self.config
        step = self.step_index
        timers = {"generate": 0.0, "old_logprob": 0.0, "update": 0.0, "diagnostics": 0.0, "eval": 0.0}
        t_step = time.perf_counter()
        batch, gen, examples, texts, correct, hidden = self._rollout(timers)
        n_generated = [int(gen.metrics.get("sampling/generated_tokens", gen.response_mask.sum()))]
        wanted = batch.batch_size  # rows a step trains on (prompts × n, or what a branching strategy returns)
        metrics: dict[str, Any] = {"step": step}
        metrics["reward/mean"] = float(batch.rewards.mean())
        metrics["reward/accuracy"] = float(np.mean(correct))
        metrics["response/length_mean"] = float(batch.mask.sum(-1).mean())
        metrics["response/truncated_frac"] = float(gen.truncated.float().mean())
        metrics.update(gen.metrics)

        # Sampling knob: drop groups; dynamic sampling generates more batches (DAPO), up to max_gen_batches.
        keep = self.objective.keep(batch)
        tries = 1
        while int(keep.sum()) < batch.batch_size and tries < c.optim.max_gen_batches \
                and self.objective.sampling.refill:
            more, gen2, ex2, tx2, cor2, hid2 = self._rollout(timers)
            n_generated.append(int(gen2.metrics.get("sampling/generated_tokens", gen2.response_mask.sum())))
            k2 = self.objective.keep(more)
            batch, gen, hidden = self._concat(batch, more, gen, gen2, hidden, hid2)
            examples, texts, correct = examples + ex2, texts + tx2, correct + cor2
            keep = torch.cat([keep, k2])
            tries += 1
        metrics["sampling/kept_frac"] = float(keep.float().mean())
        metrics["sampling/gen_batches"] = tries
        kept_idx = torch.nonzero(keep).flatten()[:wanted]

        update_metrics: dict[str, float] = {}
        diag: dict[str, float] = {}
        if kept_idx.numel() > 0:
            train_batch = batch.select(kept_idx)
            train_batch = self.objective.prepare(self.objective.compute_advantages(train_batch))
            t = time.perf_counter()
            diag.update(self._pre_update_diagnostics(train_batch))
            timers["diagnostics"] += time.perf_counter() - t
            w_before = None
            if c.diagnostics.measure_delta_h:
                w, b = lm_head(self.model)
                w_before = (w.detach().clone(), None if b is None else b.detach().clone())
            t = time.perf_counter()
            update_metrics = policy_update(self.objective, train_batch, self._policy_forward, self.optimizer,
                                           self.params, self.updates, self.generator)
            timers["update"] += time.perf_counter() - t
            if c.diagnostics.measure_delta_h and update_metrics.get("update/skipped", 0) < update_metrics.get(
                    "update/steps", 1):
                t = time.perf_counter()
                diag.update(self._delta_h(train_batch, hidden[kept_idx], w_before))
                timers["diagnostics"] += time.perf_counter() - t
        else:
            metrics["update/no_signal"] = 1.0
        self.scheduler.step()
        metrics.update(update_metrics)
        metrics.update(diag)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics["reward/errors"] = float(getattr(self.reward, "errors", 0))  # reward-function exceptions so far
        self._check_finite(update_metrics)

        if c.eval.every and ((step + 1) % c.eval.every == 0 or step + 1 == c.optim.steps) and self.heldout:
            t = time.perf_counter()
            metrics.update(self.evaluate())
            timers["eval"] += time.perf_counter() - t
        self.history.append(metrics)
        if c.diagnostics.law_refit_every and (step + 1) % c.diagnostics.law_refit_every == 0:
            metrics.update(self._law_metrics())
        total = time.perf_counter() - t_step
        for k, v in timers.items():
            metrics[f"time/{k}_s"] = v
        metrics["time/step_s"] = total
        metrics["perf/tokens_per_s"] = sum(n_generated) / max(timers["generate"], 1e-9)
        metrics["perf/diagnostics_share"] = timers["diagnostics"] / max(total - timers["eval"], 1e-9)
        self.objective.on_step_end(metrics)
        self._apply_actions(self.objective.pop_actions(), metrics)
        self._save_samples(step, batch, examples, texts, correct)
        self.step_index += 1
        return metrics

    def _concat(self, a: RolloutBatch, b: RolloutBatch, ga: Generation, gb: Generation, ha, hb):
        """Stack two rollout batches (different prompt/response lengths are padded on the correct side)."""
        def pad_right(x, T, value):
            return torch.nn.functional.pad(x, (0, T - x.shape[1]), value=value)

        def pad_left(x, P, value):
            return torch.nn.functional.pad(x, (P - x.shape[1], 0), value=value)

        P = max(ga.prompt_len, gb.prompt_len)
        T = max(ga.response_ids.shape[1], gb.response_ids.shape[1])
        pad = self.tokenizer.pad_token_id

        def full(g: Generation, which: str):
            src = g.input_ids if which == "ids" else g.attention_mask
            fill = pad if which == "ids" else 0
            prompt, resp = src[:, :g.prompt_len], src[:, g.prompt_len:]
            return torch.cat([pad_left(prompt, P, fill), pad_right(resp, T, fill)], 1)

        ga2 = Generation(
            input_ids=torch.cat([full(ga, "ids"), full(gb, "ids")]),
            attention_mask=torch.cat([full(ga, "mask"), full(gb, "mask")]), prompt_len=P,
            response_ids=torch.cat([pad_right(ga.response_ids, T, pad), pad_right(gb.response_ids, T, pad)]),
            response_mask=torch.cat([pad_right(ga.response_mask, T, 0), pad_right(gb.response_mask, T, 0)]),
            truncated=torch.cat([ga.truncated, gb.truncated]),
        )
        offset = int(a.group_ids.max()) + 1

        def cat_tok(x, y):
            return None if x is None else torch.cat([pad_right(x, T, 0), pad_right(y, T, 0)])

        def cat_extra(x, y):
            # token-aligned extras (dim 1 = response length) are padded on the right; others stack as they are
            if x.dim() >= 2 and x.shape[1] == a.response_ids.shape[1] and y.shape[1] == b.response_ids.shape[1]:
                padx = [0, 0] * (x.dim() - 2) + [0, T - x.shape[1]]
                pady = [0, 0] * (y.dim() - 2) + [0, T - y.shape[1]]
                return torch.cat([torch.nn.functional.pad(x, padx), torch.nn.functional.pad(y, pady)])
            return torch.cat([x, y])

        extras = {k: cat_extra(a.extras[k], b.extras[k]) for k in a.extras if k not in ("input_ids", "attention_mask")}

        merged = RolloutBatch(
            response_ids=ga2.response_ids, response_mask=cat_tok(a.response_mask, b.response_mask),
            old_logprobs=cat_tok(a.old_logprobs, b.old_logprobs), rewards=torch.cat([a.rewards, b.rewards]),
            group_ids=torch.cat([a.group_ids, b.group_ids + offset]),
            old_entropy=cat_tok(a.old_entropy, b.old_entropy), ref_logprobs=cat_tok(a.ref_logprobs, b.ref_logprobs),
            step=a.step, extras={**extras, "input_ids": ga2.input_ids, "attention_mask": ga2.attention_mask},
        )
        hidden = None
        if ha is not None:
            D = ha.shape[-1]
            hidden = torch.cat([torch.nn.functional.pad(ha, (0, 0, 0, T - ha.shape[1])),
                                torch.nn.functional.pad(hb, (0, 0, 0, T - hb.shape[1]))])
            assert hidden.shape[-1] == D
        return merged, ga2, hidden

    def _apply_actions(self, actions: set[str], metrics: dict[str, Any]) -> None:
        """Honour component requests: copy the policy into the reference (ProRL-style resets), clear AdamW state."""
        if "reset_reference" in actions:
            if self.reference is None:
                self.reference = copy.deepcopy(self.model).requires_grad_(False).eval()
            else:
                self.reference.load_state_dict(self.model.state_dict())
            metrics["actions/reset_reference"] = 1.0
        if "reset_optimizer" in actions:
            self.optimizer.state.clear()
            metrics["actions/reset_optimizer"] = 1.0

    def _policy_forward(self, mb: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        ids, att = mb.extras["input_ids"], mb.extras["attention_mask"]
        P = ids.shape[1] - mb.response_ids.shape[1]
        T = self.config.rollout.temperature
        if not self.forward_extras:
            return policy_logprobs_entropy(self.model, ids, att, P, mb.response_ids, T)
        from ..ops.entropy import fused_logprobs_entropy

        hidden = response_hidden(self.model, ids, att, P)
        w, b = lm_head(self.model)
        logp, ent = fused_logprobs_entropy(hidden, w, mb.response_ids, temperature=T, bias=b)
        # Forward extras (with gradient) go into this micro-batch's extras, which the update's batch carries on.
        ctx = ForwardContext(micro=mb, hidden=hidden, weight=w, bias=b, temperature=T, objective=self.objective)
        mb.extras.update(compute_forward_extras(ctx, self.forward_extras))
        return logp, ent

    # ------------------------------------------------------------------------------------------ diagnostics
    def _pre_update_diagnostics(self, batch: RolloutBatch) -> dict[str, float]:
        """Entropy distribution of the rollout policy and the centred-covariance statistics (Eq. 10, Table 1)."""
        c = self.config
        m = batch.mask
        ent = batch.old_entropy
        out: dict[str, float] = {"entropy/mean": float(masked_mean(ent, m))}
        for q, v in zip((10, 50, 90), masked_quantiles(ent, m, (0.1, 0.5, 0.9))):
            out[f"entropy/p{q}"] = v
        out["entropy/high_token_frac"] = float(masked_mean((ent > c.diagnostics.high_entropy_threshold).float(), m))
        cov = centered_covariance(batch.old_logprobs, batch.advantages, m)
        out["dynamics/cov_mean"] = float(masked_mean(cov, m))
        for f, v in covariance_tail_means(cov, m, PAPER_TAIL_FRACTIONS).items():
            out[_tail_key(f)] = v
        # Theorem 2 (natural PG) read with η = lr: ΔH ≈ −η·Cov(log π, A); a cheap, scale-free-in-sign proxy.
        out["dynamics/predicted_delta_H_npg"] = -self.optimizer.param_groups[0]["lr"] * out["dynamics/cov_mean"]
        return out

    def _delta_h(self, batch: RolloutBatch, hidden_before: torch.Tensor, w_before) -> dict[str, float]:
        """Predicted (Lemma 1, measured Δz) and actual entropy change on the same states after the update, on up to
        ``diagnostics.delta_h_rows`` responses of one group, a different group each step (deterministic: no random
        numbers are drawn). Responses to one prompt share it, so the prompt's forward pass runs once."""
        k = self.config.diagnostics.delta_h_rows
        if 0 < k < batch.batch_size:
            groups = torch.unique(batch.group_ids)
            g = groups[self.step_index % len(groups)]
            rows = torch.nonzero(batch.group_ids == g).flatten()[:k]
            batch, hidden_before = batch.select(rows), hidden_before[rows]
        ids, att = batch.extras["input_ids"], batch.extras["attention_mask"]
        P = ids.shape[1] - batch.response_ids.shape[1]
        # Only the columns these responses use: the batch is padded to its longest response.
        used = att[:, P:].any(0).nonzero()
        T = int(used.max()) + 1 if used.numel() else 1
        ids, att, mask, hidden_before = ids[:, :P + T], att[:, :P + T], batch.mask[:, :T], hidden_before[:, :T]
        size = self.config.optim.micro_batch_size or ids.shape[0]
        with torch.no_grad():
            if ids.shape[0] > 1 and torch.equal(ids[:, :P], ids[:1, :P].expand_as(ids[:, :P])) \
                    and torch.equal(att[:, :P], att[:1, :P].expand_as(att[:, :P])):
                hidden_after = shared_prompt_response_hidden(self.model, ids, att, P)
            else:
                hidden_after = torch.cat([response_hidden(self.model, ids[s:s + size], att[s:s + size], P)
                                          for s in range(0, ids.shape[0], size)])
        valid = mask > 0
        w_after, b_after = lm_head(self.model)
        pred, act = entropy_change_from_hidden(hidden_before[valid], w_before[0], hidden_after[valid],
                                               w_after.detach(), self.config.rollout.temperature, w_before[1],
                                               None if b_after is None else b_after.detach())  # (valid states,)
        if pred.numel() == 0:
            return {}
        out = {"dynamics/predicted_delta_H": float(pred.mean()), "dynamics/actual_delta_H": float(act.mean())}
        p, a = pred.double(), act.double()
        if p.numel() > 2 and float(p.std()) > 0 and float(a.std()) > 0:
            out["dynamics/delta_H_token_corr"] = float(torch.corrcoef(torch.stack([p, a]))[0, 1])
        if float(a.abs().sum()) > 0:
            # Per-state relative error Σ|pred − act| / Σ|act| (the batch means can cancel; states do not).
            out["dynamics/delta_H_token_rel_err"] = float((p - a).abs().sum() / a.abs().sum())
        return out

    def _law_metrics(self) -> dict[str, float]:
        try:
            from ..analysis.law import fit_law
        except ImportError:
            return {}
        H = [r["entropy/mean"] for r in self.history if "entropy/mean" in r]
        R = [r["reward/accuracy"] for r in self.history if "entropy/mean" in r]
        try:
            fit = fit_law(H, R)
        except ValueError:
            return {}
        return {"law/a": fit.a, "law/b": fit.b, "law/ceiling": fit.ceiling, "law/r2": fit.r2}

    def _check_finite(self, update_metrics: dict[str, float]) -> None:
        if update_metrics.get("update/skipped", 0) > 0:
            self.nonfinite_streak += 1
            print(f"entrolab: step {self.step_index}: {int(update_metrics['update/skipped'])} optimizer step(s) "
                  "skipped for a non-finite loss or gradient (weights not updated)")
        else:
            self.nonfinite_streak = 0
        if self.nonfinite_streak >= 3:
            raise TrainingError(
                "three steps in a row had non-finite losses or gradients; stopping. Lower optim.lr, check the reward "
                "function, or use model.dtype=float32. The last checkpoint is intact; --resume continues from it.")

    # ------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy, mean@n and pass@k (sampled at the rollout temperature) on the held-out split."""
        c = self.config
        exs = self.heldout[: c.eval.size]
        prompts = [self._format(ex) for ex in exs]
        tools = getattr(self.task, "tools", None)
        if tools is not None:  # a tool task is evaluated with its tool (env/tools.py)
            from ..generation.tools import tool_generate

            engine = self._rollout_engine()
            greedy = tool_generate(engine, prompts, 1, tools, greedy=True)
            sampled = tool_generate(engine, prompts, c.eval.n_samples, tools)
        else:
            greedy = generate(self.model, self.tokenizer, prompts, 1, 1.0, 1.0, self.max_new_tokens, do_sample=False)
            sampled = generate(self.model, self.tokenizer, prompts, c.eval.n_samples, c.rollout.temperature,
                               c.rollout.top_p, self.max_new_tokens)
        g_ok = [ok for (_, ok) in (self.reward.score(t, ex) for t, ex in zip(self._decode(greedy), exs))]
        texts = self._decode(sampled)
        oks = [self.reward.score(t, exs[i // c.eval.n_samples])[1] for i, t in enumerate(texts)]
        per_q = [sum(oks[i * c.eval.n_samples:(i + 1) * c.eval.n_samples]) for i in range(len(exs))]
        return {
            "eval/accuracy": float(np.mean(g_ok)),
            "eval/mean_at_n": float(np.mean(oks)),
            "eval/pass_at_k": float(np.mean([pass_at_k(c.eval.n_samples, k, c.eval.k) for k in per_q])),
        }

    # ------------------------------------------------------------------------------------------ records
    def _save_samples(self, step: int, batch: RolloutBatch, examples, texts, correct) -> None:
        n = min(self.config.logging.samples_per_step, batch.batch_size)
        for i in range(n):
            L = int(batch.mask[i].sum())
            ids = batch.response_ids[i, :L].tolist()
            self.samples_log.append({
                "step": step, "id": getattr(examples[i], "id", str(i)), "prompt": examples[i].prompt,
                "response": texts[i], "tokens": self.tokenizer.convert_ids_to_tokens(ids),
                "entropy": [round(float(x), 5) for x in batch.old_entropy[i, :L]],
                "reward": float(batch.rewards[i]), "correct": bool(correct[i]),
            })

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step_index, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_state(self.generator),
            "data_position": self.data_position, "objective": self.objective.state_dict(),
            "nonfinite_streak": self.nonfinite_streak,
        }

    def save_checkpoint(self) -> Path:
        return ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step_index, self.model, self._trainer_state(),
                                    self.config.checkpoint.keep_last, self._extra_models())

    def _extra_models(self) -> dict[str, torch.nn.Module]:
        # The reference is saved too: a method may have reset it to a later policy (ProRL).
        return {"reference": self.reference} if self.reference is not None else {}

    def _restore(self) -> None:
        found = ckpt.list_checkpoints(self.run_dir / "checkpoints")
        if not found:
            self.metrics_log.truncate_after(-1)
            self.samples_log.truncate_after(-1)
            return
        state = ckpt.load_checkpoint(found[-1], self.model, self._extra_models())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.objective.load_state_dict(state["objective"])
        self.step_index = state["step"]
        self.data_position = state["data_position"]
        self.nonfinite_streak = state.get("nonfinite_streak", 0)
        self._stream = None
        ckpt.set_rng_state(state["rng"], self.generator)
        self.history = self.metrics_log.truncate_after(self.step_index - 1)
        self.samples_log.truncate_after(self.step_index - 1)

    @classmethod
    def resume(cls, run_dir: Path, model=None, tokenizer=None) -> "Trainer":
        """Rebuild a run from ``run_dir/config.yaml`` and its latest complete checkpoint."""
        import yaml

        run_dir = Path(run_dir)
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it an entrolab run directory?")
        trainer = cls(config_from_dict(yaml.safe_load(cfg_path.read_text())), model=model, tokenizer=tokenizer,
                      run_dir=run_dir)
        trainer._restore()
        return trainer

    # ------------------------------------------------------------------------------------------ the loop
    def train(self) -> list[dict[str, Any]]:
        c = self.config
        tb = TensorBoardLog(self.run_dir / "tensorboard", c.logging.tensorboard)
        import sys

        title = "+".join(self.objective.methods)
        mode = ("rich" if sys.stdout.isatty() else "plain") if c.logging.progress else "off"
        progress = Progress(c.optim.steps, self.step_index, mode, title)
        try:
            while self.step_index < c.optim.steps:
                metrics = self.step()
                self.metrics_log.append(metrics)
                tb.log(metrics, metrics["step"])
                progress.update(metrics["step"], metrics)
                done = self.step_index == c.optim.steps
                if done or (c.checkpoint.every and self.step_index % c.checkpoint.every == 0):
                    self.save_checkpoint()
        finally:
            progress.close()
            tb.close()
        return self.history
