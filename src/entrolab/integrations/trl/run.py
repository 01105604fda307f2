"""``entrolab train --engine trl``: an entrolab config run by TRL's GRPOTrainer with entrolab's objective.

The config maps onto TRL's as follows (everything else keeps TRL's defaults): ``rollout.n`` → ``num_generations``,
``optim.prompts_per_step × rollout.n`` → ``per_device_train_batch_size`` (one generation batch per optimizer step),
``optim.ppo_epochs`` → ``num_iterations`` (TRL reuses a generation batch for that many optimizer steps, so
``max_steps = optim.steps × ppo_epochs``), ``rollout.temperature``/``top_p``, ``rollout.budget()`` →
``max_completion_length``, ``optim.lr``/``weight_decay``/``grad_clip``/``warmup_steps``/``schedule``, ``seed``;
``checkpoint.every`` → ``save_steps``; ``logging.tensorboard`` → ``report_to``. The task's prompts (formatted with the
model's chat template) are the dataset, the task's verifier the reward function. TRL's own KL (``beta``) is off: the
method's KL knob is the KL. The run directory holds TRL's output (checkpoints, TensorBoard events,
``trainer_state.json``) and entrolab's ``config.yaml``; ``entrolab analyze RUN_DIR`` reads it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import torch

from ...engine.models import load_policy
from ...env.tasks import Example
from ...errors import ConfigError
from ...train.config import TrainConfig
from ..support import refuse


def _dataset(task: Any, tokenizer: Any, n: int, answer_key: str = "answer"):
    from datasets import Dataset

    rows = []
    for i, ex in enumerate(task.train_examples()):
        if i >= n:
            break
        rows.append({"prompt": task.format_prompt(tokenizer, ex), "question": ex.prompt, answer_key: ex.answer,
                     "example_id": ex.id})
    return Dataset.from_list(rows)


class TaskReward:
    """The task's verifier as a TRL reward function ``(prompts, completions, answer, ...) -> [float]``."""

    def __init__(self, task: Any, format_weight: float = 0.0):
        self.task = task
        self.format_weight = format_weight
        self.__name__ = "verifier"

    def __call__(self, prompts, completions, answer, question=None, example_id=None, **_: Any) -> list[float]:
        out = []
        for i, (c, a) in enumerate(zip(completions, answer)):
            text = c if isinstance(c, str) else (c[-1].get("content", "") if c else "")
            ex = Example(id=str(example_id[i]) if example_id else str(i),
                         prompt=str(question[i]) if question else "", answer=str(a))
            out.append(float(self.task.score(text, ex, self.format_weight)[0]))
        return out


def trl_args(config: TrainConfig, run_dir: Path, **overrides: Any):
    from trl import GRPOConfig

    c = config
    kw: dict[str, Any] = dict(
        output_dir=str(run_dir), per_device_train_batch_size=c.optim.prompts_per_step * c.rollout.n,
        num_generations=c.rollout.n, gradient_accumulation_steps=1, steps_per_generation=1,
        num_iterations=c.optim.ppo_epochs, max_steps=c.optim.steps * c.optim.ppo_epochs,
        max_completion_length=c.rollout.budget(), temperature=c.rollout.temperature, top_p=c.rollout.top_p,
        learning_rate=c.optim.lr, weight_decay=c.optim.weight_decay, max_grad_norm=c.optim.grad_clip or 0.0,
        warmup_steps=c.optim.warmup_steps,
        lr_scheduler_type=("constant_with_warmup" if c.optim.schedule == "constant" and c.optim.warmup_steps
                           else c.optim.schedule), beta=0.0, loss_type="dapo",
        seed=c.seed, logging_steps=1, save_steps=max(1, c.checkpoint.every * c.optim.ppo_epochs),
        save_total_limit=c.checkpoint.keep_last or None, use_cpu=not torch.cuda.is_available(),
        report_to=["tensorboard"] if c.logging.tensorboard else [],
        disable_tqdm=not c.logging.progress, bf16=False, fp16=False,
        # TRL turns gradient checkpointing on by default, which makes HF generation run without its KV cache
        # (every new token recomputes the whole prompt): ~30x slower rollouts on the default's few-shot prompts
        gradient_checkpointing=False,
    )
    kw.update(overrides)
    return GRPOConfig(**kw)


def build_trl_trainer(config: TrainConfig, run_dir: Optional[Path] = None, model: Any = None, tokenizer: Any = None,
                      **arg_overrides: Any):
    """The ``EntrolabGRPOTrainer`` of an entrolab config (module docstring), its run directory created."""
    from .trainer import EntrolabGRPOTrainer

    c = config.validate()
    objective = c.algorithm.objective()
    refuse(objective, "trl")
    if c.model.lora_rank > 0:
        raise ConfigError("model.lora_rank: `entrolab train --engine trl` trains full weights; pass a peft_config to "
                          "EntrolabGRPOTrainer from Python, or use the native engine")
    if model is None:
        model, tokenizer = load_policy(c.model.name, c.model.dtype, c.model.gguf_file, seed=c.seed)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    method = "+".join(objective.methods) or "custom"
    run_dir = Path(run_dir or c.logging.run_dir or f"runs/{method}-trl-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(c.to_yaml(), encoding="utf-8")
    task = c.data.build_task(c.seed)
    n_prompts = c.optim.prompts_per_step * c.optim.steps
    trainer = EntrolabGRPOTrainer(
        model=model, processing_class=tokenizer, reward_funcs=[TaskReward(task, c.data.format_reward)],
        args=trl_args(c, run_dir, **arg_overrides), train_dataset=_dataset(task, tokenizer, max(n_prompts, 8)),
        objective=objective,
    )
    return trainer, run_dir


def train_with_trl(config: TrainConfig, resume: Optional[str] = None) -> int:
    """Run ``config`` through TRL (``entrolab train --engine trl``)."""
    trainer, run_dir = build_trl_trainer(config)
    print(f"entrolab: TRL run directory {run_dir}")
    trainer.train(resume_from_checkpoint=resume)
    last = next((h for h in reversed(trainer.state.log_history) if "entropy/mean" in h), {})
    summary = ", ".join(f"{k} {last[k]:.3f}" for k in ("reward", "entropy/mean") if isinstance(last.get(k), float))
    print(f"entrolab: done, {trainer.state.global_step} TRL steps in {run_dir}" + (f"; last step: {summary}"
                                                                                   if summary else ""))
    print(f"entrolab: see the run with `entrolab analyze {run_dir}`")
    return 0
