"""entrolab.update.policy_update: micro-batch accumulation is exact, step counting, the non-finite guard."""

from __future__ import annotations

import pytest
import torch

from entrolab import methods
from entrolab.ops.masked import AGGREGATION_MODES
from entrolab.toy import TabularPolicy, ToySettings, train_toy
from entrolab.update import UpdateSettings, policy_update, split_indices


def _rollout(seed=0, ragged=True):
    policy = TabularPolicy(seed=seed)
    g = torch.Generator().manual_seed(seed)
    batch = policy.rollout(torch.tensor([0, 3, 5]), 4, g)
    if ragged:  # unequal response lengths, so the aggregation modes really differ
        lengths = torch.tensor([4, 1, 3, 2, 4, 4, 2, 3, 1, 4, 3, 2])
        mask = (torch.arange(4)[None] < lengths[:, None]).float()
        batch = batch.replace(response_mask=mask)
    return policy, batch


def _update(policy, batch, obj, settings):
    opt = torch.optim.SGD(policy.parameters(), lr=1.0)

    def forward(mb):
        return policy.logprobs_entropy(mb.extras["prompt_id"], mb.response_ids)

    return policy_update(obj, batch, forward, opt, list(policy.parameters()), settings)


# token-mean-local (TRL's bnpo) is by definition the token mean of each micro-batch: it depends on the split, which is
# what it reproduces (test_methods_baselines checks it against TRL over two micro-batches).
@pytest.mark.parametrize("aggregation", [a for a in AGGREGATION_MODES if a != "token-mean-local"])
def test_micro_batches_give_the_whole_mini_batch_update(aggregation):
    obj = methods.build("grpo", aggregation=aggregation)
    results = []
    for micro in (0, 5, 1):  # whole mini-batch, uneven micro-batches (5, 5, 2), one sequence at a time
        policy, batch = _rollout()
        batch = obj.compute_advantages(batch)
        m = _update(policy, batch, obj, UpdateSettings(micro_batch_size=micro, grad_clip=None))
        results.append((policy.logits.detach().clone(), m))
    (ref, m_ref), *others = results
    assert (ref != TabularPolicy(seed=0).logits.detach()).any()  # the update did something
    for logits, m in others:
        torch.testing.assert_close(logits, ref)
        assert m["loss/total"] == pytest.approx(m_ref["loss/total"], rel=1e-5, abs=1e-7)
        assert m["update/steps"] == 1.0 and m["update/skipped"] == 0.0


def test_steps_and_split_indices():
    policy, batch = _rollout(ragged=False)
    obj = methods.build("grpo")
    batch = obj.compute_advantages(batch)
    m = _update(policy, batch, obj, UpdateSettings(ppo_epochs=2, mini_batches=3))
    assert m["update/steps"] == 6.0 and m["update/skipped"] == 0.0 and m["update/grad_norm"] > 0
    parts = split_indices(10, 3, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(parts).tolist()) == list(range(10)) and [len(p) for p in parts] == [4, 3, 3]
    assert len(split_indices(2, 5, None)) == 2


def test_non_finite_gradient_is_skipped():
    policy, batch = _rollout(ragged=False)
    obj = methods.build("grpo")
    batch = obj.compute_advantages(batch)
    theta = torch.nn.Parameter(torch.zeros(()))
    before = policy.logits.detach().clone()

    def forward(mb):
        logp, ent = policy.logprobs_entropy(mb.extras["prompt_id"], mb.response_ids)
        # finite value, NaN gradient: d/dθ √(θ²) at θ = 0 is 0/0
        return logp - torch.sqrt(theta**2), ent

    opt = torch.optim.SGD([*policy.parameters(), theta], lr=1.0)
    m = policy_update(obj, batch, forward, opt, [*policy.parameters(), theta], UpdateSettings(mini_batches=2))
    assert m["update/skipped"] == 2.0 and m["update/steps"] == 2.0
    torch.testing.assert_close(policy.logits.detach(), before)  # nothing was applied


def test_a_nan_clip_threshold_is_skipped_not_written_into_the_weights():
    """``grad_clip = nan`` makes finite gradients NaN after clipping (the config refuses it; this is the guard
    behind): the step is skipped and counted, the weights never see it."""
    policy, batch = _rollout(ragged=False)
    obj = methods.build("grpo")
    batch = obj.compute_advantages(batch)
    before = policy.logits.detach().clone()
    m = _update(policy, batch, obj, UpdateSettings(mini_batches=2, grad_clip=float("nan")))
    assert m["update/skipped"] == 2.0 and m["update/steps"] == 2.0
    torch.testing.assert_close(policy.logits.detach(), before)
    assert torch.isfinite(policy.logits).all()


def test_weights_made_non_finite_by_the_optimizer_stop_the_update():
    from entrolab.errors import TrainingError

    class Overflowing(torch.optim.SGD):
        def step(self, closure=None):  # an optimizer whose arithmetic overflows (as half precision can)
            super().step(closure)
            with torch.no_grad():
                self.param_groups[0]["params"][0].mul_(float("inf"))

    policy, batch = _rollout(ragged=False)
    obj = methods.build("grpo")
    batch = obj.compute_advantages(batch)
    opt = Overflowing(policy.parameters(), lr=1.0)

    def forward(mb):
        return policy.logprobs_entropy(mb.extras["prompt_id"], mb.response_ids)

    with pytest.raises(TrainingError, match="optimizer step 0 of this update made the weights non-finite"):
        policy_update(obj, batch, forward, opt, list(policy.parameters()), UpdateSettings())


def test_toy_settings_and_errors():
    with pytest.raises(ValueError, match="unknown setting 'stepz'"):
        train_toy(methods.build("grpo"), TabularPolicy(), stepz=3)
    with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
        train_toy(methods.build("grpo"), TabularPolicy(), ToySettings(steps=1, optimizer="rmsprop"))
    with pytest.raises(ValueError, match="correct_per_state"):
        TabularPolicy(num_actions=4, correct_per_state=4)
    hist = train_toy(methods.build("grpo"), TabularPolicy(), steps=2, optimizer="sgd", lr=5.0)
    assert len(hist) == 3 and hist[-1]["step"] == 2.0
