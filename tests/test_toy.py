"""Claimed entropy effects, shown on the toy tabular softmax policy (exact entropy and expected reward).

Margins observed when these thresholds were set (toy defaults: Adam lr 0.1, 2 PPO epochs × 2 mini-batches):

- one update, seeds 0–7, entropy drop H0 − H1: GRPO mean 0.0043, Clip-Cov (toy overrides) 0.0010, lower on 8/8 seeds
  (smallest paired gap 0.0006);
- one update, seeds 0–15: KL-Cov (k = 0.1) 0.0089 vs its own unclipped surrogate (clip 'none', no penalty) 0.0128,
  lower on 14/16 seeds. Against PPO-clipped GRPO (0.0085) a single KL-Cov update is *not* better at these
  settings — KL-Cov drops the PPO clip (as the reference code does), which costs about as much entropy as the
  penalty saves in one update — so the single-update claim is tested against the surrogate it actually modifies,
  and the comparison with GRPO is made over a run (below);
- 30 steps, seeds 0–3, final entropy: GRPO 0.305 0.408 0.373 0.419; Clip-Cov 0.354 0.397 0.413 0.489;
  KL-Cov 0.400 0.530 0.466 0.460; entropy bonus (α = 0.05) 0.510 0.565 0.431 0.633.
"""

from __future__ import annotations

import warnings

import pytest

from entrolab import methods
from entrolab.toy import TabularPolicy, ToySettings, one_update_entropy, train_toy

SEEDS_RUN = (0, 1, 2, 3)


def _toy_method(name, **extra):
    return methods.build(name, **{**methods.get_method(name).toy_overrides, **extra})


def _one_update(objective, seed, **settings):
    """(entropy drop, the rollout's sample reward) of one rollout + update from the fresh policy of ``seed``."""
    policy = TabularPolicy(seed=seed)
    h0 = policy.entropy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = train_toy(objective, policy, ToySettings(steps=1, seed=seed, **settings))
    return h0 - hist[-1]["entropy"], hist[0]["sample_reward"]


def test_one_clip_cov_update_lowers_entropy_less_than_grpo():
    gaps = []
    for seed in range(8):
        drop_grpo, r_grpo = _one_update(methods.build("grpo"), seed)
        drop_cc, r_cc = _one_update(_toy_method("clip_cov"), seed)
        assert r_cc == r_grpo  # same state, same rollout
        gaps.append(drop_grpo - drop_cc)
    assert sum(g > 0 for g in gaps) >= 7, gaps
    assert sum(gaps) / len(gaps) > 0.001, gaps


def test_one_kl_cov_update_lowers_entropy_less_than_its_unpenalised_surrogate():
    gaps = []
    for seed in range(16):
        drop_base, r_base = _one_update(methods.build("grpo", clip="none"), seed, ppo_epochs=2, mini_batches=2)
        drop_kc, r_kc = _one_update(_toy_method("kl_cov"), seed, ppo_epochs=2, mini_batches=2)
        assert r_kc == r_base
        gaps.append(drop_base - drop_kc)
    assert sum(g > 0 for g in gaps) >= 12, gaps
    assert sum(gaps) / len(gaps) > 0.002, gaps


def test_kl_cov_is_inert_on_a_single_on_policy_update():
    for seed in (0, 1):
        drop_base, _ = _one_update(methods.build("grpo", clip="none"), seed, ppo_epochs=1, mini_batches=1)
        drop_kc, _ = _one_update(_toy_method("kl_cov"), seed, ppo_epochs=1, mini_batches=1)
        assert drop_kc == pytest.approx(drop_base, abs=1e-7)
    with pytest.warns(UserWarning, match="kl_cov can have no effect"):
        one_update_entropy(_toy_method("kl_cov"), seed=0, ppo_epochs=1, mini_batches=1)


@pytest.fixture(scope="module")
def runs():
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("grpo", "entropy_bonus", "clip_cov", "kl_cov"):
            out[name] = [train_toy(_toy_method(name), TabularPolicy(seed=s), ToySettings(steps=30, seed=s))
                         for s in SEEDS_RUN]
    return out


def test_grpo_entropy_collapses_while_reward_rises(runs):
    for hist in runs["grpo"]:
        H = [r["entropy"] for r in hist]
        R = [r["reward"] for r in hist]
        assert len(hist) == 31
        assert H[-1] < 0.4 * H[0]                 # ≈ 1.75 → ≈ 0.3–0.4 nats
        assert H[0] > H[10] > H[20] > H[30]       # falls throughout
        assert R[-1] > R[0] + 0.5 and R[-1] > 0.85


@pytest.mark.parametrize("name", ["entropy_bonus", "clip_cov", "kl_cov"])
def test_entropy_methods_end_with_more_entropy_than_grpo(runs, name):
    base = [h[-1]["entropy"] for h in runs["grpo"]]
    ours = [h[-1]["entropy"] for h in runs[name]]
    assert sum(o > b for o, b in zip(ours, base)) >= 3, (ours, base)
    assert sum(ours) / len(ours) > sum(base) / len(base) + 0.015, (ours, base)
    # and still learns the task
    assert min(h[-1]["reward"] for h in runs[name]) > 0.85
