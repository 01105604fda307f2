"""Diagnostics as probes: objects the training loop calls around each update and knows nothing else about.

A probe implements any of

- ``before_update(view) -> metrics``: after advantages, before the optimizer steps (the rollout policy's state);
- ``after_update(view, update_metrics) -> metrics``: after the optimizer steps, on the same batch;
- ``after_step(history) -> metrics``: once the step's record (the last item of ``history``) is complete;

and says whether it needs the rollout pass's hidden states (``needs_hidden``), which the engine then keeps.

The probes of ``entrolab train`` (``default_probes``):

- :class:`EntropyCovarianceProbe`: the entropy distribution of the rollout policy and the centred-covariance
  statistics of 2505.22617 (Eq. 10, Table 1's tail means), with the natural-PG proxy ΔH ≈ −η·Cov (Theorem 2);
- :class:`DeltaHProbe`: predicted (Lemma 1, from the measured logit change) and actual entropy change on the same
  states after the update, on one group per step;
- :class:`LawProbe`: the live fit of R = −a·exp(H) + b every k steps;
- :class:`NoSignalProbe`: steps in a row without learning signal (every group's rewards identical), with a warning.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..batch import RolloutBatch
from ..engine.forward import lm_head, response_hidden, shared_prompt_response_hidden
from ..ops.dynamics import PAPER_TAIL_FRACTIONS, centered_covariance, covariance_tail_means, entropy_change_from_hidden
from ..ops.law import fit_law
from ..ops.masked import masked_mean, masked_quantiles

__all__ = ["DeltaHProbe", "EntropyCovarianceProbe", "LawProbe", "NoSignalProbe", "Probe", "UpdateView",
           "default_probes", "no_signal_message"]


@dataclass
class UpdateView:
    """What a probe sees of one update."""

    batch: RolloutBatch
    """The batch the update trains on (advantages computed, ``prepare`` applied)."""
    hidden: Optional[torch.Tensor]
    """Its rows' hidden states from the rollout pass, when kept (``needs_hidden``)."""
    model: Any
    """The policy (before the update in ``before_update``, after it in ``after_update``)."""
    lr: float
    """The learning rate of this update."""
    step: int
    """The RL step."""


class Probe:
    """Base: every hook optional (module doc)."""

    needs_hidden: bool = False

    def before_update(self, view: UpdateView) -> dict[str, float]:
        return {}

    def after_update(self, view: UpdateView, update_metrics: dict[str, float]) -> dict[str, float]:
        return {}

    def after_step(self, history: list[dict[str, Any]]) -> dict[str, float]:
        return {}


def _tail_key(f: float) -> str:
    return f"dynamics/cov_top_{f * 100:g}pct"


class EntropyCovarianceProbe(Probe):
    """Entropy distribution of the rollout policy and the centred-covariance statistics (2505.22617 Eq. 10,
    Table 1)."""

    def __init__(self, high_entropy_threshold: float):
        self.high_entropy_threshold = high_entropy_threshold

    def before_update(self, view: UpdateView) -> dict[str, float]:
        batch = view.batch
        m = batch.mask
        ent = batch.old_entropy
        out: dict[str, float] = {"entropy/mean": float(masked_mean(ent, m))}
        for q, v in zip((10, 50, 90), masked_quantiles(ent, m, (0.1, 0.5, 0.9))):
            out[f"entropy/p{q}"] = v
        out["entropy/high_token_frac"] = float(masked_mean((ent > self.high_entropy_threshold).float(), m))
        cov = centered_covariance(batch.old_logprobs, batch.advantages, m)
        out["dynamics/cov_mean"] = float(masked_mean(cov, m))
        for f, v in covariance_tail_means(cov, m, PAPER_TAIL_FRACTIONS).items():
            out[_tail_key(f)] = v
        # Theorem 2 (natural PG) read with η = lr: ΔH ≈ −η·Cov(log π, A); a cheap, scale-free-in-sign proxy.
        out["dynamics/predicted_delta_H_npg"] = -view.lr * out["dynamics/cov_mean"]
        return out


