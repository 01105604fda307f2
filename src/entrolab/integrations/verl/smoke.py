"""A cluster smoke check of the verl integration, no GPU or model needed:

    python -m entrolab.integrations.verl.smoke [--workers 2] [--method adaptive_entropy] [--steps 2]

starts a Ray worker group of CPU workers (verl's ``RayWorkerGroup``, ``use_gpu=False``) and checks, on every rank,
that verl's ``verl.plugins`` entry point registered entrolab's policy losses with no environment variable, that the
whole loss the driver sends each step (``set_loss_fn``) arrives carrying the driver's controller state, and that the
ranks' metrics come back and reduce. Each rank computes the loss on a synthetic micro-batch in verl's nested
(no-padding) layout, the one verl's FSDP engine hands a loss function. The test suite runs it with two workers.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional, Sequence

import torch


def nested_micro_batch(seed: int, B: int = 4, prompt_lens: Sequence[int] = (3, 2, 4, 3),
                       response_lens: Sequence[int] = (5, 3, 6, 4), dp_size: int = 1,
                       batch_num_tokens: Optional[int] = None, global_batch_size: Optional[int] = None,
                       requires_grad: bool = True) -> tuple[Any, dict[str, Any], dict[str, torch.Tensor]]:
    """``(data, model_output, padded)``: a micro-batch as verl's FSDP engine gives a loss function — a TensorDict of
    nested jagged ``prompts``, ``responses``, ``response_mask``, ``old_log_probs``, ``advantages``, ``entropy`` (the
    rollout policy's) with ``dp_size``/``batch_num_tokens``/``global_batch_size``, and a model output whose
    ``log_probs``/``entropy`` are nested over each whole sequence (position P−1+t is response token t) — and the
    same tensors padded (B, T) (``lp``, ``ent`` are the leaves that receive gradients)."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    def nested(rows):
        return torch.nested.as_nested_tensor(rows, layout=torch.jagged)

    g = torch.Generator().manual_seed(seed)
    P, R = list(prompt_lens)[:B], list(response_lens)[:B]
    T = max(R)
    old = -torch.rand(B, T, generator=g) * 2
    lp = (old + 0.1 * torch.randn(B, T, generator=g)).clamp(max=-1e-3)
    ent = torch.rand(B, T, generator=g) * 2
    adv = torch.randn(B, 1, generator=g).expand(B, T).clone()
    old_ent = torch.rand(B, T, generator=g) * 2
    mask = torch.zeros(B, T)
    for i, r in enumerate(R):
        mask[i, :r] = 1
    lp.requires_grad_(requires_grad)
    ent.requires_grad_(requires_grad)

    def over_sequence(x):
        return nested([torch.cat([torch.zeros(P[i] - 1), x[i, :R[i]], torch.zeros(1)]) for i in range(B)])

    data = TensorDict({
        "prompts": nested([torch.arange(P[i]) + 1 for i in range(B)]),
        "responses": nested([torch.arange(R[i]) + 10 for i in range(B)]),
        "response_mask": nested([torch.ones(R[i]) for i in range(B)]),
        "old_log_probs": nested([old[i, :R[i]] for i in range(B)]),
        "advantages": nested([adv[i, :R[i]] for i in range(B)]),
        "entropy": nested([old_ent[i, :R[i]] for i in range(B)]),
    }, batch_size=[B])
    tu.assign_non_tensor(data, dp_size=dp_size, batch_num_tokens=batch_num_tokens or int(sum(R)),
                         global_batch_size=global_batch_size or B)
    output = {"log_probs": over_sequence(lp), "entropy": over_sequence(ent)}
    return data, output, {"old": old, "lp": lp, "ent": ent, "adv": adv, "mask": mask, "old_ent": old_ent}


def _worker_class():
    from verl.single_controller.base import Worker
    from verl.single_controller.base.decorator import Dispatch, register

    class SmokeWorker(Worker):
        """A CPU rank: no model, the loss on a synthetic micro-batch."""

        def __init__(self):
            super().__init__()
            self.loss_fn = None

        @register(dispatch_mode=Dispatch.ONE_TO_ALL)
        def set_loss_fn(self, loss_fn):
            self.loss_fn = loss_fn

        @register(dispatch_mode=Dispatch.ONE_TO_ALL)
        def plugin_info(self):
            import os
            import sys

            from verl.trainer.ppo import core_algos

            return {"rank": self.rank, "world_size": self.world_size,
                    "losses": sorted(k for k in core_algos.POLICY_LOSS_REGISTRY if k.startswith("entrolab/")),
                    "advantages": sorted(k for k in core_algos.ADV_ESTIMATOR_REGISTRY if k.startswith("entrolab/")),
                    "plugin_loaded": "entrolab.integrations.verl.plugin" in sys.modules,
                    "env": {k: os.environ.get(k) for k in ("VERL_USE_EXTERNAL_MODULES", "ENTROLAB_OVERRIDES")}}

        @register(dispatch_mode=Dispatch.ONE_TO_ALL)
        def train_step(self, seed: int):
            data, output, t = nested_micro_batch(seed * 100 + self.rank, dp_size=self.world_size,
                                                 batch_num_tokens=18 * self.world_size,
                                                 global_batch_size=4 * self.world_size)
            loss, metrics = self.loss_fn(model_output=output, data=data)
            loss.backward()
            from .state import reduce_rank_metrics

            objective = self.loss_fn.objective()
            return {"rank": self.rank, "step": self.loss_fn.step, "state": objective.state_dict(),
                    "loss": float(loss), "grad_lp": float(t["lp"].grad.abs().sum()),
                    "grad_ent": float(t["ent"].grad.abs().sum()), "metrics": reduce_rank_metrics([metrics])}

    return SmokeWorker


def run(workers: int = 2, method: str = "adaptive_entropy", steps: int = 2, seed: int = 0) -> dict[str, Any]:
    """Start ``workers`` CPU ranks, run ``steps`` steps, return what every rank saw (see the module docstring)."""
    import ray
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup

    from .state import DriverState, reduce_rank_metrics

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=max(4, workers), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    try:
        pool = RayResourcePool([workers], use_gpu=False, max_colocate_count=1)
        wg = RayWorkerGroup(resource_pool=pool, ray_cls_with_init=RayClassWithInitArgs(cls=ray.remote(_worker_class())),
                            device_name="cpu")
        report: dict[str, Any] = {"plugin": wg.plugin_info(), "steps": []}
        driver = DriverState(method)
        g = torch.Generator().manual_seed(seed)
        for step in range(steps):
            B, T = 8, 6
            rewards = torch.zeros(B, T)
            rewards[:, -1] = (torch.rand(B, generator=g) > 0.5).float()  # verl puts the score on the last token
            fields = {"response_mask": torch.ones(B, T), "old_log_probs": -torch.rand(B, T, generator=g),
                      "token_level_rewards": rewards, "uid": [f"p{i // 4}" for i in range(B)],
                      "entropy": torch.rand(B, T, generator=g) * 0.05 * (1 + step)}  # low: a bonus rises
            _, monitor = driver.prepare(fields)
            loss_fn = driver.loss_fn()
            wg.set_loss_fn(loss_fn)
            ranks = wg.train_step(seed + step)
            reduced = reduce_rank_metrics([r["metrics"] for r in ranks])
            sent = loss_fn.state
            logged = driver.after_step({f"actor/{k}": v for k, v in reduced.items()})
            report["steps"].append({"sent_state": sent, "ranks": ranks, "reduced": reduced, "logged": logged,
                                    "monitor": monitor, "driver_state_after": driver.objective.state_dict()})
        return report
    finally:
        if started:
            ray.shutdown()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--method", default="adaptive_entropy")
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args(argv)
    report = run(args.workers, args.method, args.steps)
    ok = all("entrolab/clip_cov" in r["losses"] for r in report["plugin"])
    for s in report["steps"]:
        ok &= all(r["state"] == s["sent_state"] for r in s["ranks"])
    print(json.dumps(report, indent=1, default=str))
    print("entrolab verl smoke check:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
