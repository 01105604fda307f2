"""The single-machine RL trainer for Hugging Face causal LMs: entropy-aware GRPO/PPO with any catalog method.

One step (``Trainer.step``), the same algorithm as ``entrolab.toy.train_toy``:

1. sample a ``Rollout`` from the engine (``engine/native.py``: prompts, generation, rewards, the rollout policy's
   log-probs and entropies, the components' extras);
2. the sampling knob keeps some groups; a refilling strategy (DAPO) samples more, up to ``optim.max_gen_batches``;
3. advantages and ``prepare``, then ``ppo_epochs`` × ``mini_batches`` AdamW steps (``entrolab.update``), with the
   probes (``train/probes.py``: entropy and covariance statistics, predicted vs. actual ΔH, the live law fit) called
   before and after the update;
4. evaluation every ``eval.every`` steps, records, atomic checkpoints.

The model stays in ``eval()`` mode throughout (no dropout), so an update's forward pass equals the rollout pass.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..engine.models import load_expert, load_policy
from ..engine.native import NativeEngine, SamplingSettings
from ..engine.rollout import Rollout
from ..env.rewards import build_reward
from ..errors import ConfigError, TrainingError
from ..update import UpdateSettings, policy_update
from . import checkpoint as ckpt
from . import rundir
from .config import TrainConfig
from .evaluation import evaluate, pass_at_k
from .preflight import preflight
from .probes import UpdateView, default_probes
from .tracking import JsonlLog, Progress, TensorBoardLog, write_config

__all__ = ["Trainer", "TrainingError", "pass_at_k", "seed_everything"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Build everything a run needs from a ``TrainConfig``; ``train()`` runs it, ``Trainer.resume(dir)`` continues it.

    ``model``/``tokenizer`` may be passed in (tests use tiny in-memory models); otherwise ``config.model`` loads them.
    ``mode``: ``new`` (an existing non-empty run directory is refused), ``overwrite`` (it is moved aside) or ``resume``
    (``train/rundir.py``).
    """

    def __init__(self, config: TrainConfig, model=None, tokenizer=None, run_dir: Optional[Path] = None,
                 mode: str = rundir.NEW):
        self.config = config.validate()
        c = self.config
        self.run_dir = rundir.claim(run_dir if run_dir is not None else c.logging.run_dir, c.algorithm.method, mode)
        seed_everything(c.seed)
        self.generator = torch.Generator().manual_seed(c.seed)
        self.objective = c.algorithm.objective()
        self.objective.check_engine(NativeEngine.name, NativeEngine.PROVIDES)  # before any expensive work
        task = c.data.build_task(c.seed)  # a bad data file or reward function fails here, before the model loads
        reward = build_reward(task, format_weight=c.data.format_reward, custom=c.data.reward_fn,
                              limit_s=c.data.reward_limit_s, memory_mb=c.data.reward_memory_mb,
                              workers=c.data.reward_workers).start()
        if model is None:
            model, tokenizer = load_policy(c.model.name, c.model.dtype, c.model.gguf_file, seed=c.seed)
        if c.model.lora_rank > 0:
            model = self._add_lora(model)
        self.model, self.tokenizer = model, tokenizer
        self.model.eval()
        self.updates = UpdateSettings(ppo_epochs=c.optim.ppo_epochs, mini_batches=c.optim.mini_batches,
                                      micro_batch_size=c.optim.micro_batch_size, grad_clip=c.optim.grad_clip or None)
        self.objective.check_update_regime(self.updates.updates_per_rollout)
        self.heldout = list(task.heldout(c.data.heldout_size)) if c.data.heldout_size else []
        self.probes = default_probes(c.diagnostics, c.rollout.temperature, c.optim.micro_batch_size)
        settings = SamplingSettings(n=c.rollout.n, temperature=c.rollout.temperature, top_p=c.rollout.top_p,
                                    max_new_tokens=c.rollout.budget(), chunk_rows=c.optim.micro_batch_size,
                                    keep_hidden=any(p.needs_hidden for p in self.probes))
        self.engine = NativeEngine(
            model, tokenizer, self.objective, task, reward, settings, self.generator, reward_source=c.reward_source(),
            system_prompt=c.data.system_prompt,
            expert_fn=lambda: load_expert(c.model.expert, c.model.name, self.model, c.model.dtype, c.seed),
            critic=c.critic.settings(), seed=c.seed)
        # Policy parameters, plus any a method component owns (e.g. a learned log-partition head).
        self.params = [p for p in self.model.parameters() if p.requires_grad] + self.objective.parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=c.optim.lr, weight_decay=c.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        preflight(c, self.engine, self.heldout)  # degenerate settings: refused or warned about before any step
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.run_dir / "config.yaml", c.to_yaml())
        self.metrics_log = JsonlLog(self.run_dir / "metrics.jsonl")
        self.samples_log = JsonlLog(self.run_dir / "samples.jsonl")
        self.history: list[dict[str, Any]] = []
        self.step_index = 0  # the next step to run
        self.nonfinite_streak = 0

    @property
    def reference(self) -> Optional[torch.nn.Module]:
        return self.engine.reference

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

    # ------------------------------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        c, step = self.config, self.step_index
        timers = {"generate": 0.0, "old_logprob": 0.0, "update": 0.0, "diagnostics": 0.0, "eval": 0.0}
        t_step = time.perf_counter()
        rollout = self.engine.rollout(step, c.optim.prompts_per_step)
        wanted = rollout.batch.batch_size  # rows a step trains on (prompts × n, or what a branching strategy returns)
        metrics: dict[str, Any] = {"step": step, **rollout.summary()}
        rollout, keep, tries = self._fill(rollout)
        for k, v in rollout.timings.items():
            timers[k] += v
        metrics["sampling/kept_frac"] = float(keep.float().mean())
        metrics["sampling/gen_batches"] = tries
        kept = torch.nonzero(keep).flatten()[:wanted]

        update_metrics: dict[str, float] = {}
        diag: dict[str, float] = {}
        if kept.numel() > 0:
            train = rollout.select(kept)
            batch = self.objective.prepare(self.objective.compute_advantages(train.batch))
            view = UpdateView(batch=batch, hidden=train.hidden, model=self.model,
                              lr=self.optimizer.param_groups[0]["lr"], step=step)
            t = time.perf_counter()
            for probe in self.probes:
                diag.update(probe.before_update(view))
            timers["diagnostics"] += time.perf_counter() - t
            t = time.perf_counter()
            update_metrics = policy_update(self.objective, batch, self.engine.forward, self.optimizer, self.params,
                                           self.updates, self.generator, aux=self.engine.auxiliary_updates())
            timers["update"] += time.perf_counter() - t
            t = time.perf_counter()
            for probe in self.probes:
                diag.update(probe.after_update(view, update_metrics))
            timers["diagnostics"] += time.perf_counter() - t
        else:
            metrics["update/no_signal"] = 1.0
        self.scheduler.step()
        metrics.update(update_metrics)
        metrics.update(diag)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        counts = self.engine.reward.counters()  # rewards that failed, ran out of time or memory, or were refused, so far
        metrics.update({f"reward/{k}": float(counts[k]) for k in ("errors", "timeouts", "oom", "refused")})
        self._check_finite(update_metrics)

        if c.eval.every and ((step + 1) % c.eval.every == 0 or step + 1 == c.optim.steps) and self.heldout:
            t = time.perf_counter()
            metrics.update(evaluate(self.engine, self.heldout[:c.eval.size], c.eval.n_samples, c.eval.k))
            timers["eval"] += time.perf_counter() - t
        self.history.append(metrics)
        for probe in self.probes:
            metrics.update(probe.after_step(self.history))
        total = time.perf_counter() - t_step
        for k, v in timers.items():
            metrics[f"time/{k}_s"] = v
        metrics["time/step_s"] = total
        metrics["perf/tokens_per_s"] = rollout.generated_tokens / max(timers["generate"], 1e-9)
        metrics["perf/diagnostics_share"] = timers["diagnostics"] / max(total - timers["eval"], 1e-9)
        self.objective.on_step_end(metrics)
        self._apply_actions(self.objective.pop_actions(), metrics)
        self._save_samples(step, rollout)
        self.step_index += 1
        return metrics

    def _fill(self, rollout: Rollout) -> tuple[Rollout, torch.Tensor, int]:
        """The sampling knob's keep-mask; a refilling strategy (dynamic sampling, DAPO) samples more rollout batches
        while too few rows are kept, up to ``optim.max_gen_batches``."""
        keep = self.objective.keep(rollout.batch)
        tries = 1
        while int(keep.sum()) < rollout.batch.batch_size and tries < self.config.optim.max_gen_batches \
                and self.objective.sampling.refill:
            more = self.engine.rollout(self.step_index, self.config.optim.prompts_per_step)
            keep = torch.cat([keep, self.objective.keep(more.batch)])
            rollout = rollout.concat(more, self.tokenizer.pad_token_id)
            tries += 1
        return rollout, keep, tries

    def _apply_actions(self, actions: set[str], metrics: dict[str, Any]) -> None:
        """Honour component requests: copy the policy into the reference (ProRL-style resets), clear AdamW state."""
        if "reset_reference" in actions:
            self.engine.reset_reference()
            metrics["actions/reset_reference"] = 1.0
        if "reset_optimizer" in actions:
            self.optimizer.state.clear()
            metrics["actions/reset_optimizer"] = 1.0

    def _check_finite(self, update_metrics: dict[str, float]) -> None:
        if update_metrics.get("update/skipped", 0) > 0:
            self.nonfinite_streak += 1
            print(f"entrolab: step {self.step_index}: {int(update_metrics['update/skipped'])} optimizer step(s) "
                  "skipped for a non-finite loss or gradient (weights not updated)")
        else:
            self.nonfinite_streak = 0
        if self.nonfinite_streak >= self.config.optim.max_nonfinite_steps:
            raise TrainingError(
                f"{self.nonfinite_streak} steps in a row had non-finite losses or gradients (optim.max_nonfinite_steps)"
                "; stopping. Lower optim.lr, check the reward function, or use model.dtype=float32. The last "
                "checkpoint is intact; --resume continues from it.")

    # ------------------------------------------------------------------------------------------ records
    def _save_samples(self, step: int, rollout: Rollout) -> None:
        batch = rollout.batch
        for i in range(min(self.config.logging.samples_per_step, batch.batch_size)):
            L = int(batch.mask[i].sum())
            ids = batch.response_ids[i, :L].tolist()
            self.samples_log.append({
                "step": step, "id": getattr(rollout.examples[i], "id", str(i)), "prompt": rollout.examples[i].prompt,
                "response": rollout.texts[i], "tokens": self.tokenizer.convert_ids_to_tokens(ids),
                "entropy": [round(float(x), 5) for x in batch.old_entropy[i, :L]],
                "reward": float(batch.rewards[i]), "correct": bool(rollout.correct[i]),
            })

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step_index, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_state(self.generator),
            "data_position": self.engine.stream.position, "objective": self.objective.state_dict(),
            "nonfinite_streak": self.nonfinite_streak, "engine": self.engine.state_dict(),
        }

    def save_checkpoint(self) -> Path:
        return ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step_index, self.model, self._trainer_state(),
                                    self.config.checkpoint.keep_last, self._extra_models(),
                                    run=rundir.manifest_record(self.config))

    def _extra_models(self) -> dict[str, torch.nn.Module]:
        # The reference is saved too (a method may have reset it to a later policy: ProRL), and the critic.
        return self.engine.checkpoint_models()

    def _restore(self, point: Path) -> None:
        state = ckpt.load_checkpoint(point, self.model, self._extra_models())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.objective.load_state_dict(state["objective"])
        self.engine.load_state_dict(state.get("engine", {}))
        self.step_index = state["step"]
        self.engine.stream.seek(state["data_position"])
        self.nonfinite_streak = state.get("nonfinite_streak", 0)
        ckpt.set_rng_state(state["rng"], self.generator)
        self.history = self.metrics_log.truncate_after(self.step_index - 1)
        self.samples_log.truncate_after(self.step_index - 1)

    @classmethod
    def resume(cls, run_dir: Path, model=None, tokenizer=None, overrides: Sequence[str] = ()) -> "Trainer":
        """Rebuild a run from ``run_dir/config.yaml`` (plus ``key=value`` overrides of safe keys) and its newest
        intact checkpoint (``train/rundir.py``: what is refused, skipped and cleaned up)."""
        config = rundir.resume_config(Path(run_dir), overrides)
        point = rundir.resume_point(Path(run_dir), config)  # before the model loads: refusals cost nothing
        trainer = cls(config, model=model, tokenizer=tokenizer, run_dir=Path(run_dir), mode=rundir.RESUME)
        trainer._restore(point)
        return trainer

    # ------------------------------------------------------------------------------------------ the loop
    def train(self) -> list[dict[str, Any]]:
        c = self.config
        tb = TensorBoardLog(self.run_dir / "tensorboard", c.logging.tensorboard)
        mode = ("rich" if sys.stdout.isatty() else "plain") if c.logging.progress else "off"
        progress = Progress(c.optim.steps, self.step_index, mode, "+".join(self.objective.methods))
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