class DeltaHProbe(Probe):
    """Predicted (Lemma 1, measured Δz) and actual entropy change on the same states after the update, on up to
    ``rows`` responses of one group, a different group each step (deterministic: no random numbers are drawn).
    Responses to one prompt share it, so the prompt's forward pass runs once."""

    needs_hidden = True

    def __init__(self, rows: int, temperature: float, chunk_rows: int):
        self.rows, self.temperature, self.chunk_rows = rows, temperature, chunk_rows
        self._w_before: Optional[tuple[torch.Tensor, Optional[torch.Tensor]]] = None

    def before_update(self, view: UpdateView) -> dict[str, float]:
        w, b = lm_head(view.model)
        self._w_before = (w.detach().clone(), None if b is None else b.detach().clone())
        return {}

    def after_update(self, view: UpdateView, update_metrics: dict[str, float]) -> dict[str, float]:
        if update_metrics.get("update/skipped", 0) >= update_metrics.get("update/steps", 1):
            return {}  # every optimizer step was skipped: the weights did not move
        batch, hidden_before = view.batch, view.hidden
        k = self.rows
        if 0 < k < batch.batch_size:
            groups = torch.unique(batch.group_ids)
            g = groups[view.step % len(groups)]
            rows = torch.nonzero(batch.group_ids == g).flatten()[:k]
            batch, hidden_before = batch.select(rows), hidden_before[rows]
        ids, att = batch.extras["input_ids"], batch.extras["attention_mask"]
        P = ids.shape[1] - batch.response_ids.shape[1]
        # Only the columns these responses use: the batch is padded to its longest response.
        used = att[:, P:].any(0).nonzero()
        T = int(used.max()) + 1 if used.numel() else 1
        ids, att, mask, hidden_before = ids[:, :P + T], att[:, :P + T], batch.mask[:, :T], hidden_before[:, :T]
        size = self.chunk_rows or ids.shape[0]
        model = view.model
        with torch.no_grad():
            if ids.shape[0] > 1 and torch.equal(ids[:, :P], ids[:1, :P].expand_as(ids[:, :P])) \
                    and torch.equal(att[:, :P], att[:1, :P].expand_as(att[:, :P])):
                hidden_after = shared_prompt_response_hidden(model, ids, att, P)
            else:
                hidden_after = torch.cat([response_hidden(model, ids[s:s + size], att[s:s + size], P)
                                          for s in range(0, ids.shape[0], size)])
        valid = mask > 0
        w_before = self._w_before
        w_after, b_after = lm_head(model)
        pred, act = entropy_change_from_hidden(hidden_before[valid], w_before[0], hidden_after[valid],
                                               w_after.detach(), self.temperature, w_before[1],
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


class LawProbe(Probe):
    """The live fit of R = −a·exp(H) + b (2505.22617 Eq. 6) on the run's (entropy, reward accuracy) so far, every
    ``every`` steps: ``law/a``, ``law/b``, ``law/ceiling`` (= −a + b), ``law/r2``."""

    def __init__(self, every: int):
        self.every = every

    def after_step(self, history: list[dict[str, Any]]) -> dict[str, float]:
        if not self.every or (history[-1]["step"] + 1) % self.every:
            return {}
        H = [r["entropy/mean"] for r in history if "entropy/mean" in r]
        R = [r["reward/accuracy"] for r in history if "entropy/mean" in r]
        try:
            fit = fit_law(H, R)
        except ValueError:
            return {}
        return {"law/a": fit.a, "law/b": fit.b, "law/ceiling": fit.ceiling, "law/r2": fit.r2}


class NoSignalProbe(Probe):
    """Counts the steps in a row in which every group's rewards were identical (or nothing was kept to train on):
    no learning signal from the rewards, ``update/no_signal_streak``; when it reaches ``warn_after`` it says so, with
    the likely causes. The count continues from the run's history, so a resumed run counts as an uninterrupted one."""

    KEY = "update/no_signal_streak"

    def __init__(self, warn_after: int):
        self.warn_after = warn_after
        self._signal: Optional[bool] = None

    def before_update(self, view: UpdateView) -> dict[str, float]:
        r, g = view.batch.rewards.float(), view.batch.group_ids
        _, inverse = torch.unique(g, return_inverse=True)
        n = int(inverse.max()) + 1 if inverse.numel() else 0
        hi = torch.full((n,), -float("inf")).scatter_reduce(0, inverse, r, "amax")
        lo = torch.full((n,), float("inf")).scatter_reduce(0, inverse, r, "amin")
        self._signal = bool((hi > lo).any())
        return {}

    def after_step(self, history: list[dict[str, Any]]) -> dict[str, float]:
        previous = history[-2].get(self.KEY, 0.0) if len(history) > 1 else 0.0
        streak = previous + 1.0 if not self._signal else 0.0
        self._signal = None
        if self.warn_after and streak == self.warn_after:
            print(f"entrolab: warning: {no_signal_message(history[-1], int(streak))}", file=sys.stderr, flush=True)
        return {self.KEY: streak}


def no_signal_message(record: dict[str, Any], streak: int) -> str:
    """What a run without learning signal is told, with the likely causes for the rewards it sees."""
    reward, acc = record.get("reward/mean", float("nan")), record.get("reward/accuracy", float("nan"))
    head = (f"step {int(record.get('step', 0))}: every group has had identical rewards for {streak} steps in a row "
            f"(reward/mean {reward:.3f}, accuracy {acc:.3f}): the updates have no learning signal. ")
    if acc >= 1.0:
        return head + "Likely cause: the task is too easy for the model (every response is right); use harder data."
    return head + ("Likely causes: the answers are not in the form the verifier reads (the last \\boxed{...}; look at "
                   "samples.jsonl), the task is too hard for this model (try easier questions or a larger rollout.n), "
                   "or the reward function (data.reward_fn) returns the same value for every response.")


def default_probes(diagnostics: Any, temperature: float, chunk_rows: int) -> list[Probe]:
    """The probes ``entrolab train`` runs, from the config's ``diagnostics`` section."""
    probes: list[Probe] = [EntropyCovarianceProbe(diagnostics.high_entropy_threshold)]
    if diagnostics.measure_delta_h:
        probes.append(DeltaHProbe(diagnostics.delta_h_rows, temperature, chunk_rows))
    probes.append(LawProbe(diagnostics.law_refit_every))
    probes.append(NoSignalProbe(diagnostics.no_signal_steps))
    return probes
