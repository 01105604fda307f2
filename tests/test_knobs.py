"""entrolab.knobs: advantage estimators, clip rules (PPO family, Clip-Cov), KL penalties (reference KL, KL-Cov),
objective terms (entropy bonus), sampling (dynamic sampling), the registries, and PolicyObjective's guards."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pytest
import torch
from batches import make_batch

from entrolab import methods
from entrolab.batch import BatchError
from entrolab.errors import ConfigError
from entrolab.knobs.advantage.base import ADVANTAGES
from entrolab.knobs.base import Component, component_registry
from entrolab.knobs.clip.base import CLIPS, importance_ratio, ppo_token_loss
from entrolab.knobs.clip.covariance import ClipCov
from entrolab.knobs.kl.base import KLS
from entrolab.knobs.kl.penalties import KLCov
from entrolab.knobs.objective.base import TERMS
from entrolab.knobs.sampling.base import SAMPLINGS
from entrolab.ops.masked import aggregate_loss
from entrolab.registry import Registry


def _per_token_grad(loss: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """∂(Σ ℓ)/∂ log π per token (each token's loss depends on its own log-prob only)."""
    (g,) = torch.autograd.grad(loss.sum(), logp)
    return g


# =============================================================================================== advantage
# rewards:  group 0 = [1, 0, 0, 1] (mean ½, unbiased std √(1/3));  group 1 = [2] (size 1);  group 2 = [5, 5]
# lengths:  3, 2, 1, 3 | 2 | 1, 2   (T = 3)
ADV_REWARDS = [1.0, 0.0, 0.0, 1.0, 2.0, 5.0, 5.0]
ADV_GROUPS = [0, 0, 0, 0, 1, 2, 2]
ADV_LENGTHS = [3, 2, 1, 3, 2, 1, 2]


def _adv_batch(rewards=ADV_REWARDS, groups=ADV_GROUPS, lengths=ADV_LENGTHS, T=3):
    return make_batch(lengths, T, rewards=rewards, group_ids=groups)


def _broadcast(per_seq, lengths=ADV_LENGTHS, T=3):
    return torch.tensor([[v if t < n else 0.0 for t in range(T)] for v, n in zip(per_seq, lengths)])


@pytest.mark.parametrize("name, per_seq", [
    # GRPO: (R − ½)/(√(1/3) + 1e-6) = ±0.8660; size-1 group and equal-reward group → 0
    ("grpo", [s * 0.5 / (math.sqrt(1 / 3) + 1e-6) for s in (1, -1, -1, 1)] + [0.0, 0.0, 0.0]),
    # Dr. GRPO: R − ½
    ("dr_grpo", [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0]),
    # RLOO: G/(G−1)·(R − mean) = 4/3 · ±½ = ±2/3  (e.g. 1 − mean(0, 0, 1) = 2/3)
    ("rloo", [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0, 0.0]),
])
def test_group_advantages_hand_case(name, per_seq):
    adv = ADVANTAGES.build(name).compute(_adv_batch())
    torch.testing.assert_close(adv, _broadcast(per_seq), atol=1e-6, rtol=1e-6)


def test_grpo_eps_and_interleaved_group_ids():
    # eps enters the denominator: ½ / (√(1/3) + 1)
    adv = ADVANTAGES.build("grpo", {"eps": 1}).compute(_adv_batch())
    assert adv[0, 0].item() == pytest.approx(0.5 / (math.sqrt(1 / 3) + 1.0), rel=1e-6)
    # group ids need not be contiguous nor sorted
    b = make_batch([1, 1, 1, 1], rewards=[1.0, 3.0, 0.0, 5.0], group_ids=[7, 3, 7, 3])
    torch.testing.assert_close(ADVANTAGES.build("dr_grpo").compute(b), torch.tensor([[0.5], [-1.0], [-0.5], [1.0]]))


def test_reinforce_pp_baseline_hand_case():
    # group-centred: [½, −½ | −½, ½] on lengths [2, 1, 1, 3] → token values ½,½, −½, −½, ½,½,½ (N = 7)
    # whitening: mean 3/14, deviations 2/7 (×5) and −5/7 (×2), unbiased var (5·4/49 + 2·25/49)/6 = 5/21
    b = make_batch([2, 1, 1, 3], 3, rewards=[1.0, 0.0, 0.0, 1.0], group_ids=[0, 0, 1, 1])
    hi, lo = (2 / 7) / math.sqrt(5 / 21), (-5 / 7) / math.sqrt(5 / 21)
    expected = torch.tensor([[hi, hi, 0], [lo, 0, 0], [lo, 0, 0], [hi, hi, hi]])
    torch.testing.assert_close(ADVANTAGES.build("reinforce_pp_baseline").compute(b), expected, atol=1e-5, rtol=1e-5)


def test_reinforce_pp_baseline_size_one_group_is_zero():
    # group 0 = [1, 0] (lengths 2, 1), group 1 = [1] (size 1, length 2) → its tokens get 0, and the whitening
    # runs over the comparable tokens only: ½, ½, −½ → mean 1/6, deviations 1/3, 1/3, −2/3, var (1/9+1/9+4/9)/2 = 1/3
    b = make_batch([2, 1, 2], 2, rewards=[1.0, 0.0, 1.0], group_ids=[0, 0, 1])
    s = math.sqrt(1 / 3)
    expected = torch.tensor([[(1 / 3) / s, (1 / 3) / s], [(-2 / 3) / s, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(ADVANTAGES.build("reinforce_pp_baseline").compute(b), expected, atol=1e-5, rtol=1e-5)


# Estimators that read engine extras (answer clusters, self-certainty, ...) are checked against this same contract,
# with their inputs supplied, in test_methods_advantage; those that read the structure a sampling strategy records
# (tree nodes, fork positions, tool turns: knobs/advantage/rollouts.py) are tested with
# that strategy in test_sampling / test_tools.
ROLLOUT_STRUCTURE_MODULES = ("entrolab.knobs.advantage.rollouts",)
# Estimators whose baseline is not the group (GAE's value model, ReMax's greedy response, REINFORCE++'s batch) declare
# ``groupwise = False``: a single response per prompt is their normal case (test_methods_baselines).
PLAIN_ESTIMATORS = [n for n in ADVANTAGES.names() if not ADVANTAGES.get(n).extras
                    and ADVANTAGES.get(n).__module__ not in ROLLOUT_STRUCTURE_MODULES and ADVANTAGES.get(n).groupwise]


@pytest.mark.parametrize("name", PLAIN_ESTIMATORS)
def test_groups_of_size_one_get_zero(name):
    ent = torch.tensor([[0.9, 0.2, 1.4], [0.5, 0.7, 0.1], [1.1, 0.3, 0.6], [0.4, 1.2, 0.8]])
    b = make_batch([2, 3, 1], 3, rewards=[1.0, 0.0, 0.3], group_ids=[0, 1, 2])
    b = b.replace(old_entropy=ent[:3])
    assert (ADVANTAGES.build(name).compute(b) == 0).all()
    # mixed: the size-1 group (id 9) gets 0 while the others do not (group 0's best is unique: pass@k credits only it)
    b = make_batch([2, 3, 1, 2], 3, rewards=[1.0, 0.0, 0.3, 0.5], group_ids=[0, 0, 9, 0])
    adv = ADVANTAGES.build(name).compute(b.replace(old_entropy=ent))
    assert (adv[2] == 0).all() and adv[0, 0] != 0


# =============================================================================================== clip rules
# One row of 8 tokens, ε = 0.2 (bounds 0.8, 1.2), chosen so each branch of each rule is hit.
#   r:  1.5   0.5   0.5   1.5   1.1   4.0   2.0   1.25
#   A:  +1    +1    −1    −1    +1    −1    −1    +1
# PPO ℓ = max(−A·r, −A·clip(r)):
#      −1.2  −0.5   0.8   1.5  −1.1   4.0   2.0  −1.2      (tokens 0 and 7 high-clipped, token 2 low-clipped)
# d ℓ / d log π = −A·r where unclipped, 0 where clipped:
#       0    −0.5   0     1.5  −1.1   4.0   2.0   0
R = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.1, 4.0, 2.0, 1.25]])
A = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0, -1.0, -1.0, 1.0]])


