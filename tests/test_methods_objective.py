"""Catalog III — the objective knob: hand-computed formulas, claimed entropy effects on the toy policy against GRPO
from the same state, composition with methods of other knobs, and checkpointed state.

Toy margins observed when the thresholds were set (toy defaults: Adam lr 0.1, 2 PPO epochs × 2 mini-batches; each
method with its catalog ``toy_overrides``; final exact entropy after 30 steps, seeds 0–3 unless stated):

- GRPO 0.305 0.408 0.373 0.419 (45 steps, seeds 0–1: 0.20 0.27);
- adaptive_entropy (H* = 1, Δ = 0.05), 45 steps: entropy falls to ≈0.7 by step 20, then is held at 0.86–1.01
  over steps 35–45;
- aer 0.70 0.52 0.67 0.61; aent (band [0.9, 1.1]), 45 steps: 0.98 0.94; epo 0.76 0.76 0.72 0.77 vs the plain
  bonus at the same c_H 0.51 0.57 0.43 0.63; flowrl (β = 1) 0.61 0.75 0.66 0.72; d3s 0.49 0.54 0.60 0.61;
  ulorl 0.44 0.51 0.45 0.50; pos_adv_reweight 0.44 0.45 0.50 0.47; simko (α = 0.9) 0.44 0.44 0.52 0.57
  (α = 0.5: 0.43 0.41 0.47 0.51); steer (w_min = 0.01) 0.38 0.42 0.44 0.56 (the paper's w_min = 0.8:
  0.34 0.41 0.40 0.45); entropic (H* = 1, p_hi = 0.5) 0.46 0.50 0.44 0.58 (reward 0.80–0.87);
- aepo_he, per position (reflection = positions 0–1, answer = 2–3), seeds 0–1: reflection 0.63 0.64 vs GRPO
  0.31 0.32, answer 0.24 0.38 vs GRPO 0.30 0.50;
- one update, seeds 0–7: one_shot_em drops entropy by 0.13–0.16 vs GRPO's −0.02–0.02; pos_adv_reweight (λ₀ = 0)
  raises it on 8/8 seeds (−0.004 to −0.044).
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from batches import make_batch

from entrolab import methods
from entrolab.batch import BatchError
from entrolab.errors import ConfigError
from entrolab.knobs.objective.base import TERMS
from entrolab.knobs.objective.bonuses import (
    clamped_entropy_from_logits,
    difficulty_weights,
    epo_phase_weight,
    stage_ids_from_answer_start,
)
from entrolab.knobs.objective.selection import lemma1_sampled_logit, steer_omega
from entrolab.ops.dynamics import predicted_entropy_change
from entrolab.toy import TabularPolicy, ToySettings, _optimizer, train_toy
from entrolab.update import UpdateSettings, policy_update

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

OBJECTIVE_METHODS = ["adaptive_entropy", "aent", "aepo_he", "aer", "d3s", "dart_gui", "entropic", "epo", "flowrl",
                     "forking_tokens", "one_shot_em", "pos_adv_reweight", "simko", "steer", "ulorl"]
ALL_OBJECTIVE_METHODS = OBJECTIVE_METHODS + ["evol_rl"]


# =============================================================================================== harness
def _toy(name, **extra):
    if name == "grpo":
        return methods.build("grpo", **extra)
    return methods.build(name, **{**methods.get_method(name).toy_overrides, **extra})


def train_with_hooks(objective, policy, settings, clamp_p=0.25, top_k=3):
    """``train_toy`` plus the engine hooks the lead is asked for, emulated: the rollout adds the rollout policy's
    top-K token ids and log-probs and AEPO stage ids (reflection = first half of the positions); the update's
    forward adds the clamped entropy and the current top-K log-probs (with gradient) to the micro-batch extras."""
    s = settings
    gen = torch.Generator().manual_seed(s.seed)
    reference = copy.deepcopy(policy).requires_grad_(False) if objective.needs_reference else None
    params = list(policy.parameters()) + objective.parameters()
    opt = _optimizer(s.optimizer, params, s.lr)
    upd = UpdateSettings(ppo_epochs=s.ppo_epochs, mini_batches=s.mini_batches, grad_clip=None)
    hist = []
    for step in range(s.steps):
        rec = {"step": float(step), "entropy": policy.entropy(), "reward": policy.expected_reward()}
        prompts = torch.randperm(policy.num_prompts, generator=gen)[: s.prompts_per_step]
        batch = policy.rollout(prompts, s.group_size, gen, step=step, reference=reference)
        with torch.no_grad():
            top = torch.log_softmax(policy.logits[batch.extras["prompt_id"]], -1).topk(top_k, -1)
        stage = stage_ids_from_answer_start(batch.mask, torch.full((batch.batch_size,), policy.horizon // 2))
        batch = batch.replace(extras={**batch.extras, "topk_ids": top.indices, "old_topk_logprobs": top.values,
                                      "stage": stage})
        batch = objective.prepare(objective.compute_advantages(batch))

        def forward(mb):
            z = policy.logits[mb.extras["prompt_id"]]
            # emulates the proposed hook "forward returns extra per-token outputs" by filling the micro-batch's
            # extras dict, which policy_update's micro.replace(...) carries over
            mb.extras["clamped_entropy"] = clamped_entropy_from_logits(z, clamp_p)
            mb.extras["topk_logprobs"] = torch.log_softmax(z, -1).gather(-1, mb.extras["topk_ids"])
            return policy.logprobs_entropy(mb.extras["prompt_id"], mb.response_ids)

        rec.update(policy_update(objective, batch, forward, opt, params, upd, gen))
        objective.on_step_end(rec)
        hist.append(rec)
    hist.append({"step": float(s.steps), "entropy": policy.entropy(), "reward": policy.expected_reward()})
    return hist


_RUNS: dict = {}


def run(name, seed, steps=30, hooks=False, **extra):
    """History of a toy run (cached per test session), with the method's toy overrides."""
    if name == "grpo" and not extra:
        hooks = False  # the hooks consume no randomness: GRPO's trajectory is the same either way
    key = (name, seed, steps, hooks, tuple(sorted(extra.items())))
    if key not in _RUNS:
        policy = TabularPolicy(seed=seed)
        settings = ToySettings(steps=steps, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = _toy(name, **extra)
            hist = train_with_hooks(obj, policy, settings) if hooks else train_toy(obj, policy, settings)
        _RUNS[key] = (hist, policy, obj)
    return _RUNS[key]


def final_entropy(name, seeds=(0, 1), steps=30, hooks=False, **extra):
    return [run(name, s, steps, hooks, **extra)[0][-1]["entropy"] for s in seeds]


def one_update_drop(name, seed, hooks=False, **extra):
    hist, _, _ = run(name, seed, 1, hooks, **extra)
    return hist[0]["entropy"] - hist[-1]["entropy"]


def _update_batch(lengths, T=None, V=5, seed=0, **fields):
    """A RolloutBatch whose current log-probs and entropy come from random logits (B, T, V) with gradient;
    returns (batch, logits, fwd) with fwd(z) -> (logp, ent)."""
    g = torch.Generator().manual_seed(seed)
    T = T or max(lengths)
    B = len(lengths)
    logits = torch.randn(B, T, V, generator=g).requires_grad_(True)
    ids = torch.randint(0, V, (B, T), generator=g)

    def fwd(z):
        lp_all = torch.log_softmax(z, -1)
        return lp_all.gather(-1, ids[..., None]).squeeze(-1), -(lp_all.exp() * lp_all).sum(-1)

    logp, ent = fwd(logits)
    fields.setdefault("old_logprobs", logp.detach())
    fields.setdefault("old_entropy", ent.detach())
    fields.setdefault("advantages", torch.randn(B, T, generator=g))
    b = make_batch(lengths, T, logprobs=logp, entropy=ent, seed=seed, **fields)
    return b.replace(response_ids=ids), logits, fwd


def _same(a, b) -> bool:
    """Nested equality of state dicts that may hold tensors."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def _loss(obj, batch):
    batch = obj.prepare(batch)
    return obj(batch)


# =============================================================================================== catalog
@pytest.mark.parametrize("name", ALL_OBJECTIVE_METHODS)
def test_catalog_entry_is_complete(name):
    m = methods.get_method(name)
    assert m.arxiv and m.entropy_effect and "objective" in m.knobs
    assert m.evidence == "exact" or m.evidence.startswith("approximate — ")
    term = methods.build(name).terms[0]
    assert term.__doc__ and m.arxiv in term.__doc__  # docstring with formula and arXiv id
    assert "|" not in m.entropy_effect


@pytest.mark.parametrize("name", OBJECTIVE_METHODS)
def test_composes_with_another_knob_and_runs(name):
    """Each objective method composes with a clip-knob method (Clip-Cov) and runs one toy update."""
    obj = methods.build([name, "clip_cov"], **methods.get_method(name).toy_overrides)
    assert obj.methods == (name, "clip_cov") and obj.clip.name == "clip_cov"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = train_with_hooks(obj, TabularPolicy(seed=0), ToySettings(steps=2, seed=0))
    assert all(math.isfinite(h["entropy"]) for h in hist) and hist[0]["update/skipped"] == 0


def test_compositions_with_advantage_methods():
    obj = methods.build(["flowrl", "rloo"])
    assert obj.advantage.name == "rloo" and obj.aggregation == "seq-mean-token-sum"
    obj = methods.build(["forking_tokens", "dr_grpo"])
    assert obj.aggregation == "seq-mean-token-sum-norm" and obj.terms[0].name == "forking_tokens"
    with pytest.raises(ConfigError, match="'aggregation'"):
        methods.build(["flowrl", "dr_grpo"])  # both set the aggregation slot
    with pytest.raises(ConfigError, match="'objective'"):
        methods.build(["forking_tokens", "entropy_bonus"])  # one objective list per composition


@pytest.mark.parametrize("name", ["adaptive_entropy", "aer", "aent", "epo", "d3s", "pos_adv_reweight", "entropic",
                                  "flowrl"])
def test_state_round_trips_through_the_objective(name):
    """A resumed run continues the same control trajectory: train 4 steps, checkpoint, then 2 more steps in both the
    original and a rebuilt-and-restored objective (same policy copy) give identical losses."""
    obj = _toy(name)
    policy = TabularPolicy(seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_with_hooks(obj, policy, ToySettings(steps=4, seed=3))
        state = copy.deepcopy(obj.state_dict())
        assert state, f"{name} keeps state"
        twin = _toy(name)
        twin.load_state_dict(state)
        for o in (twin, obj):
            assert _same(o.state_dict(), state)
        h1 = train_with_hooks(obj, copy.deepcopy(policy), ToySettings(steps=2, seed=9))
        h2 = train_with_hooks(twin, copy.deepcopy(policy), ToySettings(steps=2, seed=9))
    assert [h.get("loss/total") for h in h1] == [h.get("loss/total") for h in h2]


@pytest.mark.parametrize("name", ["adaptive_entropy", "aer", "aent", "aepo_he", "epo", "one_shot_em"])
def test_entropy_terms_carry_gradient_and_share_the_mask(name):
    """(c) Every entropy-bonus-type term differentiates through H (non-zero gradient) and puts nothing on padding."""
    overrides = {"adaptive_entropy": {"objective.0.init": 0.1, "objective.0.target": 10.0},
                 "aer": {"objective.0.correct_threshold": 0.5, "objective.0.init": 0.01},
                 "aent": {"objective.0.clamp_p": 0.0}}.get(name, {})
    obj = methods.build(name, **overrides)
    lengths = [3, 1, 2, 2]
    b, logits, fwd = _update_batch(lengths, 3, advantages=torch.zeros(4, 3), rewards=[1.0, 0.0, 0.0, 1.0],
                                   group_ids=[0, 0, 1, 1])
    b = b.replace(extras={**b.extras, "stage": stage_ids_from_answer_start(b.mask, torch.tensor([1, 1, 1, 1]))})
    for _ in range(2):  # give EPO a history
        obj.prepare(b)
        obj.on_step_end({})
    loss, _ = _loss(obj, b)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.abs().sum() > 1e-6
    assert (grad[1, 1:] == 0).all() and (grad[2, 2:] == 0).all()
    with pytest.raises(BatchError, match="carries no gradient"):
        obj(b.replace(entropy=b.entropy.detach()))


# =============================================================================================== adaptive_entropy
def test_adaptive_entropy_formula_and_gate():
    obj = methods.build("adaptive_entropy", init=0.3, delta=0.1, target=0.2)
    b, logits, fwd = _update_batch([2, 2], advantages=torch.zeros(2, 2), old_entropy=torch.full((2, 2), 0.1))
    loss, m = _loss(obj, b)  # H_k = 0.1 < H*: the gate is open, α = c₀ = 0.3
    assert float(loss) == pytest.approx(-0.3 * float(b.entropy.detach().mean()), rel=1e-6)
    assert m["control/adaptive_entropy/coef"] == 0.3
    obj.on_step_end({})                   # c ← 0.3 + 0.1·sign(0.2 − 0.1) = 0.4
    b_hot = b.replace(old_entropy=torch.full((2, 2), 0.5))
    loss, m = _loss(obj, b_hot)           # H_k = 0.5 > H*: gate shut, no bonus, c still 0.4
    assert float(loss) == pytest.approx(0.0, abs=1e-7) and m["control/adaptive_entropy/value"] == pytest.approx(0.4)
    obj.on_step_end({})
    assert obj.terms[0].coefficient() == pytest.approx(0.3)


def test_adaptive_entropy_holds_entropy_near_its_target():
    for seed in (0, 1):
        hist = run("adaptive_entropy", seed, steps=45)[0]
        late = [h["entropy"] for h in hist[-10:]]
        assert 0.75 < sum(late) / len(late) < 1.15, late          # target 1.0
    assert run("grpo", 0, steps=45)[0][-1]["entropy"] < 0.45         # GRPO from the same state collapses past it


# =============================================================================================== aer
def test_aer_difficulty_weights_and_anchored_target():
    # groups: 0 = [1, 0, 1, 1] (acc ¾), 1 = [0, 0] (acc 0), 2 = [1, 1] (acc 1) → 1 − acc = ¼, 1, 0; mean 5/12
    d = difficulty_weights(torch.tensor([1.0, 0, 1, 1, 0, 0, 1, 1]), torch.tensor([0, 0, 0, 0, 1, 1, 2, 2]), 1.0)
    torch.testing.assert_close(d, torch.tensor([0.6, 0.6, 0.6, 0.6, 2.4, 2.4, 0.0, 0.0]))
    assert difficulty_weights(torch.ones(3), torch.zeros(3, dtype=torch.long), 1.0).abs().sum() == 0

    obj = methods.build("aer", init=0.01, gain=0.1, target_ratio=0.5)
    b, logits, fwd = _update_batch([2, 2], advantages=torch.zeros(2, 2), rewards=[1.0, 0.0], group_ids=[0, 1],
                                   old_entropy=torch.full((2, 2), 2.0))
    loss, _ = _loss(obj, b)  # d = [0, 2] (group 0 solved, group 1 not): ℓ = −0.01·d_i·H, token-mean over 4
    expected = -0.01 * 2.0 * float(b.entropy[1].sum()) / 4
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    obj.on_step_end({})      # H* = 0.5·2 = 1, e = 2 − 1 = 1 → α = clip(0.01 − 0.1·1, 0, .01) = 0
    assert obj.terms[0]._ctl.value() == 0.0 and obj.terms[0]._ctl.band == (1.0, 1.0)


def test_aer_keeps_more_entropy_than_grpo():
    ours, base = final_entropy("aer"), final_entropy("grpo")
    assert all(o > b + 0.08 for o, b in zip(ours, base)), (ours, base)


# =============================================================================================== aent
def test_clamped_entropy_hand_case():
    z = torch.tensor([0.0, 1.0, 2.0, 3.0], requires_grad=True)
    for p, kept in ((0.25, [1.0, 2.0, 3.0]), (0.3, [1.0, 2.0, 3.0]), (0.5, [2.0, 3.0]), (0.0, [0.0, 1.0, 2.0, 3.0])):
        q = torch.softmax(torch.tensor(kept), -1)
        assert float(clamped_entropy_from_logits(z, p)) == pytest.approx(float(-(q * q.log()).sum()), rel=1e-6)
    (g,) = torch.autograd.grad(clamped_entropy_from_logits(z, 0.25), z)
    assert g[0] == 0 and g[1:].abs().sum() > 0     # the dropped logit gets no gradient
    assert float(clamped_entropy_from_logits(torch.tensor([0.0, 2.0]), 0.0, temperature=2.0)) == pytest.approx(
        float(-(torch.softmax(torch.tensor([0.0, 1.0]), -1) * torch.log_softmax(torch.tensor([0.0, 1.0]), -1)).sum()))


def test_aent_band_controller_and_missing_hook():
    obj = methods.build("aent", warmup=1)
    b, logits, fwd = _update_batch([2, 2], advantages=torch.zeros(2, 2))
    with pytest.raises(BatchError, match="clamped_entropy"):
        obj(b)
    ent_c = clamped_entropy_from_logits(logits, 0.25)
    bc = b.replace(extras={**b.extras, "clamped_entropy": ent_c})
    loss, m = obj(bc)
    assert float(loss) == pytest.approx(-3e-4 * float(ent_c.mean()), rel=1e-5)
    term = obj.terms[0]
    obj.on_step_end({})                           # warm-up step: λ stays at λ₀
    assert term._ctl.value() == 3e-4
    obj(bc.replace(extras={**b.extras, "clamped_entropy": torch.full((2, 2), 0.25, requires_grad=True)}))
    obj.on_step_end({})                           # H̃ = 0.25 < 0.35: λ ← 3e-4 − 1e-4·(0.25 − 0.35)
    assert term._ctl.value() == pytest.approx(3e-4 + 1e-5)
    obj(bc.replace(extras={**b.extras, "clamped_entropy": torch.full((2, 2), 9.0, requires_grad=True)}))
    obj.on_step_end({})                           # far above the band: clipped at λ_min
    assert term._ctl.value() == pytest.approx(4e-5)


def test_aent_drives_entropy_back_into_its_band():
    for seed in (0, 1):
        hist = run("aent", seed, steps=45, hooks=True)[0]
        assert hist[-1]["entropy"] > 0.8, [round(h["entropy"], 2) for h in hist]   # band [0.9, 1.1] (clamped)
        assert min(h["entropy"] for h in hist) < 0.75                              # it had fallen below first


# =============================================================================================== aepo_he
def test_aepo_stage_formula():
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    stage = stage_ids_from_answer_start(mask, torch.tensor([2, 5]))
    assert stage.tolist() == [[1, 1, 2, 0], [1, 1, 0, 0]]
    obj = methods.build("aepo_he", coef_reflection=0.5, coef_answer=0.25)
    b, logits, fwd = _update_batch([3, 2], 4, advantages=torch.zeros(2, 4))
    b = b.replace(extras={**b.extras, "stage": stage})
    loss, _ = obj(b)
    H = b.entropy.detach()
    expected = (-0.5 * (H[0, :2].sum() + H[1, :2].sum()) + 0.25 * H[0, 2]) / 5
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(BatchError, match="stage"):
        obj(make_batch([1], logprobs=torch.zeros(1, 1), entropy=torch.ones(1, 1), advantages=torch.zeros(1, 1)))


def test_aepo_raises_reflection_entropy_and_lowers_answer_entropy():
    from entrolab.ops.dynamics import exact_entropy
    for seed in (0, 1):
        h_ours = exact_entropy(run("aepo_he", seed, hooks=True)[1].logits.detach()).mean(0)  # per position
        h_base = exact_entropy(run("grpo", seed, hooks=True)[1].logits.detach()).mean(0)
        assert h_ours[:2].mean() > h_base[:2].mean() + 0.1, (h_ours, h_base)   # reflection positions
        assert h_ours[2:].mean() < h_base[2:].mean(), (h_ours, h_base)         # answer positions


# =============================================================================================== epo
def test_epo_phase_weight():
    assert epo_phase_weight(0, 150) == 1.0
    assert epo_phase_weight(74, 150) == pytest.approx(1 - 0.2 * (1 - math.exp(-2 * 74 / 75)))
    assert epo_phase_weight(75, 150) == pytest.approx(0.8)
    assert epo_phase_weight(150, 150) == pytest.approx(0.8 * math.exp(-3))


def test_epo_penalty_has_a_gradient_unlike_the_released_constant():
    obj = methods.build("epo", coef=1.0, smooth_coef=1.0, phase_weight=False)
    term = obj.terms[0]
    hist_batch = make_batch([3], old_entropy=torch.ones(1, 3))
    obj.prepare(hist_batch)
    obj.on_step_end({})                                   # H̄_0 = 1.0, band [0.8, 1.2]
    assert term.history() == {0: 1.0}
    ent = torch.tensor([[1.5, 0.5, 1.0]], requires_grad=True)
    b = make_batch([3], logprobs=torch.full((1, 3), -1.0, requires_grad=True), entropy=ent,
                   advantages=torch.zeros(1, 3), old_entropy=torch.ones(1, 3))
    pen, covered = term.penalty(ent, b)
    torch.testing.assert_close(pen.detach(), torch.tensor([[0.3, 0.3, 0.0]]))
    (g,) = torch.autograd.grad(pen.sum(), ent)
    torch.testing.assert_close(g, torch.tensor([[1.0, -1.0, 0.0]]))      # pulls H back into the band
    loss, m = obj(b)
    (g_loss,) = torch.autograd.grad(loss, ent)
    # loss = mean(−c_H·H + c_H·c_s·P): −1/3 everywhere plus ±1/3 outside the band
    torch.testing.assert_close(g_loss, torch.tensor([[0.0, -2 / 3, -1 / 3]]))
    # the released code's penalty: a constant picked by torch.where → no gradient at all
    released = torch.where((ent > 1.2) | (ent < 0.8), torch.tensor(0.1), torch.tensor(0.0))
    assert not released.requires_grad
    assert m["epo/outside_band_frac"] == pytest.approx(2 / 3)


def test_epo_smoothing_keeps_more_entropy_than_its_bonus_alone():
    coef = methods.get_method("epo").toy_overrides["objective.0.coef"]
    ours = final_entropy("epo")
    bonus = final_entropy("entropy_bonus", **{"objective.0.coef": coef})
    assert all(o > b + 0.1 for o, b in zip(ours, bonus)), (ours, bonus)
    assert max(h.get("epo/outside_band_frac", 0.0) for h in run("epo", 0)[0]) > 0.1  # the penalty fired


# =============================================================================================== one_shot_em
def test_entropy_minimisation_is_the_token_mean_entropy_and_ignores_rewards():
    obj = methods.build("one_shot_em")
    b, logits, fwd = _update_batch([3, 1], 3, rewards=[1.0, 0.0])
    loss, _ = obj(b)
    mask = b.mask
    assert float(loss) == pytest.approx(float((b.entropy * mask).sum() / mask.sum()), rel=1e-6)
    (g,) = torch.autograd.grad(loss, logits)
    (g_ref,) = torch.autograd.grad(((fwd(logits)[1] * mask).sum() / mask.sum()), logits)
    torch.testing.assert_close(g, g_ref)
    b2 = b.replace(advantages=-5 * b.advantages, rewards=torch.tensor([0.0, 7.0]))
    assert float(obj(b2)[0]) == pytest.approx(float(loss))


def test_surrogate_replacing_terms_keep_a_composed_kl_penalty():
    """one_shot_em and flowrl replace the policy-gradient surrogate, not the KL knob: composed with a reference KL,
    the loss is theirs plus the KL penalty's token mean, with the KL's gradient."""
    b, logits, fwd = _update_batch([3, 1], 3, rewards=[1.0, 0.0])
    ref = b.logprobs.detach() - 0.3  # log π − log π_ref = 0.3 on every token
    b = b.replace(ref_logprobs=ref, extras={**b.extras, "prompt_id": torch.tensor([1, 2])})
    mask = b.mask
    for name in ("one_shot_em", "flowrl"):
        alone = float(methods.build(name)(b)[0])
        with_kl, metrics = methods.build(name, kl={"name": "ref_kl", "estimator": "k1", "coef": 0.5})(b)
        # k1 penalty = coef · (log π − log π_ref) = 0.5 · 0.3 per token; flowrl aggregates seq-mean-token-sum
        per_seq = 0.15 * mask.sum(-1)
        expected = 0.15 if name == "one_shot_em" else float(per_seq.mean())
        assert float(with_kl) - alone == pytest.approx(expected, abs=1e-4), name  # without the KL: 0
        assert metrics["loss/kl"] == pytest.approx(expected, rel=1e-5)


def test_one_shot_em_sharpens_in_one_update():
    for seed in range(8):
        assert one_update_drop("one_shot_em", seed) > one_update_drop("grpo", seed) + 0.05


# =============================================================================================== flowrl
def test_flowrl_residual_loss_and_log_z_gradient():
    obj = methods.build("flowrl", beta=2.0, weight_clip=0.2)
    term = obj.terms[0]
    lp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.1], [-0.5, -0.9]])
    ref = torch.tensor([[-1.5, -1.5], [-1.0, 0.0]])
    adv = torch.tensor([[0.5, 0.5], [-0.5, 0.0]])
    b = make_batch([2, 1], 2, old_logprobs=old, logprobs=lp, ref_logprobs=ref, advantages=adv,
                   extras={"prompt_id": torch.tensor([7, 7])})
    with torch.no_grad():
        term._log_z[7] = 0.25
    loss, _ = obj(b)
    # row 0: Δ = .25 + (−3)/2 − 2·.5 − (−3)/2 = −.75;  w = exp(0 + .1) = 1.105 → clipped 1.105 (< 1.2)
    # row 1: Δ = .25 + (−.5) − 2·(−.5) − (−1) = 1.75;  w = exp(0) = 1
    d0, d1, w0 = -0.75, 1.75, math.exp(0.1)
    assert float(loss) == pytest.approx((w0 * d0 ** 2 + d1 ** 2) / 2, rel=1e-5)
    assert obj.parameters() == [term._log_z]
    (g,) = torch.autograd.grad(loss, term._log_z)
    assert float(g[7]) == pytest.approx((2 * w0 * d0 + 2 * d1) / 2, rel=1e-5) and float(g.abs().sum() - g[7].abs()) == 0
    b_big = b.replace(old_logprobs=old - 1.0)     # w = e² and e¹ → clipped to 1.2
    loss_big, _ = obj(b_big)
    assert float(loss_big) == pytest.approx(1.2 * (d0 ** 2 + d1 ** 2) / 2, rel=1e-5)


def test_flowrl_learns_log_z_and_keeps_more_entropy_than_grpo():
    ours, base = final_entropy("flowrl"), final_entropy("grpo")
    assert all(o > b + 0.15 for o, b in zip(ours, base)), (ours, base)
    _, _, obj = run("flowrl", 0)
    assert obj.terms[0]._log_z.detach().abs().max() > 0.01   # the component-owned log Z was trained


# =============================================================================================== forking tokens
def test_forking_tokens_select_top_entropy_over_the_batch_and_normalise():
    ent = torch.tensor([[0.1, 2.0, 0.3], [1.5, 0.2, 9.0], [0.4, 0.5, 1.0]])
    lengths = [3, 2, 3]                                    # the 9.0 is padding: never selected
    b, logits, fwd = _update_batch(lengths, 3, old_entropy=ent)
    for normalizer, denom in (("selected", 2.0), ("all", 8.0)):
        obj = methods.build(["forking_tokens"], normalizer=normalizer, ratio=0.2)   # ⌈0.2·8⌉ = 2: 2.0 and 1.5
        loss, m = _loss(obj, b)
        pg, _ = obj.clip.pg_loss(b)
        assert float(loss) == pytest.approx(float((pg[0, 1] + pg[1, 0]) / denom), rel=1e-6)
        (g,) = torch.autograd.grad(loss, b.logprobs, retain_graph=True)
        assert set(map(tuple, torch.nonzero(g).tolist())) <= {(0, 1), (1, 0)}
    assert m["select/forking_tokens_frac"] == pytest.approx(2 / 8)


def test_forking_tokens_batch_threshold_is_micro_batch_invariant():
    g = torch.Generator().manual_seed(1)
    b, logits, fwd = _update_batch([4, 3, 4, 2], 4, old_entropy=torch.rand(4, 4, generator=g))
    obj = methods.build("forking_tokens")
    prepared = obj.prepare(b)
    full, _ = obj(prepared.replace(global_num_tokens=float(b.num_tokens)))
    parts = [obj(prepared.select(torch.tensor(ix)).replace(global_num_tokens=float(b.num_tokens)))[0]
             for ix in ([0, 1], [2, 3])]
    assert float(sum(parts)) == pytest.approx(float(full), rel=1e-6)
    with pytest.raises(ConfigError, match="prepare"):
        obj(b)                                             # batch scope without prepare is refused


def test_forking_tokens_update_only_selected_states():
    """One SGD update from a fresh policy: a state (prompt, position) none of whose tokens was selected keeps its
    logits exactly; the others move."""
    policy = TabularPolicy(seed=2)
    before = policy.logits.detach().clone()
    obj = methods.build("forking_tokens")
    gen = torch.Generator().manual_seed(2)
    batch = policy.rollout(torch.arange(4), 8, gen)
    batch = obj.prepare(obj.compute_advantages(batch))
    sel = batch.extras["forking_tokens_weight"] > 0
    opt = torch.optim.SGD(policy.parameters(), lr=1.0)
    policy_update(obj, batch, lambda mb: policy.logprobs_entropy(mb.extras["prompt_id"], mb.response_ids), opt,
                  list(policy.parameters()), UpdateSettings(grad_clip=None))
    touched = torch.zeros(policy.num_prompts, policy.horizon, dtype=torch.bool)
    rows, cols = torch.nonzero(sel, as_tuple=True)
    touched[batch.extras["prompt_id"][rows], cols] = True
    moved = (policy.logits.detach() - before).abs().sum(-1) > 0
    assert int(sel.sum()) == math.ceil(0.2 * batch.num_tokens)
    assert not bool((moved & ~touched).any())
    assert bool(moved.any())


# =============================================================================================== dart_gui, d3s
def test_dart_gui_selects_whole_high_entropy_steps():
    ent = torch.tensor([[0.1, 0.2, 3.0, 3.0], [1.0, 1.0, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5]])
    steps = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 2, 3]])
    b, logits, fwd = _update_batch([4, 4, 4], 4, old_entropy=ent, extras={"step_id": steps})
    obj = methods.build("dart_gui", ratio=0.25)            # 8 steps → ⌈2⌉: (row 0, step 1) 3.0, (row 1, step 0) 1.0
    loss, _ = _loss(obj, b)
    (g,) = torch.autograd.grad(loss, b.logprobs)
    assert set(map(tuple, torch.nonzero(g).tolist())) <= {(0, 2), (0, 3), (1, 0), (1, 1)}
    assert (g[0, 2:] != 0).all() and (g[1, :2] != 0).all()
    # without step ids each response is one step: the highest-mean response (row 0, 1.65) alone at ratio 1/3
    loss, _ = _loss(methods.build("dart_gui", ratio=1 / 3), b.replace(extras={}))
    (g,) = torch.autograd.grad(loss, b.logprobs)
    assert (g[0] != 0).all() and (g[1:] == 0).all()


def test_d3s_scores_abs_adv_times_entropy_with_a_schedule():
    ent = torch.tensor([[1.0, 2.0], [3.0, 0.1]])
    adv = torch.tensor([[-2.0, 0.1], [0.5, 5.0]])          # |A|·H = 2, .2, 1.5, .5
    b, logits, fwd = _update_batch([2, 2], 2, old_entropy=ent, advantages=adv)
    obj = methods.build("d3s", ratio_start=0.25, ratio_end=0.75, schedule_steps=2)
    term = obj.terms[0]
    assert torch.equal(obj.prepare(b).extras["d3s_weight"] > 0, torch.tensor([[True, False], [False, False]]))
    obj.on_step_end({})                                    # ρ = 0.5 → 2 tokens
    assert term.ratio() == 0.5
    assert torch.equal(obj.prepare(b).extras["d3s_weight"] > 0, torch.tensor([[True, False], [True, False]]))
    obj.on_step_end({})
    obj.on_step_end({})
    assert term.ratio() == 0.75 and term.state_dict() == {"step": 3}


def test_d3s_keeps_more_entropy_than_grpo():
    ours, base = final_entropy("d3s"), final_entropy("grpo")
    assert all(o > b + 0.08 for o, b in zip(ours, base)), (ours, base)


# =============================================================================================== ulorl
def test_ulorl_masks_mastered_positive_tokens_only_when_entropy_is_low():
    old_lp = torch.log(torch.tensor([[0.995, 0.5, 0.999], [0.999, 0.999, 0.2], [0.999, 0.995, 0.3]]))
    ent = torch.tensor([[0.1, 0.2, 0.15], [0.1, 0.1, 0.1], [0.5, 0.5, 0.5]])
    # row 0: positive, H̄ = .15 < .2 → tokens 0 and 2 (p ≥ .99) masked; row 1: reward 0 → nothing;
    # row 2: positive but H̄ = .5 ≥ σ → nothing
    b, logits, fwd = _update_batch([3, 3, 3], 3, old_logprobs=old_lp, old_entropy=ent, rewards=[1.0, 0.0, 1.0])
    obj = methods.build("ulorl")
    w = obj.prepare(b).extras["ulorl_weight"]
    torch.testing.assert_close(w, torch.tensor([[0.0, 1, 0], [1, 1, 1], [1, 1, 1]]))
    loss, m = obj(obj.prepare(b))
    pg, _ = obj.clip.pg_loss(b)
    assert float(loss) == pytest.approx(float((pg * w).sum() / 9), rel=1e-6)   # token-mean over all 9 tokens
    assert m["ulorl/masked_frac"] == pytest.approx(2 / 9)
    # batch-level entropy (mean .2333 ≥ σ): nothing is masked
    assert (methods.build("ulorl", entropy_scope="batch").prepare(b).extras["ulorl_weight"] == 1).all()


def test_ulorl_keeps_more_entropy_than_grpo():
    ours, base = final_entropy("ulorl"), final_entropy("grpo")
    assert all(o > b + 0.05 for o, b in zip(ours, base)), (ours, base)
    assert max(h.get("ulorl/masked_frac", 0.0) for h in run("ulorl", 0)[0]) > 0.05   # the thermostat fired


# =============================================================================================== pos_adv_reweight
def test_pos_adv_reweight_weights_and_schedules():
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    b, logits, fwd = _update_batch([2, 2], 2, advantages=adv, old_entropy=torch.full((2, 2), 0.1))
    obj = methods.build("pos_adv_reweight", init=0.5, delta=0.25)
    loss, _ = _loss(obj, b)
    pg, _ = obj.clip.pg_loss(b)
    assert float(loss) == pytest.approx(float((0.5 * pg[0].sum() + pg[1].sum()) / 4), rel=1e-6)
    lams = []
    for h in (0.1, 0.1, 0.1, 0.5, 0.5):                    # H < δ: λ − Δ, else λ + Δ, clipped to [0, 1]
        obj.prepare(b.replace(old_entropy=torch.full((2, 2), h)))
        lams.append(obj.terms[0].weight())
        obj.on_step_end({})
    assert lams == pytest.approx([0.5, 0.25, 0.0, 0.0, 0.25])
    stage = methods.build("pos_adv_reweight", schedule="stage", total_steps=10).terms[0]
    epoch = methods.build("pos_adv_reweight", schedule="epoch", num_epochs=3, steps_per_epoch=2).terms[0]
    seen_s, seen_e = [], []
    for _ in range(10):
        seen_s.append(stage.weight())
        seen_e.append(epoch.weight())
        stage.on_step_end({})
        epoch.on_step_end({})
    assert seen_s == pytest.approx([0, 0, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8])
    assert seen_e == pytest.approx([0, 0, 0.5, 0.5, 1, 1, 1, 1, 1, 1])
    with pytest.raises(ConfigError, match="total_steps"):
        methods.build("pos_adv_reweight", schedule="stage")


def test_pos_adv_reweight_raises_entropy_in_one_update_and_over_a_run():
    drops = [one_update_drop("pos_adv_reweight", s) for s in range(8)]
    assert all(d < 0 for d in drops), drops             # λ₀ = 0: only negative-advantage tokens train
    ours, base = final_entropy("pos_adv_reweight"), final_entropy("grpo")
    assert all(o > b + 0.03 for o, b in zip(ours, base)), (ours, base)


# =============================================================================================== simko
def test_simko_gradient_spreads_over_top_k_and_scales_wrong_top1():
    # one response of 5 tokens, entropies make token 4 the only one above the 0.8-quantile
    K, alpha = 3, 0.3
    lp = torch.log(torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.6]])).requires_grad_(True)
    old_top = torch.log(torch.tensor([0.6, 0.3, 0.1])).expand(1, 5, 3).clone()
    cur_top = old_top.clone().requires_grad_(True)
    ent = torch.tensor([[0.1, 0.2, 0.3, 0.4, 2.0]])
    extras = {"old_topk_logprobs": old_top, "topk_logprobs": cur_top}
    for adv_val in (1.0, -1.0):
        b = make_batch([5], old_logprobs=lp.detach(), logprobs=lp, old_entropy=ent,
                       advantages=torch.full((1, 5), adv_val), extras=extras)
        obj = methods.build("simko", alpha=alpha, top_k=K)
        loss, m = obj(b)
        plain, _ = methods.build("grpo")(b)
        g_lp, g_top = torch.autograd.grad(loss, (lp, cur_top))
        if adv_val > 0:
            # same value as PPO (r̃ = r), gradient: −A(1−α)/N on log π, −A·α/(K·N) on each top-k log-prob
            assert float(loss) == pytest.approx(float(plain), rel=1e-6)
            assert float(g_lp[0, 4]) == pytest.approx(-(1 - alpha) / 5, rel=1e-5)
            torch.testing.assert_close(g_top[0, 4], torch.full((3,), -alpha / (K * 5)))
            assert (g_top[0, :4] == 0).all() and float(g_lp[0, 0]) == pytest.approx(-1 / 5)
            assert m["simko/pos_frac"] == pytest.approx(1 / 5)
        else:
            # the sampled token (p .6) is the rollout top-1 at the forking token: advantage × 1.1 there
            assert float(g_lp[0, 4]) == pytest.approx(1.1 / 5, rel=1e-5) and float(g_lp[0, 0]) == pytest.approx(1 / 5)
            assert float(loss) == pytest.approx(float(plain) + 0.1 / 5, rel=1e-5)
            assert (g_top == 0).all() and m["simko/neg_top1_frac"] == pytest.approx(1 / 5)
    with pytest.raises(BatchError, match="topk"):
        obj(b.replace(extras={}))


def test_simko_keeps_more_entropy_than_grpo():
    ours, base = final_entropy("simko", hooks=True), final_entropy("grpo", hooks=True)
    gaps = [o - b for o, b in zip(ours, base)]
    assert min(gaps) > 0.01 and sum(gaps) / len(gaps) > 0.05, (ours, base)


# =============================================================================================== steer
def test_steer_omega_is_lemma1_of_ops_dynamics():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 7, generator=g)
    a = torch.randint(0, 7, (6,), generator=g)
    adv = torch.randn(6, generator=g)
    logp_all = torch.log_softmax(z, -1)
    lp = logp_all.gather(-1, a[:, None]).squeeze(-1)
    old_lp = lp - 0.3 * torch.rand(6, generator=g)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    dz_a = adv * (1 - lp.exp()) / old_lp.exp()                # δ = (A/π_old)·(1 − π)
    dz = torch.zeros_like(z).scatter(-1, a[:, None], dz_a[:, None])
    torch.testing.assert_close(steer_omega(lp, old_lp, adv, ent), -predicted_entropy_change(z, dz))
    torch.testing.assert_close(lemma1_sampled_logit(lp, ent, dz_a), predicted_entropy_change(z, dz))


def test_steer_weights_hand_case():
    # on-policy (π = π_old): Ω = A·(1 − π)·(log π + H)
    p = torch.tensor([[0.5, 0.5, 0.9]])
    ent = torch.tensor([[1.0, 0.693147, 0.2]])
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    b, logits, fwd = _update_batch([3], 3, old_logprobs=p.log(), old_entropy=ent, advantages=adv)
    omega = (adv * (1 - p) * (p.log() + ent)).abs()
    for mode, w_max in (("exp", 1.0), ("linear", 1.2)):
        obj = methods.build("steer", scope="batch", mode=mode, w_max=w_max)
        w = obj.prepare(b).extras["steer_weight"]
        if mode == "exp":
            k = -math.log(0.8) / max(float(omega.max()), 0.02)
            expected = torch.exp(-k * omega).clamp(0.8, 1.0)
        else:
            expected = 1.2 - (omega - omega.min()) / (omega.max() - omega.min()) * 0.4
        torch.testing.assert_close(w, expected)
        assert float(w[0, omega[0].argmax()]) == pytest.approx(0.8)   # the largest |Ω| gets w_min
    loss, _ = methods.build("steer")(b)                                 # micro scope: current π_θ and H
    pg, _ = methods.build("grpo").clip.pg_loss(b)
    om = steer_omega(b.logprobs, b.old_logprobs, adv, b.entropy).abs()
    w_micro = torch.exp(math.log(0.8) / max(float(om.max()), 0.02) * om).clamp(0.8, 1.0)
    assert float(loss) == pytest.approx(float((pg * w_micro).mean()), rel=1e-6)


def test_steer_keeps_more_entropy_than_grpo():
    seeds = (0, 1, 2, 3)
    ours, base = final_entropy("steer", seeds), final_entropy("grpo", seeds)
    gaps = [o - b for o, b in zip(ours, base)]
    assert sum(g > 0 for g in gaps) >= 3 and sum(gaps) / 4 > 0.04, (ours, base)


# =============================================================================================== entropic
def test_entropic_pi_weights_high_probability_tokens():
    p = torch.tensor([[0.97, 0.5, 0.99, 0.2]])
    lp = p.log().requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -2.0, -2.0]])
    b = make_batch([4], old_logprobs=lp.detach(), logprobs=lp, advantages=adv, old_entropy=torch.full((1, 4), 0.1))
    obj = methods.build("entropic", target=0.5, kp=1.0, ki=0.5)
    loss, m = _loss(obj, b)
    alpha = -0.4                                             # e = 0.1 − 0.5, no integral yet
    assert m["control/entropic/value"] == pytest.approx(alpha)
    pg, _ = obj.clip.pg_loss(b)
    # tokens 0 and 2 have π > 0.95: w = 2 selected of 4 → N/N_sel = 2; r = 1
    extra = alpha * 2 * (-(1.0) - 2.0) / 4
    assert float(loss) == pytest.approx(float(pg.mean()) + extra, rel=1e-6)
    (g,) = torch.autograd.grad(loss, lp)
    # ∂/∂log π: −A/N from the surrogate, −α·2·|A|/N at the selected tokens (r = 1)
    torch.testing.assert_close(g, torch.tensor([[(-1 + 0.8) / 4, -1 / 4, (2 + 1.6) / 4, 2 / 4]]))
    obj.on_step_end({})
    obj.prepare(b)
    assert obj.terms[0]._ctl.value() == pytest.approx(-0.4 + 0.5 * -0.4)  # K_i·Σ e enters at the next step


def test_entropic_alpha_sign_moves_entropy_the_right_way_in_one_update():
    for seed in range(6):
        base = one_update_drop("grpo", seed)
        low = one_update_drop("entropic", seed, **{"objective.0.target": 5.0, "objective.0.high_prob": 0.0})
        high = one_update_drop("entropic", seed, **{"objective.0.target": 0.0, "objective.0.high_prob": 0.0})
        assert low < base < high, (seed, low, base, high)   # α = −1 raises entropy, α = +1 lowers it
    ours, ref = final_entropy("entropic"), final_entropy("grpo")
    assert all(o > b + 0.05 for o, b in zip(ours, ref)), (ours, ref)


def test_term_parameter_checks():
    for name, params, field in [("forking_tokens", {"ratio": 0.0}, "ratio"), ("forking_tokens", {"scope": "x"}, "scope"),
                                ("steer", {"mode": "log"}, "mode"), ("ulorl", {"entropy_scope": "x"}, "entropy_scope"),
                                ("epo", {"kappa_low": 2.0}, "kappa"), ("pos_adv_reweight", {"schedule": "x"}, "schedule"),
                                ("simko", {"top_k": 0}, "top_k"), ("flowrl", {"num_buckets": 0}, "num_buckets"),
                                ("aent", {"clamp_p": 1.0}, "clamp_p")]:
        with pytest.raises(ConfigError, match=field):
            TERMS.build(name, params)


# =============================================================================================== evol_rl
def test_evol_rl_rewards_hand_case():
    from entrolab.env.reward_sources import evol_rl_rewards
    # group 0: answers 4, 4, 4, 7, None → majority {0, 1, 2}, minority {3}, no answer {4}
    # embeddings (unit vectors): 0 and 1 identical, 2 orthogonal to both, 3 at 60° from 0/1
    vecs = {"a": [1.0, 0.0, 0.0], "b": [1.0, 0.0, 0.0], "c": [0.0, 1.0, 0.0], "d": [0.5, 0.0, math.sqrt(0.75)]}
    embed = lambda texts: torch.tensor([vecs[t] for t in texts])  # noqa: E731
    r = evol_rl_rewards(["4", "4", "4", "7", None], ["a", "b", "c", "d", "e"], torch.zeros(5, dtype=torch.long),
                        embed=embed, equivalence="exact")
    # ν_a = 1 − (.5·mean(s_ab, s_ac) + .5·max(s_ab, s_ac, s_ad)) = 1 − (.5·.5 + .5·1) = .25, ν_b = .25,
    # ν_c = 1 − (.5·mean(0, 0) + .5·max(0, 0, 0)) = 1; min–max over the majority: a, b → 0, c → 1
    torch.testing.assert_close(r[:3], torch.tensor([0.5, 0.5, 1.0]))
    assert float(r[3]) == pytest.approx(-0.5)       # a singleton minority: ν̂ = 1 → −1 + .5
    assert float(r[4]) == -1.0                      # no answer
    # all-equal novelty in the majority → ν̂ = ½ → 0.75; groups are independent
    r2 = evol_rl_rewards(["1", "1", "2", "2", "2"], ["a", "b", "c", "c", "c"], torch.tensor([0, 0, 1, 1, 1]),
                         embed=embed, equivalence="exact")
    torch.testing.assert_close(r2, torch.full((5,), 0.75))


def test_evol_rl_bonus_names_its_reward_source_and_composes():
    obj = methods.build("evol_rl")
    assert obj.clip.name == "clip_higher" and obj.terms[0].coef == 0.003
    assert obj.reward_source == "evol_rl"  # the engine runs EVOL-RL's label-free rewards, never the verifier's
    with pytest.raises(ConfigError, match="evol_rl_bonus needs reward_sources"):
        obj.check_engine("an engine without reward sources", {"texts"})
    b, logits, fwd = _update_batch([2, 2], advantages=torch.zeros(2, 2))
    loss, m = obj(b)
    assert float(loss) == pytest.approx(-0.003 * float(b.entropy.mean()), rel=1e-6)
    assert methods.build(["evol_rl", "rloo"]).advantage.name == "rloo"
