"""The recipe entry: verl's PPO trainer with entrolab's whole loss, driver-side advantages, controller state and
monitor.

    python -m entrolab.integrations.verl.main_ppo <verl's Hydra overrides> +entrolab.method=adaptive_entropy \\
        '+entrolab.overrides={objective.0.target: 0.3}'

What the recipe trainer (a subclass of verl's synchronous v1 trainer, ``trainer.v1.trainer_mode=sync``) adds, at
verl's own hooks:

- before anything runs, the method is checked (``support.refuse``): a method verl cannot run stops here with the
  reason; ``calculate_entropy`` and the reference model are switched on when the objective needs them;
- ``_compute_advantage``: after verl's estimator, :class:`~.state.DriverState` runs entrolab's advantage knob and
  ``prepare`` on the whole rollout batch (rewards = verl's ``rm_scores``, groups = ``uid``, the rollout entropies =
  the batch's ``entropy``) and writes the advantages back; the monitor (``entropy/*``, ``dynamics/*``) joins the
  step's metrics; then the whole loss carrying the prepared objective and its state goes to every rank
  (``set_loss_fn``);
- ``_update_actor``: after verl's update, the ranks' metrics (reduced by verl) advance the controllers on the
  driver; entrolab's keys and the controller values are logged through verl's tracking;
- ``_save_checkpoint`` / ``on_init_end``: ``entrolab_state.pt`` beside verl's ``actor/`` and ``data.pt`` in each
  ``global_step_N`` folder, restored on resume.

This module imports verl's trainer (Ray, TransferQueue, torchdata, a GPU for its FSDP engine and rollout servers)
only when it runs; on a CPU-only machine it cannot run end to end (docs/scale-out.md says what is verified where).
"""

from __future__ import annotations

import json
import os
from typing import Any

from ...errors import ConfigError
from .state import DriverState


def entrolab_settings(config: Any) -> tuple[list[str], dict[str, Any]]:
    """``(methods, overrides)`` from the ``entrolab`` section of verl's config (``+entrolab.method=...``)."""
    section = config.get("entrolab") if hasattr(config, "get") else None
    if not section or not section.get("method"):
        raise ConfigError("the recipe needs +entrolab.method=NAME (one method, or several joined by commas)")
    method = section.get("method")
    names = [m.strip() for m in method.split(",")] if isinstance(method, str) else [str(m) for m in method]
    overrides = section.get("overrides") or {}
    if isinstance(overrides, str):
        overrides = json.loads(overrides)
    try:
        from omegaconf import OmegaConf

        if not isinstance(overrides, dict):
            overrides = OmegaConf.to_container(overrides, resolve=True)
    except ImportError:
        pass
    return names, dict(overrides)


def prepare_config(config: Any) -> DriverState:
    """Check the method against verl and switch on what its objective needs; returns the driver's state."""
    from omegaconf import open_dict

    names, overrides = entrolab_settings(config)
    driver = DriverState(names, overrides)
    actor = config.actor_rollout_ref.actor
    with open_dict(config):
        if driver.objective.needs_entropy_grad:
            actor.calculate_entropy = True
        if driver.objective.needs_reference:  # verl builds the reference model for its KL loss; ours replaces it
            actor.use_kl_loss = True
            actor.kl_loss_coef = 0.0
        config.trainer.use_v1 = True
        config.trainer.v1.trainer_mode = "sync"
    return driver


def _fields(tq: Any, batch: Any, names: list[str]) -> dict[str, Any]:
    import numpy as np

    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=names)
    out: dict[str, Any] = {}
    uid = data.pop("uid", None) if "uid" in data.keys() else None
    padded = data.to_padded_tensor()
    for k in padded.keys():
        out[k] = padded[k]
    if uid is not None:
        out["uid"] = np.array(uid.tolist(), dtype=object)
    if "rm_scores" in out:
        out["token_level_rewards"] = out.pop("rm_scores")
    return out


def trainer_class():
    """verl's synchronous v1 trainer with entrolab's hooks (imported here: verl's trainer stack is heavy)."""
    import transfer_queue as tq
    from tensordict import TensorDict
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
    from verl.workers.utils.padding import response_to_nested

    class EntrolabPPOTrainer(PPOTrainerSync):
        def __init__(self, config):
            self.entrolab = prepare_config(config)
            super().__init__(config)

        def on_init_end(self):
            super().on_init_end()
            if self.global_steps:
                folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
                self.entrolab.load(folder)
            self.actor_rollout_wg.set_loss_fn(self.entrolab.loss_fn())

        def _compute_advantage(self, batch, metrics):
            batch = super()._compute_advantage(batch, metrics)
            names = ["uid", "response_mask", "rm_scores", "old_log_probs", "entropy", "advantages", "responses"]
            fields = _fields(tq, batch, names)
            lr = float(self.config.actor_rollout_ref.actor.optim.lr)
            adv, monitor = self.entrolab.prepare(fields, lr=lr)
            mask = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                   select_fields=["response_mask"])["response_mask"]
            out = TensorDict({"advantages": response_to_nested(adv.to(fields["response_mask"].device), mask)},
                             batch_size=len(batch))
            batch = tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=out)
            metrics.update(monitor)
            self.actor_rollout_wg.set_loss_fn(self.entrolab.loss_fn())
            return batch

        def _update_actor(self, batch, metrics):
            batch = super()._update_actor(batch, metrics)
            metrics.update(self.entrolab.after_step(metrics))
            return batch

        def _save_checkpoint(self):
            super()._save_checkpoint()
            self.entrolab.save(os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}"))

    return EntrolabPPOTrainer


def task_runner():
    """A Ray task runner (verl's ``TaskRunnerV1``'s steps) that runs :func:`trainer_class`'s trainer."""
    import ray

    @ray.remote
    class EntrolabTaskRunner:
        def run(self, config):
            import transfer_queue as tq
            from omegaconf import OmegaConf
            from verl.trainer.ppo.v1 import AgentLoopManagerTQ
            from verl.utils.logging_utils import configure_verl_logging

            configure_verl_logging()
            config.transfer_queue.enable = True
            OmegaConf.resolve(config)
            tq.init(config.transfer_queue)
            trainer = None
            try:
                trainer = trainer_class()(config=config)
                trainer.init()
                manager = AgentLoopManagerTQ.create(config=config, llm_client=trainer.get_llm_client(),
                                                    teacher_client=trainer.get_teacher_client(),
                                                    reward_loop_worker_handles=trainer.get_reward_handles())
                trainer.fit(manager)
            finally:
                tracking = getattr(trainer, "logger", None)
                if tracking is not None:
                    tracking.finish(exit_code=0)
                tq.close()

    return EntrolabTaskRunner


def main() -> None:  # pragma: no cover - needs GPUs (docs/scale-out.md)
    import hydra
    from verl.trainer.main_ppo import run_ppo
    from verl.utils.config import validate_config
    from verl.trainer.ppo.utils import need_critic, need_reference_policy

    @hydra.main(config_path="pkg://verl.trainer.config", config_name="ppo_trainer", version_base=None)
    def _main(config):
        prepare_config(config)  # refuse early, on the driver, before Ray starts
        validate_config(config=config, use_reference_policy=need_reference_policy(config),
                        use_critic=need_critic(config))
        run_ppo(config, task_runner_class=task_runner())

    _main()


if __name__ == "__main__":  # pragma: no cover
    main()