def _clip_batch(ratio=R, adv=A, mask=None):
    old = torch.full_like(ratio, -3.0)
    logp = (old + ratio.log()).requires_grad_(True)
    b = make_batch([ratio.shape[1]] * ratio.shape[0], old_logprobs=old, rewards=[0.0] * ratio.shape[0],
                   group_ids=list(range(ratio.shape[0])), logprobs=logp, advantages=adv)
    if mask is not None:
        b = b.replace(response_mask=mask)
    return b, logp


@pytest.mark.parametrize("name, loss, grad, fracs", [
    ("ppo", [-1.2, -0.5, 0.8, 1.5, -1.1, 4.0, 2.0, -1.2], [0, -0.5, 0, 1.5, -1.1, 4.0, 2.0, 0],
     {"clip/frac_high": 2 / 8, "clip/frac_low": 1 / 8}),
    # clip-higher, bounds 0.8 / 1.28: token 7 (r = 1.25) is no longer clipped, token 0 is clipped at 1.28
    ("clip_higher", [-1.28, -0.5, 0.8, 1.5, -1.1, 4.0, 2.0, -1.25], [0, -0.5, 0, 1.5, -1.1, 4.0, 2.0, -1.25],
     {"clip/frac_high": 1 / 8, "clip/frac_low": 1 / 8}),
    # dual clip c = 3: token 5 (A < 0, ℓ = 4 > −c·A = 3) is capped at 3 with zero gradient; token 6 (ℓ = 2) is not
    ("dual_clip", [-1.2, -0.5, 0.8, 1.5, -1.1, 3.0, 2.0, -1.2], [0, -0.5, 0, 1.5, -1.1, 0, 2.0, 0],
     {"clip/frac_high": 2 / 8, "clip/frac_low": 1 / 8, "clip/frac_dual": 1 / 8}),
    # unclipped importance sampling: ℓ = −A·r, gradient −A·r everywhere
    ("none", [-1.5, -0.5, 0.5, 1.5, -1.1, 4.0, 2.0, -1.25], [-1.5, -0.5, 0.5, 1.5, -1.1, 4.0, 2.0, -1.25], {}),
])
def test_clip_rules_hand_case(name, loss, grad, fracs):
    b, logp = _clip_batch()
    out, metrics = CLIPS.build(name).pg_loss(b)
    torch.testing.assert_close(out.detach(), torch.tensor([loss]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_per_token_grad(out, logp), torch.tensor([grad]), atol=1e-5, rtol=1e-5)
    for k, v in fracs.items():
        assert metrics[k] == pytest.approx(v)
    assert metrics["ratio/max"] == pytest.approx(4.0, rel=1e-5)
    assert metrics["ratio/mean"] == pytest.approx(float(R.mean()), rel=1e-5)


def test_ppo_token_loss_masks_and_dual_cap():
    loss, masks = ppo_token_loss(R, A, 0.2, 0.2, dual_clip=3.0)
    assert masks["high"].tolist() == [[True, False, False, False, False, False, False, True]]
    assert masks["low"].tolist() == [[False, False, True, False, False, False, False, False]]
    assert masks["dual"].tolist() == [[False, False, False, False, False, True, False, False]]
    assert loss[0, 5].item() == pytest.approx(3.0)  # the cap −c·A with A = −1
    # the cap applies only to A < 0: a positive-advantage token with a huge ratio is not dual-clipped
    loss_pos, m = ppo_token_loss(torch.tensor([10.0]), torch.tensor([1.0]), 0.2, 0.2, dual_clip=3.0)
    assert not m["dual"].any() and loss_pos.item() == pytest.approx(-1.2)


def test_importance_ratio_clamps_log_ratio():
    r = importance_ratio(torch.tensor([0.0, -50.0, -1.0]), torch.tensor([-30.0, 0.0, -1.0]))
    torch.testing.assert_close(r, torch.tensor([math.exp(20.0), math.exp(-20.0), 1.0]))


def test_clip_metrics_ignore_padding():
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    b, _ = _clip_batch(mask=mask)
    _, metrics = CLIPS.build("ppo").pg_loss(b)
    assert metrics["clip/frac_high"] == pytest.approx(1 / 4)   # token 0 only (token 7 is padding)
    assert metrics["ratio/max"] == pytest.approx(1.5, rel=1e-5)


# =============================================================================================== Clip-Cov
def _random_update_batch(seed, lengths=(16, 12, 16, 5, 16, 9, 16, 14), T=16, spread=0.4):
    """A batch mid-update: current log-probs off the old ones (so some tokens are PPO-clipped), A ≠ 0 everywhere."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    old = -3.0 * torch.rand(B, T, generator=g) - 0.05
    logp = (old + spread * torch.randn(B, T, generator=g)).clamp(max=0.0).requires_grad_(True)
    adv = torch.randn(B, T, generator=g)
    adv = torch.where(adv.abs() < 0.05, torch.full_like(adv, 0.5), adv)
    return make_batch(list(lengths), T, old_logprobs=old, logprobs=logp, advantages=adv, seed=seed), logp


def _hand_cov(lp, adv, mask):
    v = mask > 0
    return ((lp - lp[v].mean()) * (adv - adv[v].mean())) * mask


@pytest.mark.parametrize("ratio, lb, ub", [
    (0.125, 0.05, 2.0),    # plenty of candidates: ⌊r·N⌋ are detached
    (0.5, 0.3, 0.6),       # fewer candidates than ⌊r·N⌋: all of them are detached
    (1e-4, 0.05, 2.0),     # ⌊r·N⌋ = 0 → at least one
    (0.125, 50.0, 60.0),   # no candidate: nothing is detached
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_cov_detaches_only_eligible_candidates(ratio, lb, ub, seed):
    rule = ClipCov(ratio=ratio, cov_lb=lb, cov_ub=ub, seed=seed)
    b, logp = _random_update_batch(seed)
    valid = b.mask > 0
    N = int(valid.sum())
    ratio_t = importance_ratio(logp, b.old_logprobs)
    ppo_loss, masks = ppo_token_loss(ratio_t, b.advantages, 0.2, 0.2)
    ppo_grad = _per_token_grad(ppo_loss, logp)
    cov = _hand_cov(logp.detach(), b.advantages, b.mask)
    candidates = valid & (cov > lb) & (cov < ub) & ~masks["low"] & ~masks["high"]
    assert (masks["low"] | masks["high"]).any()  # the case really contains PPO-clipped tokens
    expected_count = min(max(1, math.floor(ratio * N)), int(candidates.sum()))
    seen = torch.zeros_like(valid)
    for _ in range(4):  # several draws of the rule's generator
        loss, metrics = rule.pg_loss(b)
        grad = _per_token_grad(loss, logp)
        detached = valid & (grad == 0) & (ppo_grad != 0)
        assert not (detached & ~candidates).any(), "a non-candidate (or PPO-clipped) token was detached"
        assert int(detached.sum()) == expected_count
        assert (loss.detach()[detached] == 0).all()
        keep = ~detached
        torch.testing.assert_close(loss.detach()[keep], ppo_loss.detach()[keep])
        torch.testing.assert_close(grad[keep], ppo_grad[keep])
        assert metrics["clip/frac_cov"] == pytest.approx(expected_count / N)
        seen |= detached
    if expected_count and int(candidates.sum()) > expected_count:
        assert int(seen.sum()) > expected_count  # the draw is random, not always the same tokens


def test_clip_cov_count_hits_exact_floor():
    # 10 valid tokens, ratio 0.25 → ⌊2.5⌋ = 2 detached when every token is a candidate
    lp = torch.tensor([[-0.1, -0.2, -0.3, -0.4, -0.5, -2.1, -2.2, -2.3, -2.4, -2.5]])
    adv = torch.tensor([[1.0] * 5 + [-1.0] * 5])  # high logp ↔ high A: every Cov > 0
    b = make_batch([10], old_logprobs=lp, logprobs=lp.clone().requires_grad_(True), advantages=adv,
                   rewards=[0.0], group_ids=[0])
    rule = ClipCov(ratio=0.25, cov_lb=0.0, cov_ub=100.0)
    loss, metrics = rule.pg_loss(b)
    assert int((loss.detach() == 0).sum()) == 2 and metrics["clip/frac_cov"] == pytest.approx(0.2)


def test_clip_cov_batch_scope_via_prepare():
    obj = methods.build("clip_cov", scope="batch", ratio=0.125, cov_lb=0.05, cov_ub=2.0)
    b, _ = _random_update_batch(3)
    rollout = b.replace(logprobs=None)
    prepared = obj.prepare(rollout)
    chosen = prepared.extras["clip_cov_detach"]
    valid = b.mask > 0
    N = int(valid.sum())
    cov = _hand_cov(b.old_logprobs, b.advantages, b.mask)  # π_old at prepare time
    assert int(chosen.sum()) == max(1, math.floor(0.125 * N))
    assert not (chosen & ~(valid & (cov > 0.05) & (cov < 2.0))).any()
    # the selection travels with sub-batches and is what pg_loss detaches, whatever the current ratio
    idx = torch.tensor([5, 0, 2])
    sub = prepared.select(idx)
    logp = b.logprobs.detach()[idx].clone().requires_grad_(True)
    sub = sub.replace(logprobs=logp)
    loss, metrics = obj.clip.pg_loss(sub)
    grad = _per_token_grad(loss, logp)
    ppo_loss, _ = ppo_token_loss(importance_ratio(logp, sub.old_logprobs), sub.advantages, 0.2, 0.2)
    ppo_grad = _per_token_grad(ppo_loss, logp)
    sel = chosen[idx]
    assert (grad[sel] == 0).all() and (loss.detach()[sel] == 0).all()
    torch.testing.assert_close(grad[~sel], ppo_grad[~sel])
    assert metrics["clip/frac_cov"] == pytest.approx(float(sel.sum()) / float(sub.mask.sum()))
    # without prepare() the rule says what is missing
    with pytest.raises(ConfigError, match="prepare"):
        obj.clip.pg_loss(b)


def test_clip_cov_generator_state_round_trip():
    b, logp = _random_update_batch(4)
    cov = _hand_cov(logp.detach(), b.advantages, b.mask)
    eligible = b.mask > 0
    rule = ClipCov(ratio=0.05, cov_lb=0.05, cov_ub=2.0, seed=11)
    state = rule.state_dict()
    first = rule.select(cov, eligible, b.num_tokens)
    second = rule.select(cov, eligible, b.num_tokens)
    assert not torch.equal(first, second)  # the generator advances
    rule.load_state_dict(state)
    assert torch.equal(rule.select(cov, eligible, b.num_tokens), first)
    other = ClipCov(ratio=0.05, cov_lb=0.05, cov_ub=2.0, seed=999)
    other.load_state_dict(state)
    assert torch.equal(other.select(cov, eligible, b.num_tokens), first)
    # through PolicyObjective's state_dict (slot 'clip')
    obj = methods.build("clip_cov", ratio=0.05, cov_lb=0.05, cov_ub=2.0, seed=11)
    obj_state = obj.state_dict()
    assert set(obj_state) == {"clip"}
    a = obj.clip.select(cov, eligible, b.num_tokens)
    obj2 = methods.build("clip_cov", ratio=0.05, cov_lb=0.05, cov_ub=2.0, seed=5)
    obj2.load_state_dict(obj_state)
    assert torch.equal(obj2.clip.select(cov, eligible, b.num_tokens), a)
    with pytest.raises(ConfigError, match="unknown slots"):
        obj2.load_state_dict({"critic": {}})
    with pytest.raises(ConfigError, match="keeps no state"):
        obj2.load_state_dict({"kl": {"x": 1}})


def test_clip_cov_parameter_checks():
    with pytest.raises(ConfigError, match="cov_lb"):
        ClipCov(cov_lb=5.0, cov_ub=1.0)
    with pytest.raises(ConfigError, match="clip_cov.scope"):
        ClipCov(scope="global")
    with pytest.raises(ConfigError, match="clip_cov.ratio"):
        ClipCov(ratio=0.0)


# =============================================================================================== KL-Cov
# logp (current) = [[−1, −2, −3], [−4, −5, •]]   → mean −3
# A              = [[ 1,  1,  1], [−1, −1, •]]   → mean 0.2
# Cov = (lp + 3)(A − 0.2):  [[2·0.8, 1·0.8, 0·0.8], [−1·−1.2, −2·−1.2]] = [[1.6, 0.8, 0], [1.2, 2.4]]
# ranking: 2.4 (1,1) > 1.6 (0,0) > 1.2 (1,0) > 0.8 (0,1) > 0 (0,2)
# old = logp + δ, δ = [[0.1, −0.2, 0.3], [0.4, −0.5, •]] → |logp − old| = |δ|
KC_LOGP = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -0.5]])
KC_ADV = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])
KC_DELTA = torch.tensor([[0.1, -0.2, 0.3], [0.4, -0.5, 0.0]])


def _kl_cov_batch():
    logp = KC_LOGP.clone().requires_grad_(True)
    return make_batch([3, 2], 3, old_logprobs=KC_LOGP + KC_DELTA, logprobs=logp, advantages=KC_ADV,
                      rewards=[1.0, 0.0], group_ids=[0, 0]), logp


@pytest.mark.parametrize("k, chosen", [
    (0.2, [(1, 1)]),                   # ⌊0.2·5⌋ = 1
    (0.4, [(1, 1), (0, 0)]),           # ⌊0.4·5⌋ = 2
    (1e-3, [(1, 1)]),                  # ⌊0.005⌋ = 0 → at least one
])
def test_kl_cov_selects_top_covariance_tokens(k, chosen):
    b, logp = _kl_cov_batch()
    rule = KLCov(k=k, coef=2.0)
    expected = torch.zeros(2, 3, dtype=torch.bool)
    for i, t in chosen:
        expected[i, t] = True
    assert torch.equal(rule.select(b.logprobs, b.advantages, b.mask), expected)
    pen, metrics = rule.penalty(b)
    # β·|logp − old| = 2·|δ| on the chosen tokens, 0 elsewhere
    torch.testing.assert_close(pen.detach(), torch.where(expected, 2.0 * KC_DELTA.abs(), torch.zeros(())))
    # gradient: β·sign(logp − old) = β·sign(−δ) on the chosen tokens only
    grad = _per_token_grad(pen, logp)
    torch.testing.assert_close(grad, torch.where(expected, -2.0 * torch.sign(KC_DELTA), torch.zeros(())))
    assert metrics["kl/cov_frac"] == pytest.approx(len(chosen) / 5)
    assert metrics["kl/cov_abs"] == pytest.approx(float(KC_DELTA.abs()[expected].mean()), rel=1e-6)


def test_kl_cov_batch_scope_uses_old_logprobs():
    b, _ = _kl_cov_batch()
    # make the old log-probs the hand case and the current ones something else: selection must follow π_old
    b = b.replace(old_logprobs=KC_LOGP, logprobs=(KC_LOGP - KC_DELTA).clamp(max=0).requires_grad_(True))
    obj = methods.build("kl_cov", scope="batch", k=0.4)
    prepared = obj.prepare(b)
    expected = torch.tensor([[True, False, False], [False, True, False]])
    assert torch.equal(prepared.extras["kl_cov_select"], expected)
    pen, _ = obj.kl.penalty(prepared)
    assert ((pen.detach() > 0) == expected).all()
    with pytest.raises(ConfigError, match="prepare"):
        obj.kl.penalty(b)


def test_kl_cov_is_inert_on_policy():
    b, _ = _random_update_batch(5)
    logp = b.old_logprobs.clone().requires_grad_(True)
    b = b.replace(logprobs=logp)
    pen, _ = KLCov(k=0.5, coef=3.0).penalty(b)
    assert (pen == 0).all()
    assert (_per_token_grad(pen, logp) == 0).all()
    # the whole objective: KL-Cov's gradient equals its unclipped surrogate's while π_θ = π_old
    g_kl = torch.autograd.grad(methods.build("kl_cov", k=0.5)(b)[0], logp)[0]
    g_none = torch.autograd.grad(methods.build("grpo", clip="none")(b)[0], logp)[0]
    torch.testing.assert_close(g_kl, g_none)
    assert g_kl.abs().sum() > 0


def test_check_update_regime_warns_once_for_kl_cov_only():
    obj = methods.build("kl_cov")
    with pytest.warns(UserWarning, match="kl_cov"):
        obj.check_update_regime(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obj.check_update_regime(1)                  # once only
        methods.build("kl_cov").check_update_regime(4)   # off-policy updates: nothing to warn about
        methods.build("grpo").check_update_regime(1)
        methods.build("clip_cov").check_update_regime(1)  # Clip-Cov detaches on-policy too


# =============================================================================================== reference KL
def test_reference_kl_requires_ref_logprobs_and_values():
    b, logp = _random_update_batch(6)
    obj = methods.build("grpo", kl={"name": "ref_kl", "coef": 0.5, "estimator": "mse"})
    assert obj.needs_reference and obj.kl.estimator == "k2"
    with pytest.raises(BatchError, match="ref_logprobs"):
        obj(b)
    ref = (b.old_logprobs - 0.3).clamp(max=0)
    b = b.replace(ref_logprobs=ref)
    pen, metrics = obj.kl.penalty(b)
    torch.testing.assert_close(pen, 0.5 * 0.5 * (logp - ref) ** 2)
    loss, m = obj(b)
    assert "loss/kl" in m and math.isfinite(loss.item())
    with pytest.raises(ConfigError, match="ref_kl.estimator"):
        KLS.build("ref_kl", {"estimator": "k9"})


# =============================================================================================== entropy bonus
@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean"])
def test_entropy_bonus_gradient_flows_through_entropy(aggregation):
    g = torch.Generator().manual_seed(0)
    B, T, V = 2, 3, 4
    lengths = [3, 1]
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).float()
    logits = torch.randn(B, T, V, generator=g).requires_grad_(True)
    ids = torch.randint(0, V, (B, T), generator=g)

    def fwd(z):
        logp_all = torch.log_softmax(z, -1)
        return logp_all.gather(-1, ids[..., None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)

    logp, ent = fwd(logits)
    coef = 0.1
    obj = methods.build("entropy_bonus", coef=coef, aggregation=aggregation)
    b = make_batch(lengths, T, old_logprobs=logp.detach(), logprobs=logp, entropy=ent,
                   advantages=torch.zeros(B, T), rewards=[1.0, 0.0], group_ids=[0, 0])
    loss, metrics = obj(b)
    (grad,) = torch.autograd.grad(loss, logits)
    # with A = 0 the surrogate has no gradient, so the whole gradient is the bonus's: −coef·Σ_t w_t ∇H_t, with
    # w_t the aggregation weight — 1/N (N = 4 tokens) for token-mean, 1/(B'·|o_i|) for seq-mean-token-mean
    if aggregation == "token-mean":
        w = mask / 4.0
    else:
        w = mask / (2.0 * torch.tensor(lengths, dtype=torch.float32)[:, None])
    (expected,) = torch.autograd.grad((w * fwd(logits)[1]).sum(), logits)
    torch.testing.assert_close(grad, -coef * expected)
    assert grad.abs().sum() > 1e-3
    assert (grad[1, 1:] == 0).all()  # padding positions get nothing
    assert metrics["entropy/bonus"] == pytest.approx(coef * float((ent.detach() * mask).sum() / 4))


def test_entropy_bonus_refuses_detached_entropy():
    b, logp = _random_update_batch(7)
    obj = methods.build("entropy_bonus")
    with pytest.raises(BatchError, match="entropy"):
        obj(b)  # no entropy at all
    with pytest.raises(BatchError, match="carries no gradient"):
        obj(b.replace(entropy=torch.ones_like(logp.detach())))


# =============================================================================================== sampling
def test_dynamic_sampling_keep_mask():
    # groups: 0 = [1, 1] all right; 1 = [0, 1] mixed; 2 = [0, 0] all wrong; 3 = [1] alone; 4 = [½, ½, 1] mixed
    b = make_batch([1] * 10, rewards=[1, 1, 0, 1, 0, 0, 1, 0.5, 0.5, 1], group_ids=[0, 0, 1, 1, 2, 2, 3, 4, 4, 4])
    keep = SAMPLINGS.build("dynamic_sampling").keep(b)
    assert keep.tolist() == [False, False, True, True, False, False, False, True, True, True]
    assert SAMPLINGS.build("standard").keep(b).all()
    assert methods.build("dapo").keep(b).tolist() == keep.tolist()


# =============================================================================================== registries
def test_registry_rejects_duplicates_and_non_dataclasses():
    reg: Registry = component_registry("demo")

    @reg.register("thing")
    @dataclass
    class Thing(Component):
        x: float = 1.0

    with pytest.raises(ConfigError, match="'thing' is already registered"):
        @reg.register("thing")
        @dataclass
        class Other(Component):
            pass

    assert reg.get("thing") is Thing and Thing.name == "thing" and Thing.knob == "demo"
    with pytest.raises(TypeError, match="dataclass"):
        reg.register("plain")(type("Plain", (Component,), {}))
    # the real registries too: re-registering a catalog name fails and leaves the original in place
    original = CLIPS.get("ppo")
    with pytest.raises(ConfigError, match="already registered"):
        CLIPS.register("ppo")(Thing)
    assert CLIPS.get("ppo") is original


@pytest.mark.parametrize("registry", [ADVANTAGES, CLIPS, KLS, TERMS, SAMPLINGS])
def test_unknown_component_lists_names(registry):
    with pytest.raises(ConfigError) as e:
        registry.build("no_such_thing")
    msg = str(e.value)
    assert "'no_such_thing'" in msg
    for name in registry.names():
        assert name in msg


def test_unknown_parameter_lists_allowed():
    with pytest.raises(ConfigError) as e:
        CLIPS.build("ppo", {"epsilon": 0.1})
    msg = str(e.value)
    assert "'epsilon'" in msg and "dual_clip, eps_high, eps_low" in msg
    with pytest.raises(ConfigError, match=r"\(none\)"):
        ADVANTAGES.build("dr_grpo", {"eps": 0.1})


@pytest.mark.parametrize("registry, name, params, field", [
    (CLIPS, "ppo", {"eps_low": "0.1"}, "ppo.eps_low"),
    (CLIPS, "ppo", {"eps_high": True}, "ppo.eps_high"),          # a bool is not a float
    (CLIPS, "ppo", {"dual_clip": "3"}, "ppo.dual_clip"),
    (CLIPS, "clip_cov", {"scope": 1}, "clip_cov.scope"),
    (CLIPS, "clip_cov", {"seed": 1.5}, "clip_cov.seed"),
    (KLS, "kl_cov", {"k": None}, "kl_cov.k"),
])
def test_wrong_type_names_the_field(registry, name, params, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        registry.build(name, params)


@pytest.mark.parametrize("registry, name, params, field", [
    (CLIPS, "ppo", {"eps_low": 1.5}, "ppo.eps_low"),
    (CLIPS, "ppo", {"eps_high": -0.1}, "ppo.eps_high"),
    (CLIPS, "dual_clip", {"dual_clip": 1.0}, "dual_clip.dual_clip"),
    (CLIPS, "clip_cov", {"ratio": 1.5}, "clip_cov.ratio"),
    (KLS, "kl_cov", {"k": 0}, "kl_cov.k"),
    (KLS, "ref_kl", {"coef": -1}, "ref_kl.coef"),
    (ADVANTAGES, "grpo", {"eps": -1e-3}, "grpo.eps"),
])
def test_out_of_range_names_the_field(registry, name, params, field):
    with pytest.raises(ConfigError) as e:
        registry.build(name, params)
    assert field in str(e.value) and "out of range" in str(e.value)


def test_ints_are_accepted_for_float_fields():
    rule = CLIPS.build("ppo", {"eps_high": 1, "dual_clip": 4})
    assert rule.eps_high == 1.0 and isinstance(rule.eps_high, float) and rule.dual_clip == 4.0
    assert CLIPS.build("dual_clip", {"dual_clip": None}).dual_clip is None


def test_objective_rejects_wrong_component_types_and_aggregation():
    from entrolab.objective import PolicyObjective

    with pytest.raises(ConfigError, match="PolicyObjective.clip"):
        PolicyObjective(clip=KLCov())
    with pytest.raises(ConfigError, match="token-mean"):
        PolicyObjective(aggregation="sum")


def test_objective_metrics_and_aggregation():
    b, logp = _random_update_batch(8)
    obj = methods.build("grpo")
    loss, m = obj(b)
    pg, _ = obj.clip.pg_loss(b)
    assert loss.item() == pytest.approx(aggregate_loss(pg, b.mask, "token-mean").item(), rel=1e-6)
    assert m["loss/total"] == pytest.approx(loss.item()) and "dynamics/cov_mean" in m and "loss/kl" not in m


# =============================================================================================== field docs
def _undocumented(registry: Registry) -> list[str]:
    """``name.field`` of every init field of every component of ``registry`` without a one-line doc."""
    return [f"{name}.{field}" for name in registry.names() for field, doc in registry.docs(name).items()
            if not doc.strip()]


def test_every_knob_hyperparameter_is_documented_at_its_field():
    """Each init field of every registered component has the string literal under it (a base class's counts), so
    ``entrolab methods show`` and the generated docs/methods-*.md tables have a doc for every hyperparameter."""
    from entrolab.knobs import advantage, clip, kl, objective, sampling

    registries = (sampling.SAMPLINGS, advantage.ADVANTAGES, clip.CLIPS, kl.KLS, objective.TERMS)
    assert sum(len(r) for r in registries) > 80  # every subpackage registered its components
    missing = [f"{r.kind}: {m}" for r in registries for m in _undocumented(r)]
    assert not missing, "undocumented knob hyperparameters (add a one-line string under each field):\n" + \
        "\n".join(missing)


def test_field_doc_check_catches_an_undocumented_field():
    reg: Registry = component_registry("clip", "test clip")

    @reg.register("documented")
    @dataclass
    class Documented(Component):
        ratio: float = 2e-4
        """Fraction of valid tokens (a fraction, not percent)."""

    @reg.register("bare")
    @dataclass
    class Bare(Documented):
        extra: int = 1

    assert reg.docs("bare")["ratio"] == "Fraction of valid tokens (a fraction, not percent)."
    assert _undocumented(reg) == ["bare.extra"]
