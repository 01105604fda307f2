"""``EntrolabGRPOTrainer``: TRL's ``GRPOTrainer`` with entrolab's objective in place of TRL's advantages and loss.

    trainer = EntrolabGRPOTrainer(model=model, processing_class=tok, reward_funcs=[reward], args=GRPOConfig(...),
                                  train_dataset=ds, objective=methods.build("clip_cov"))
    trainer.train()

What it overrides, and the engine contract it implements (docs/architecture.md):

- ``_calculate_rewards``: TRL's reward functions run as usual; the trainer keeps their weighted sum as the batch's
  ``rewards``;
- ``_generate_and_score_completions``: after TRL generated and scored, one no-grad forward gives the rollout policy's
  log-probs and entropies (``old_logprobs``, ``old_entropy``), a frozen copy of the initial policy the reference's
  (``ref_logprobs``) when the objective needs it; the components compute their rollout extras from the decoded
  completions, the dataset's answers and the tokenizer (the ``texts`` and ``tokenizer`` primitives); the sampling
  knob's keep-mask drops samples (their tokens leave the loss: DAPO's filter without refill); then entrolab's
  advantage knob and ``prepare`` run on the whole generation batch;
- ``_compute_loss``: the current policy's log-probs and entropies with gradient (TRL's own
  ``_get_per_token_logps_and_entropies``) and ``PolicyObjective.__call__``; the loss is normalised over the
  accumulation window like TRL's ``dapo`` loss (global token count), so gradient accumulation is exact for
  ``token-mean``;
- controllers advance once per optimizer step (``on_step_end`` with the step's entrolab metrics), engine actions
  (``reset_reference``, ``reset_optimizer``) are honoured, and the objective's state is saved in every TRL
  checkpoint (``entrolab_state.pt``) and restored on ``train(resume_from_checkpoint=...)``;
- entrolab's metrics (``entropy/*``, ``dynamics/*`` with the covariance tails, ``clip/*``, ``loss/*``, controller
  values) go to TRL's logs (TensorBoard, ``trainer_state.json``).

Single process: groups are the ``num_generations`` consecutive completions of one prompt, as TRL's sampler lays
them out; a multi-process run computes advantages per process (exact when each process holds whole groups).
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from ...batch import RolloutBatch
from ...env.tasks import Example
from ...knobs.extras import RolloutContext
from ...objective import PolicyObjective
from ...train.probes import EntropyCovarianceProbe
from ..support import PROVIDES, refuse

STATE_FILE = "entrolab_state.pt"
_PREFIX = "entrolab_"


def _prompt_ids(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
    out = []
    for row, m in zip(prompt_ids.tolist(), prompt_mask.bool().tolist()):
        toks = [t for t, keep in zip(row, m) if keep]
        out.append(int.from_bytes(hashlib.blake2b(str(toks).encode(), digest_size=7).digest(), "little"))
    return torch.tensor(out, dtype=torch.long)


class _StepHooks(TrainerCallback):
    """Controllers, engine actions and the objective's state, at TRL's step and checkpoint boundaries."""

    def __init__(self, trainer: "EntrolabGRPOTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._entrolab_step_end()

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            self.trainer.save_entrolab_state(ckpt)


class EntrolabGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer running an entrolab ``PolicyObjective`` (module docstring). ``answer_key`` names the dataset
    column with each prompt's gold answer (the ``texts`` primitive hands it to components as ``Example.answer``)."""

    def __init__(self, *args: Any, objective: PolicyObjective, answer_key: str = "answer",
                 high_entropy_threshold: float = 0.672, **kwargs: Any):
        refuse(objective, "trl")
        self.objective = objective
        self.answer_key = answer_key
        self._entrolab_probe = EntropyCovarianceProbe(high_entropy_threshold)
        self._entrolab_rewards: Optional[torch.Tensor] = None
        self._entrolab_step_metrics: dict[str, list[float]] = {}
        super().__init__(*args, **kwargs)
        self._entrolab_ref = None
        if objective.needs_reference:
            self._entrolab_ref = copy.deepcopy(self.accelerator.unwrap_model(self.model)).eval()
            for p in self._entrolab_ref.parameters():
                p.requires_grad_(False)
        self.add_callback(_StepHooks(self))

    # ------------------------------------------------------------------ rollout side
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        w = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        self._entrolab_rewards = torch.nan_to_num(rewards_per_func * w, nan=0.0).sum(dim=1)
        self._entrolab_texts = list(completions)
        self._entrolab_inputs = inputs
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return out
        n = out["completion_ids"].shape[0]
        start = self.accelerator.process_index * n
        rewards = self._entrolab_rewards[start:start + n].detach().float().cpu()
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        am = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        T = out["completion_ids"].shape[1]
        with torch.no_grad():
            old_lp, old_ent, _ = self._get_per_token_logps_and_entropies(self.model, ids, am, T, compute_entropy=True)
            ref = None
            if self._entrolab_ref is not None:
                ref, _, _ = self._get_per_token_logps_and_entropies(self._entrolab_ref, ids, am, T)
        if out.get("old_per_token_logps") is not None:
            old_lp = out["old_per_token_logps"]
        mask = out["completion_mask"].float()
        if out.get("tool_mask") is not None:
            mask = mask * out["tool_mask"].float()
        device = mask.device
        group_ids = torch.arange(n) // self.num_generations + start // self.num_generations
        batch = RolloutBatch(
            response_ids=out["completion_ids"].cpu(), response_mask=mask.cpu(), old_logprobs=old_lp.float().cpu(),
            rewards=rewards, group_ids=group_ids, old_entropy=old_ent.float().cpu(),
            ref_logprobs=None if ref is None else ref.float().cpu(),
            extras={"prompt_id": _prompt_ids(out["prompt_ids"].cpu(), out["prompt_mask"].cpu())},
            step=int(self.state.global_step),
        )
        if self.objective.engine_primitives & PROVIDES["trl"]:
            batch = batch.replace(extras={**batch.extras, **self.objective.rollout_extras(self._context(batch))})
        keep = self.objective.keep(batch)
        if not bool(keep.all()):
            batch = batch.replace(response_mask=batch.response_mask * keep[:, None].float())
        batch = self.objective.prepare(self.objective.compute_advantages(batch))
        for k, v in self._entrolab_probe.before_update(SimpleNamespace(batch=batch, lr=self._get_learning_rate())
                                                       ).items():
            self._metrics["train"][k].append(v)
        self._metrics["train"]["sampling/kept_frac"].append(float(keep.float().mean()))
        out["completion_mask"] = batch.response_mask.to(device=device, dtype=out["completion_mask"].dtype)
        if not bool(keep.all()):  # the loss normaliser counts the kept tokens only, as if the rest were never drawn
            kept = batch.response_mask.sum().to(device)
            out["num_items_in_batch"] = self.accelerator.gather(kept).sum()
        out.pop("tool_mask", None)
        out["advantages"] = batch.advantages.to(device)
        fields = {"old_logprobs": batch.old_logprobs, "old_entropy": batch.old_entropy, "rewards": batch.rewards,
                  "group_ids": batch.group_ids, "ref_logprobs": batch.ref_logprobs}
        for k, v in fields.items():
            if v is not None:
                out[_PREFIX + k] = v.to(device)
        for k, v in batch.extras.items():
            out[f"{_PREFIX}extra.{k}"] = v.to(device)
        return out

    def _context(self, batch: RolloutBatch) -> RolloutContext:
        examples = [Example(id=str(i), prompt=str(x.get("prompt", "")), answer=str(x.get(self.answer_key, "")))
                    for i, x in enumerate(self._entrolab_inputs)]
        texts = [t if isinstance(t, str) else (t[-1].get("content", "") if t else "") for t in self._entrolab_texts]
        return RolloutContext(batch=batch, texts=texts, examples=examples,
                              correct=[bool(r > 0) for r in batch.rewards.tolist()],
                              tokenizer=self.processing_class, temperature=self.temperature)

    # ------------------------------------------------------------------ update side
    def _compute_loss(self, model, inputs):
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        am = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        T = inputs["completion_ids"].shape[1]
        lp, ent, _ = self._get_per_token_logps_and_entropies(model, ids, am, T, compute_entropy=True)
        mask = inputs["completion_mask"].float()
        get = (lambda k: inputs.get(_PREFIX + k))
        mode = "train" if self.model.training else "eval"
        num_tokens = None
        if mode == "train":
            window = self.current_gradient_accumulation_steps / self.args.steps_per_generation
            num_tokens = float(inputs["num_items_in_batch"]) / self.accelerator.num_processes * window
        adv = inputs["advantages"]
        micro = RolloutBatch(
            response_ids=inputs["completion_ids"], response_mask=mask,
            old_logprobs=(get("old_logprobs") if get("old_logprobs") is not None else lp.detach()).float(),
            rewards=get("rewards") if get("rewards") is not None else torch.zeros(mask.shape[0], device=mask.device),
            group_ids=get("group_ids") if get("group_ids") is not None else torch.arange(mask.shape[0]),
            logprobs=lp.float(), entropy=ent.float(), old_entropy=get("old_entropy"),
            ref_logprobs=get("ref_logprobs"), advantages=(adv if adv.dim() == 2 else adv[:, None] * mask).float(),
            extras={k[len(_PREFIX) + len("extra."):]: v for k, v in inputs.items()
                    if k.startswith(_PREFIX + "extra.")},
            step=int(self.state.global_step), global_num_tokens=num_tokens,
            global_num_seqs=(float(mask.shape[0]) * self.current_gradient_accumulation_steps
                             if mode == "train" else None),
        )
        loss, metrics = self.objective(micro)
        for k, v in metrics.items():
            self._metrics[mode][k].append(v)
            if mode == "train":
                self._entrolab_step_metrics.setdefault(k, []).append(v)
        return loss

    # ------------------------------------------------------------------ per step, checkpoints
    def _entrolab_step_end(self) -> None:
        step = {k: sum(v) / len(v) for k, v in self._entrolab_step_metrics.items() if v}
        self._entrolab_step_metrics = {}
        self.objective.on_step_end(step)
        actions = self.objective.pop_actions()
        if "reset_reference" in actions and self._entrolab_ref is not None:
            self._entrolab_ref.load_state_dict(self.accelerator.unwrap_model(self.model).state_dict())
        if "reset_optimizer" in actions and self.optimizer is not None:
            self.optimizer.state.clear()
        for slot, st in self.objective.state_dict().items():
            for k, v in _scalars(st):
                self._metrics["train"][f"controller/{slot}/{k}"].append(v)

    def save_entrolab_state(self, checkpoint_dir: str | os.PathLike) -> Path:
        d = Path(checkpoint_dir)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".entrolab_state.", suffix=".tmp")
        os.close(fd)
        torch.save({"methods": list(self.objective.methods), "objective": self.objective.state_dict()}, tmp)
        os.replace(tmp, d / STATE_FILE)
        return d / STATE_FILE

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / STATE_FILE
        if path.is_file():
            state = torch.load(path, weights_only=False)
            self.objective.load_state_dict(state["objective"])


def _scalars(state: Any, prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if isinstance(state, dict):
        for k, v in state.items():
            out += _scalars(v, f"{prefix}{k}/")
    elif isinstance(state, (int, float)) and not isinstance(state, bool):
        out.append((prefix.rstrip("/"), float(state)))
    return out
