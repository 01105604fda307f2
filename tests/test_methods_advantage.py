"""Catalog I — the advantage knob (issue 6): each defining formula on a hand-computed case, each claimed effect on a
toy against GRPO from the same state (or, where the toy cannot show it, the mechanism firing exactly where it should
on a scripted case), the engine-extras providers on scripted tokenizers and logits, label-free rewards, selection by
name in ``entrolab train`` and composition with another knob.

Two toys, both from ``entrolab.toy`` (Adam lr 0.1, 2 PPO epochs × 2 mini-batches, 4 prompts × 8 responses a step):
``TabularPolicy``, whose state is (prompt, position), and ``PathPolicy`` below, whose state is (prompt, position,
previous action), so that entropies differ between the responses of a group (which response-level entropy methods
need: on the tabular toy every response to a prompt visits the same states). PathPolicy's rollout also emulates the
engine extras: the last action is the final answer (``answer_cluster``, ``correct``), positions 0–1 think and 2–3
answer (``phase``), steps are position pairs (``step_id``), and self-certainty / sampled logit come from its logits.

Observed when the thresholds were set (30 steps, seeds 0–3, final exact entropy; PathPolicy unless stated):

- GRPO 0.368 0.407 0.371 0.309 (reward 0.79 0.77 0.84 0.76);
- ucas 0.451 0.627 0.524 0.515; qae 0.409 0.570 0.543 0.375 (tabular: 0.474 0.416 0.386 vs 0.305 0.408 0.373);
  less (μ = 2) 0.450 0.440 0.437 0.374 (μ = 5, no segment fits: 0.423 0.484 0.437 0.473);
- em_rl (token) 0.164 0.237 0.321 0.258; em_rl (sequence, tabular) 0.153 0.150 0.139 vs 0.305 0.408 0.373;
- empo: entropy of the final-answer marginal 0.528 0.444 0.444 vs GRPO 0.807 0.830 0.835 (seeds 0–2; its mean token
  entropy is *higher*, 0.69 0.51 0.53, and its reward stays at chance: it is label-free);
- pear, binary final-answer reward (seeds 0–2): thinking-phase entropy 0.697 0.851 0.815 vs GRPO 0.837 0.948 0.999,
  answer-phase 0.764 0.724 0.815 vs 0.543 0.661 0.589;
- rl_zvp, one update on zero-variance groups (PathPolicy, seeds 0–5): all correct ΔH −0.014 … −0.006, all wrong
  +0.001 … +0.007, GRPO exactly 0; over 30 steps ≈ GRPO (0.377 0.404 0.362 0.326: few zero-variance groups).
- Not reproduced (reported, not asserted): entropy_advantage (α = 0.4: 0.326 0.440 0.422 0.323; α = 0.05:
  0.314 0.399 0.419 0.413), entropy_position 0.399 0.351 0.474 0.310, empg 0.405 0.425 0.479 0.310, edge_grpo
  0.353 0.423 0.415 0.346, acpo 0.380 0.392 0.425 0.306, canon 0.361 0.447 0.474 0.422, adathink_med
  0.376 0.634 0.508 0.454, seed_grpo 0.400 0.431 0.482 0.351 (its base dr_grpo: 0.412 0.441 0.488 0.365). Their
  tests check the mechanism on scripted batches.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from batches import make_batch
from inference_fakes import CharTokenizer

from entrolab import methods
from entrolab.batch import BatchError, RolloutBatch
from entrolab.engine.native import NativeEngine
from entrolab.env.reward_sources import (
    REWARD_SOURCES,
    ScoredRollout,
    answer_clusters,
    majority_vote_rewards,
)
from entrolab.env.rewards import extract_answer
from entrolab.errors import ConfigError
from entrolab.knobs.advantage.base import ADVANTAGES
from entrolab.knobs.extras import (
    RolloutContext,
    phase_ids,
    self_certainty_from_logits,
    step_ids,
)
from entrolab.toy import TabularPolicy, ToySettings, _optimizer, train_toy
from entrolab.update import UpdateSettings, policy_update

ADVANTAGE_METHODS = ["entropy_advantage", "rl_zvp", "empo", "entropy_position", "pear", "empg", "em_rl", "seed_grpo",
                     "edge_grpo", "ucas", "acpo", "canon", "qae", "adathink_med", "less"]
S2 = 0.7071067  # 1/√2: the GRPO advantage of a {1, 0} group (unbiased std √½)


# =============================================================================================== toy harness
class PathPolicy(TabularPolicy):
    """Tabular softmax whose state is (prompt, position, previous action): entropy depends on the path taken.
    ``binary``: reward = correctness of the final (last) action instead of the fraction of correct positions."""

    PROVIDES = frozenset()  # it emulates the engine extras in its own rollout (below), for every method alike

    def __init__(self, seed: int = 0, binary: bool = False):
        super().__init__(seed=seed)
        self.binary = binary
        P, L, A = self.correct.shape
        g = torch.Generator().manual_seed(10_000 + seed)
        self.logits = torch.nn.Parameter(torch.randn(P, L, A, A, generator=g))  # z[p, t, previous action, a]

    def _z(self, prompts, actions):
        B, L = actions.shape
        prev = torch.cat([torch.zeros(B, 1, dtype=torch.long), actions[:, :-1]], 1)
        return self.logits[prompts[:, None], torch.arange(L)[None, :], prev]  # (B, L, A)

    def logprobs_entropy(self, prompts, actions):
        lp_all = torch.log_softmax(self._z(prompts, actions), -1)
        return lp_all.gather(-1, actions[..., None]).squeeze(-1), -(lp_all.exp() * lp_all).sum(-1)

    @torch.no_grad()
    def occupancy(self):
        """Exact per-(prompt, position) entropy and reward under the policy's own path distribution, and the
        distribution of the final action, (P, L), (P, L), (P, A)."""
        P, L, A, _ = self.logits.shape
        d = torch.zeros(P, A)
        d[:, 0] = 1.0
        H, R = [], []
        for t in range(L):
            lp = torch.log_softmax(self.logits[:, t], -1)
            p = lp.exp()
            H.append((d * -(p * lp).sum(-1)).sum(-1))
            R.append((d * (p * self.correct[:, t, None, :]).sum(-1)).sum(-1))
            d = torch.einsum("pa,pab->pb", d, p)
        return torch.stack(H, 1), torch.stack(R, 1), d

    def entropy(self):
        return float(self.occupancy()[0].mean())

    def expected_reward(self):
        R = self.occupancy()[1]
        return float(R[:, -1].mean() if self.binary else R.mean())

    def phase_entropy(self):
        H = self.occupancy()[0]
        return float(H[:, :2].mean()), float(H[:, 2:].mean())

    def answer_entropy(self):
        d = self.occupancy()[2]
        return float(-(d * d.clamp(min=1e-30).log()).sum(-1).mean())

    @torch.no_grad()
    def rollout(self, prompts, group_size, generator, step=0, reference=None):
        rep = prompts.repeat_interleave(group_size)
        B, L = rep.numel(), self.horizon
        actions = torch.zeros(B, L, dtype=torch.long)
        prev = torch.zeros(B, dtype=torch.long)
        for t in range(L):
            actions[:, t] = torch.multinomial(torch.softmax(self.logits[rep, t, prev], -1), 1,
                                              generator=generator).squeeze(-1)
            prev = actions[:, t]
        logp, ent = self.logprobs_entropy(rep, actions)
        z = self._z(rep, actions)
        hit = self.correct[rep[:, None], torch.arange(L)[None, :], actions].float()
        pos = torch.arange(L)[None, :].expand(B, L)
        extras = {"prompt_id": rep, "answer_cluster": actions[:, -1].clone(), "correct": hit[:, -1].clone(),
                  "phase": torch.where(pos < 2, 1, 2), "step_id": pos // 2,
                  "self_certainty": self_certainty_from_logits(z),
                  "sampled_logit": z.gather(-1, actions[..., None]).squeeze(-1)}
        ref = reference.logprobs_entropy(rep, actions)[0] if reference is not None else None
        return RolloutBatch(response_ids=actions, response_mask=torch.ones(B, L), old_logprobs=logp,
                            rewards=hit[:, -1].clone() if self.binary else hit.mean(-1),
                            group_ids=torch.arange(len(prompts)).repeat_interleave(group_size), old_entropy=ent,
                            ref_logprobs=ref, extras=extras, step=step)


_RUNS: dict = {}


def run(name, seed, steps=30, kind="path", **extra):
    """(history, policy) of a toy run with the method's toy overrides, cached per session."""
    key = (name, seed, steps, kind, tuple(sorted(extra.items())))
    if key not in _RUNS:
        policy = TabularPolicy(seed=seed) if kind == "tab" else PathPolicy(seed=seed, binary=(kind == "binary"))
        over = {} if name == "grpo" else dict(methods.get_method(name).toy_overrides)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hist = train_toy(methods.build(name, **{**over, **extra}), policy, ToySettings(steps=steps, seed=seed))
        _RUNS[key] = (hist, policy)
    return _RUNS[key]


def final_entropy(name, seeds=(0, 1), kind="path", **extra):
    return [run(name, s, kind=kind, **extra)[0][-1]["entropy"] for s in seeds]


def B(lengths, T=None, **fields):
    return make_batch(lengths, T, **fields)


def adv(name, batch, **params):
    return ADVANTAGES.build(name, params).compute(batch)


# =============================================================================================== catalog, engine
@pytest.mark.parametrize("name", ADVANTAGE_METHODS)
def test_catalog_entry_is_complete(name):
    m = methods.get_method(name)
    assert m.arxiv and m.entropy_effect and "advantage" in m.knobs
    assert m.evidence == "exact" or m.evidence.startswith("approximate — ")
    comp = methods.build(name).advantage
    assert comp.name == name and comp.__doc__ and m.arxiv in comp.__doc__  # formula + arXiv id
    assert "|" not in m.entropy_effect and "|" not in m.evidence  # table cells


@pytest.mark.parametrize("name", ADVANTAGE_METHODS)
def test_selectable_in_entrolab_train_and_composes(name):
    """The native engine provides every primitive; each method composes with a clip-knob method and runs two toy
    steps."""
    methods.build(name).check_engine("entrolab train", NativeEngine.PROVIDES)
    obj = methods.build([name, "clip_cov"], **methods.get_method(name).toy_overrides)
    assert obj.methods == (name, "clip_cov") and obj.clip.name == "clip_cov" and obj.advantage.name == name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = train_toy(obj, PathPolicy(seed=0), ToySettings(steps=2, seed=0))
    assert all(math.isfinite(h["entropy"]) for h in hist) and hist[0]["update/skipped"] == 0


def _full_batch(lengths, rewards, group_ids, T=3):
    """A batch carrying every input an estimator here may read (old entropies and all the engine extras)."""
    g = torch.Generator().manual_seed(5)
    n = len(lengths)
    extras = {"answer_cluster": torch.arange(n) % 2, "correct": (torch.tensor(rewards) > 0.5).float(),
              "phase": torch.ones(n, T, dtype=torch.long), "step_id": (torch.arange(T) // 2).expand(n, T).clone(),
              "self_certainty": torch.rand(n, T, generator=g) + 1, "sampled_logit": torch.randn(n, T, generator=g)}
    return B(lengths, T, rewards=rewards, group_ids=group_ids, old_entropy=torch.rand(n, T, generator=g) + 0.1,
             extras=extras)


@pytest.mark.parametrize("name", ADVANTAGE_METHODS)
def test_groups_of_size_one_get_zero_given_their_inputs(name):
    """The advantage knob's contract (``test_knobs``), on a batch that carries the entropies and extras these
    estimators need: a group of one response offers no comparison and gets 0."""
    est = ADVANTAGES.build(name)
    assert (est.compute(_full_batch([2, 3, 1], [1.0, 0.0, 0.3], [0, 1, 2])) == 0).all()
    a = ADVANTAGES.build(name).compute(_full_batch([2, 3, 1, 2], [1.0, 0.0, 0.3, 1.0], [0, 0, 9, 0]))
    assert (a[2] == 0).all() and a[:, 0].abs().sum() > 0


def test_em_ft_is_the_sequence_mean_entropy_objective():
    obj = methods.build("em_ft")
    assert obj.terms[0].name == "entropy_minimization" and obj.aggregation == "seq-mean-token-mean"
    assert methods.build(["em_ft", "qae"]).advantage.name == "qae"


def test_missing_extras_are_named():
    b = B([2, 2], rewards=[1.0, 0.0], old_entropy=torch.ones(2, 2))
    for name, extra in (("empo", "answer_cluster"), ("pear", "correct"), ("empg", "step_id"),
                        ("ucas", "self_certainty"), ("less", "correct"), ("seed_grpo", "answer_cluster"),
                        ("adathink_med", "correct")):
        with pytest.raises(BatchError, match=extra):
            adv(name, b)
    with pytest.raises(BatchError, match="phase"):
        adv("pear", b.replace(extras={"correct": torch.ones(2)}))
    with pytest.raises(BatchError, match="old_entropy"):
        adv("rl_zvp", B([2, 2]))


def test_parameter_checks():
    for name, params in (("entropy_advantage", {"kappa": 1.0}), ("empo", {"equivalence": "nli"}),
                         ("entropy_position", {"variant": "ends"}), ("em_rl", {"variant": "tokens"}),
                         ("seed_grpo", {"form": "focal"}), ("canon", {"mu": 1.5}), ("qae", {"k": 1.2}),
                         ("pear", {"phase_marker": "a||b"}), ("empg", {"step_delimiter": ""}),
                         ("less", {"min_len": 0}), ("acpo", {"beta": 2.0})):
        with pytest.raises(ConfigError):
            ADVANTAGES.build(name, params)


# =============================================================================================== 2.1 Cheng et al.
def test_entropy_advantage_formula():
    H = torch.tensor([[0.5, 2.0], [0.5, 3.0], [1.0, 1.0]])
    b = B([2, 2, 2], rewards=[1.0, 0.0, 1.0], group_ids=[0, 0, 1], old_entropy=H)
    # A = ±1/√2; ψ = min(0.4·H, |A|/2 = 0.3536): row 0 → [0.2, 0.3536], row 1 → [0.2, 0.3536] added to −0.7071;
    # the group of one has A = 0, and min(0.4·H, 0) = 0 keeps it at 0.
    expected = torch.tensor([[S2 + 0.2, S2 + S2 / 2], [-S2 + 0.2, -S2 + S2 / 2], [0.0, 0.0]])
    torch.testing.assert_close(adv("entropy_advantage", b), expected, atol=1e-5, rtol=0)


def test_entropy_advantage_bonus_grows_with_entropy_and_never_flips_a_sign():
    gen = torch.Generator().manual_seed(0)
    b = TabularPolicy(seed=0).rollout(torch.arange(4), 8, gen)
    base, shaped = adv("grpo", b), adv("entropy_advantage", b, alpha=0.05)
    assert (torch.sign(shaped) == torch.sign(base)).all()
    bonus = shaped - base
    assert (bonus >= 0).all() and (bonus <= base.abs() / 2 + 1e-6).all()
    free = bonus < base.abs() / 2 - 1e-6  # uncapped tokens: ψ = α·H exactly
    assert free.any()
    torch.testing.assert_close(bonus[free], 0.05 * b.old_entropy[free])


# =============================================================================================== 2.2 RL-ZVP
def test_rl_zvp_formula():
    H = torch.tensor([[0.5, 1.0], [0.2, 0.7], [0.3, 0.9], [0.6, 0.6], [1.0, 1.0], [1.0, 1.0]])
    b = B([2, 1, 2, 2, 2, 2], rewards=[1.0, 1.0, 0.0, 0.0, 1.0, 0.0], group_ids=[0, 0, 1, 1, 2, 2], old_entropy=H)
    expected = torch.tensor([
        [0.05, 0.10],     # all correct: 0.1·H
        [0.02, 0.0],      # padding stays 0
        [-0.06, 0.0],     # all wrong: −0.1·(max 0.9 − H)
        [0.0, 0.0],       # all wrong, flat entropy: max − H = 0
        [S2, S2], [-S2, -S2],  # rewards vary: GRPO
    ])
    torch.testing.assert_close(adv("rl_zvp", b), expected, atol=1e-5, rtol=0)


def _one_update(name, policy, rewards_value=None, seed=0, **params):
    """Entropy change of one on-policy update from ``policy`` on one fixed rollout (rewards optionally overwritten)."""
    gen = torch.Generator().manual_seed(seed)
    b = policy.rollout(torch.arange(4), 8, gen)
    if rewards_value is not None:
        b = b.replace(rewards=torch.full_like(b.rewards, rewards_value))
    obj = methods.build(name, **params)
    b = obj.prepare(obj.compute_advantages(b))
    params_ = list(policy.parameters())
    h0 = policy.entropy()
    policy_update(obj, b, lambda mb: policy.logprobs_entropy(mb.extras["prompt_id"], mb.response_ids),
                  _optimizer("adam", params_, 0.1), params_, UpdateSettings(ppo_epochs=1, mini_batches=1,
                                                                             grad_clip=None), gen)
    return policy.entropy() - h0


def test_rl_zvp_acts_on_zero_variance_groups_where_grpo_is_silent():
    """All-correct groups sharpen (reinforcing high-entropy forks), all-wrong groups punish confident tokens, which
    raises entropy; GRPO gives both no gradient at all."""
    for seed in (0, 1, 2):
        assert _one_update("grpo", PathPolicy(seed=seed), 1.0, seed) == 0.0
        assert _one_update("rl_zvp", PathPolicy(seed=seed), 1.0, seed) < -0.004
        assert _one_update("rl_zvp", PathPolicy(seed=seed), 0.0, seed) > 0.0005


# =============================================================================================== 2.3 EMPO
def test_empo_rewards_and_advantages():
    # group 0 (G = 4): clusters {0, 0, 1, none} → p = ½, ½, ¼, ¼ (the missing answers form one cluster);
    # H_sem = −(½ ln ½ + 2·¼ ln ¼) = 1.0397 < ln 4 → r = [0.5, 0.5, 0.25, 0 (no answer)].
    # group 1 (G = 3): three different answers → H_sem = ln 3 = log G → filtered, r = 0.
    b = B([1] * 7, rewards=[1.0, 0, 0, 0, 1, 1, 1], group_ids=[0, 0, 0, 0, 1, 1, 1],
          extras={"answer_cluster": torch.tensor([0, 0, 1, -1, 0, 1, 2])})
    empo = ADVANTAGES.build("empo")
    torch.testing.assert_close(empo.rewards(b), torch.tensor([0.5, 0.5, 0.25, 0, 0, 0, 0]))
    # GRPO on r with ε = 1e-4: mean 0.3125, unbiased std = √(0.171875/3) = 0.239357
    std = 0.239357 + 1e-4
    expected = torch.tensor([0.1875 / std, 0.1875 / std, -0.0625 / std, -0.3125 / std, 0, 0, 0])
    torch.testing.assert_close(empo.compute(b).flatten(), expected, atol=1e-4, rtol=0)
    # the verl version's confidence filter: max p = ½ < 0.6 drops group 0 too
    assert ADVANTAGES.build("empo", {"min_confidence": 0.6}).rewards(b).abs().sum() == 0


def test_empo_concentrates_the_answer_distribution():
    for seed in (0, 1):
        ours = run("empo", seed)[1].answer_entropy()
        base = run("grpo", seed)[1].answer_entropy()
        assert ours < base - 0.2, (ours, base)


# =============================================================================================== 2.4 Deng et al.
def test_entropy_position_formula():
    lp = torch.tensor([[-0.1, -0.3], [-1.0, -1.0]])  # log PPL = 0.2, 1.0 → z-scores −1/√2, +1/√2
    b = B([2, 2], rewards=[1.0, 0.0], group_ids=[0, 0], old_logprobs=lp)
    # ppl: A·(1 − 0.1·ŵ) = 0.7071·1.07071 = 0.75711 and −0.7071·0.92929 = −0.65711;
    # position: + 0.1·sign(A)·(t + 1)/2 = ±[0.05, 0.1]
    expected = torch.tensor([[0.80711, 0.85711], [-0.70711, -0.75711]])
    torch.testing.assert_close(adv("entropy_position", b), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(adv("entropy_position", b, variant="ppl"),
                               torch.tensor([[0.75711] * 2, [-0.65711] * 2]), atol=1e-4, rtol=0)


def test_entropy_position_weights_late_tokens_and_low_perplexity_responses():
    b = PathPolicy(seed=0).rollout(torch.arange(4), 8, torch.Generator().manual_seed(0))
    base = adv("grpo", b).abs()
    pos = adv("entropy_position", b, variant="position").abs()
    nz = base[:, 0] > 0
    assert ((pos - base)[nz].diff(dim=-1) > 0).all()  # |Â| − |A| grows with the position
    ppl = adv("entropy_position", b, variant="ppl")[:, 0]
    log_ppl = -b.old_logprobs.mean(-1)
    for g in range(4):  # within a group, among responses with the same A, lower perplexity → larger |Â|
        rows = torch.nonzero((b.group_ids == g) & (base[:, 0] > 0)).flatten()
        for i in rows:
            for j in rows:
                if torch.isclose(base[i, 0], base[j, 0]) and log_ppl[i] < log_ppl[j] - 1e-6:
                    assert ppl[i].abs() > ppl[j].abs()


# =============================================================================================== 2.5 PEAR
def test_pear_formula():
    H = torch.tensor([[1.0, 0.6, 0.9, 0.2, 0.4], [0.2, 0.4, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5, 0.5]])
    phase = torch.tensor([[1, 1, 0, 2, 2], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    b = B([5, 2, 5], 5, rewards=[1.0, 1.0, 0.1], group_ids=[0, 0, 0], old_entropy=H,
          extras={"phase": phase, "correct": torch.tensor([1.0, 1.0, 0.0])})
    pear = ADVANTAGES.build("pear")
    # row 0: H̄_think = 0.8, H̄_answer = 0.3 (marker excluded) → P = 0.5 → r = min(1, 1 − 0.5) = 0.5
    # row 1: no marker → H̄_answer = 0, P = 0.3 → r = 0.7;  row 2: wrong → keeps its (format) reward 0.1
    torch.testing.assert_close(pear.rewards(b), torch.tensor([0.5, 0.7, 0.1]))
    # GRPO: mean 0.4333, deviations [0.0667, 0.2667, −0.3333], unbiased std 0.305505
    torch.testing.assert_close(pear.compute(b)[:, 0], torch.tensor([0.21822, 0.87287, -1.09109]), atol=1e-4, rtol=0)
    # α = 2: row 0 P = max(0, 0.8 − 0.6) = 0.2
    assert float(ADVANTAGES.build("pear", {"alpha": 2.0}).penalty(b)[0]) == pytest.approx(0.2)


def test_pear_lowers_thinking_entropy_and_keeps_answer_entropy():
    for seed in (0, 1):
        think, answer = run("pear", seed, kind="binary")[1].phase_entropy()
        think0, answer0 = run("grpo", seed, kind="binary")[1].phase_entropy()
        assert think < think0 - 0.05 and answer > answer0 + 0.03, (think, think0, answer, answer0)


# =============================================================================================== 2.6 EMPG
def test_empg_formula():
    H = torch.tensor([[0.2, 0.4, 1.0, 1.0], [0.5, 0.5, 0.8, 0.2]])
    b = B([4, 4], rewards=[1.0, 0.0], group_ids=[0, 0], old_entropy=H,
          extras={"step_id": torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])})
    # step means 0.3, 1.0 | 0.5, 0.5 → H_norm 0, 1, 2/7, 2/7; e = exp(−H_norm) = 1, 0.36788, 0.75148, 0.75148,
    # mean 0.71771 → g = 1.39332, 0.51258, 1.04705, 1.04705; f(next) = 0.36788, 0, 0.75148, 0.
    # A_mod = ±0.70711·g + 0.05·f = 1.00361, 0.36245, −0.70280, −0.74038; minus their mean −0.01928:
    expected = torch.tensor([[1.02289, 1.02289, 0.38173, 0.38173], [-0.68352, -0.72110, -0.72110, -0.72110]])
    torch.testing.assert_close(adv("empg", b), expected, atol=1e-4, rtol=0)


def test_empg_amplifies_confident_steps():
    """Within a response, the more confident of its two steps gets the larger share of the trajectory's credit or
    blame: with ζ = 0, Â_k − Â_j = A·(g_k − g_j) (the batch re-centring cancels), and g falls with step entropy."""
    b = PathPolicy(seed=1).rollout(torch.arange(4), 8, torch.Generator().manual_seed(1))
    A = adv("grpo", b)[:, 0]
    mod = adv("empg", b, zeta=0.0)
    h = b.old_entropy.reshape(-1, 2, 2).mean(-1)  # (B, 2 steps): steps are position pairs
    rows = (A.abs() > 0) & ((h[:, 0] - h[:, 1]).abs() > 1e-3)
    assert rows.sum() > 10
    confident_first = h[rows, 0] < h[rows, 1]
    gets_more = torch.sign(A[rows]) * (mod[rows, 0] - mod[rows, 2]) > 0
    assert torch.equal(confident_first, gets_more)


# =============================================================================================== 2.7 EM-RL
def test_em_rl_formula_ignores_rewards():
    H = torch.tensor([[0.5, 0.5], [1.0, 1.0], [3.0, 0.0]])  # ΣH = 1, 2, 3 → r = −1, −2, −3
    b = B([2, 2, 1], rewards=[1.0, 0.0, 1.0], group_ids=[0, 0, 0], old_entropy=H)
    # RLOO: r_i − mean_{j≠i} r_j = −1 + 2.5, −2 + 2, −3 + 1.5
    torch.testing.assert_close(adv("em_rl", b)[:, 0], torch.tensor([1.5, 0.0, -1.5]))
    assert adv("em_rl", b)[2, 1] == 0  # padding
    lp = torch.tensor([[-0.1, -0.1], [-1.0, -1.0], [-0.5, -0.5]])  # Σ log π = −0.2, −2, −0.5 (row 2: one token)
    b2 = B([2, 2, 1], rewards=[0.0, 0.0, 0.0], group_ids=[0, 0, 0], old_logprobs=lp, old_entropy=H)
    # −0.2 − (−1.25) = 1.05; −2 − (−0.35) = −1.65; −0.5 − (−1.1) = 0.6
    torch.testing.assert_close(adv("em_rl", b2, variant="sequence")[:, 0], torch.tensor([1.05, -1.65, 0.6]))


def test_em_rl_sharpens():
    ours, base = final_entropy("em_rl"), final_entropy("grpo")
    assert all(o < b - 0.05 for o, b in zip(ours, base)), (ours, base)
    seq = final_entropy("em_rl", kind="tab", variant="sequence")
    assert all(o < b - 0.1 for o, b in zip(seq, final_entropy("grpo", kind="tab"))), seq


# =============================================================================================== 2.8 SEED-GRPO
def test_seed_grpo_formula():
    lp = torch.tensor([[-0.5, -0.5], [-1.0, -1.0], [-0.25, -0.25], [-1.5, -1.5]])  # Σ log π = −1, −2, −0.5, −3
    b = B([2, 2, 2, 2], rewards=[1.0, 1.0, 0.0, 0.0], group_ids=[0] * 4, old_logprobs=lp,
          extras={"answer_cluster": torch.tensor([0, 0, 1, -1])})
    # log p(C₀) = logsumexp(−1, −2) = −0.68674, log p(C₁) = −0.5, log p(none) = −3
    # SE = (0.68674 + 0.5 + 3)/3 = 1.39558; x = 0.0417·SE/ln 4 = 0.041980; 1/(1 + x) = 0.959711
    # Dr. GRPO A = ±0.5 → ±0.479856
    torch.testing.assert_close(adv("seed_grpo", b)[:, 0], torch.tensor([0.479856, 0.479856, -0.479856, -0.479856]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(adv("seed_grpo", b, form="exponential")[:, 0],
                               0.5 * math.exp(-0.041980) * torch.tensor([1.0, 1, -1, -1]), atol=1e-5, rtol=0)


def test_seed_grpo_is_more_conservative_on_semantically_uncertain_prompts():
    """Same rewards and log-probs; the prompt whose answers split into more clusters gets the smaller update."""
    lp = torch.full((8, 2), -0.5)
    b = B([2] * 8, rewards=[1.0, 0, 1, 0] * 2, group_ids=[0] * 4 + [1] * 4, old_logprobs=lp,
          extras={"answer_cluster": torch.tensor([0, 0, 0, 0, 0, 1, 2, 3])})
    a = adv("seed_grpo", b)[:, 0].abs()
    assert (a[:4] > a[4:]).all() and (a[4:] > 0).all()


# =============================================================================================== 2.9 EDGE-GRPO
def test_edge_grpo_formula_scales_by_normalised_response_entropy():
    H = torch.tensor([[0.5, 0.5], [1.5, 1.5], [1.0, 1.0], [1.0, 1.0]])
    b = B([2] * 4, rewards=[1.0, 0.0, 1.0, 0.0], group_ids=[0, 0, 1, 1], old_entropy=H)
    # P = 0.5, 1.5, 1, 1; batch mean 1 → P̂ = P; A = ±0.5/(0.70711 + 1e-4) = ±0.70701
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(adv("edge_grpo", b)[:, 0], torch.tensor([a / 0.5, -a / 1.5, a, -a]), atol=1e-5,
                               rtol=0)


def test_edge_grpo_gives_confident_responses_larger_updates():
    b = PathPolicy(seed=2).rollout(torch.arange(4), 8, torch.Generator().manual_seed(2))
    ratio = adv("edge_grpo", b)[:, 0].abs() / adv("grpo", b, eps=1e-4)[:, 0].abs().clamp(min=1e-12)
    P = b.old_entropy.mean(-1)
    keep = adv("grpo", b)[:, 0].abs() > 0
    order = torch.argsort(P[keep])
    assert (ratio[keep][order].diff() <= 1e-4).all()  # the scale falls as the response entropy rises
    assert ratio[keep].max() > 1 > ratio[keep].min()


# =============================================================================================== 2.10 UCAS
def test_ucas_formula():
    b = B([2, 2], rewards=[1.0, 0.0], group_ids=[0, 0],
          extras={"self_certainty": torch.tensor([[1.0, 2.0], [0.5, 0.5]]),
                  "sampled_logit": torch.tensor([[2.0, 4.0], [0.0, 1.0]])})
    # C = 3, 1 → Ĉ = ±0.70711; m₀ = exp(−0.25·0.70711) = 0.83797 (A > 0), m₁ = exp(0.35·(−0.70711)) = 0.78075
    # sampled logits min–max over the batch: [0.5, 1] | [0, 0.25]; raw = A·m − 0.05·that
    expected = torch.tensor([[0.59254 - 0.025, 0.59254 - 0.05], [-0.55208, -0.55208 - 0.0125]])
    torch.testing.assert_close(adv("ucas", b), expected, atol=1e-4, rtol=0)
    # λ = 2: the positive trajectory would flip (0.59 − 1, 0.59 − 2) and is clamped at 0; the negative one is not
    torch.testing.assert_close(adv("ucas", b, lam=2.0), torch.tensor([[0.0, 0.0], [-0.55208, -1.05208]]), atol=1e-4,
                               rtol=0)


def test_self_certainty_is_kl_from_uniform_plus_log_v():
    z = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # ln(e² + 3) − 0.5 = ln 10.38906 − 0.5 = 1.84075; uniform logits: ln 4 − 0
    torch.testing.assert_close(self_certainty_from_logits(z), torch.tensor([1.84075, math.log(4)]), atol=1e-5, rtol=0)
    p = torch.softmax(z, -1)
    kl = (0.25 * (torch.log(torch.tensor(0.25)) - p.log())).sum(-1)
    torch.testing.assert_close(self_certainty_from_logits(z), kl + math.log(4))


def test_ucas_keeps_more_entropy_than_grpo():
    ours, base = final_entropy("ucas"), final_entropy("grpo")
    assert all(o > b + 0.05 for o, b in zip(ours, base)), (ours, base)


# =============================================================================================== 2.11 ACPO
def test_acpo_formula():
    H = torch.tensor([[1.0, 1.0, 0.6, 0.6, 0.1], [0.5, 0.5, 0.5, 0.5, 0.5]])
    b = B([5, 5], rewards=[1.0, 0.0], group_ids=[0, 0], old_entropy=H,
          extras={"step_id": torch.tensor([[0, 0, 1, 1, 2], [0, 0, 0, 0, 0]])})
    # row 0: step means 1.0, 0.6, 0.1 → resolved a = 0.4, 0.5, 0.1 (last: 0.1 − 0) → ã = a; K = 3, β = ½:
    # w = ½ + ½·3·ã = 1.1, 1.25, 0.65;   row 1: one step → w = 1
    w = ADVANTAGES.build("acpo").step_weights(b)
    torch.testing.assert_close(w, torch.tensor([[1.1, 1.1, 1.25, 1.25, 0.65], [1.0] * 5]), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv("acpo", b), torch.tensor([[S2], [-S2]]) * w, atol=1e-5, rtol=0)


# =============================================================================================== 2.12 CANON
def test_canon_formula():
    Hbar = torch.tensor([0.2, 0.4, 0.9, 1.1])
    b = B([1] * 4, rewards=[1.0, 1.0, 0.0, 1.0], group_ids=[0] * 4, old_entropy=Hbar[:, None])
    # low half {0, 1}: μ_𝓛 = 1; high half {2, 3}: μ_𝓗 = 0.5
    torch.testing.assert_close(adv("canon", b)[:, 0], torch.tensor([0.5, 0.5, -1.0, 0.0]))          # μ = 1
    torch.testing.assert_close(adv("canon", b, mu=0.0)[:, 0], torch.tensor([0.0, 0.0, -0.5, 0.5]))  # intra
    # μ = ½, α = 2, β = 0.1: low: ½(2r − 0.5 − 0.1) + ½(r − 1); high: ½(r − 2 + 0.1) + ½(r − 0.5)
    torch.testing.assert_close(adv("canon", b, mu=0.5, alpha=2.0, beta=0.1)[:, 0],
                               torch.tensor([0.7, 0.7, -1.2, -0.2]))
    # annealed: μ = batch accuracy ¾
    torch.testing.assert_close(adv("canon", b, mu_schedule="accuracy")[:, 0],
                               0.75 * torch.tensor([0.5, 0.5, -1.0, 0.0]) + 0.25 * torch.tensor([0.0, 0, -0.5, 0.5]))
    assert methods.build("canon").aggregation == "seq-mean-token-sum-norm"


def test_canon_lets_the_data_choose_the_entropy_direction():
    """Relative to Dr. GRPO, CANON favours whichever entropy half is more accurate."""
    rewards = [1.0, 1.0, 0.0, 1.0]
    for Hbar, favoured in (([0.2, 0.4, 0.9, 1.1], [0, 1]), ([1.1, 0.9, 0.4, 0.2], [0, 1])):
        b = B([1] * 4, rewards=rewards, group_ids=[0] * 4, old_entropy=torch.tensor(Hbar)[:, None])
        gain = adv("canon", b)[:, 0] - adv("dr_grpo", b)[:, 0]
        assert (gain[favoured] > 0).all() and gain[3] < 0  # the accurate half gains, the other correct one loses
    # rows 0–1 are the low-entropy half in the first case and the high-entropy half in the second


# =============================================================================================== 2.13 QAE
def test_qae_formula():
    b = B([1] * 12, rewards=[0.0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1], group_ids=[0] * 5 + [1] * 5 + [2] * 2)
    a = adv("qae", b)[:, 0]
    # hard group [0,0,0,1,1]: quantile_0.4 = 0 (position 1.6 between two zeros); std √0.3 → successes 1.82574
    torch.testing.assert_close(a[:5], torch.tensor([0, 0, 0, 1.82574, 1.82574]), atol=1e-4, rtol=0)
    # easy group [1,1,1,0,1]: sorted [0,1,1,1,1], position 1.6 → 1; std √0.2 → the failure −2.23607
    torch.testing.assert_close(a[5:10], torch.tensor([0, 0, 0, -2.23607, 0]), atol=1e-4, rtol=0)
    # [0, 1]: b = 0.4 (linear interpolation), std 1/√2 → −0.56569, 0.84853
    torch.testing.assert_close(a[10:], torch.tensor([-0.56569, 0.84853]), atol=1e-4, rtol=0)


def test_qae_keeps_more_entropy_than_grpo():
    ours, base = final_entropy("qae"), final_entropy("grpo")
    assert all(o > b + 0.02 for o, b in zip(ours, base)), (ours, base)


# =============================================================================================== 2.14 AdaThink-Med
def _adathink_batch():
    H = torch.tensor([[1.0, 0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0, 0], [3.0, 0.1, 0.1, 0.1, 0], [0.5, 0.2, 0, 0, 0]])
    return B([5, 3, 4, 2], 5, rewards=[1.0, 1, 0, 1], group_ids=[0, 0, 1, 1], old_entropy=H,
             extras={"correct": torch.tensor([1.0, 1, 0, 1])})


def test_adathink_med_formula_and_state():
    ada = ADVANTAGES.build("adathink_med")
    b = _adathink_batch()
    # e = top-20% mean = max (one token): 1, 0, 3, 0.5 → log1p: 0.69315, 0, 1.38629, 0.40547 → min–max:
    # 0.5, 0, 1, 0.29248 → c = 0.5, 1, 0, 0.70752; y = 1, 1, 0, 1
    # α·y·c + (1 − α)·y = 0.75, 1, 0, 0.85376 → d = 0.125 (q0), 0.57312 (q1); θ = 0.7-quantile = 0.43868
    # q0 easy, q1 hard; L_exp = 4 (easy), 3 (hard); ρ = 5/4·0.75, 3/4·1, 4/3·0.5
    # len = max(0, 1 − 0.9375), max(0, 1 − 0.75), min(1, 0.66667 − 1) (wrong ∧ hard), 0 (correct ∧ hard)
    torch.testing.assert_close(ada.length_scores(b), torch.tensor([0.0625, 0.25, -1 / 3, 0.0]), atol=1e-5, rtol=0)
    st = ada.state_dict()
    assert st["theta"] == pytest.approx(0.43868, abs=1e-5) and st["l_exp"] == {"easy": 4.0, "hard": 3.0}
    # a second batch whose responses are all 2 tokens long: the EMA moves L_exp[easy] to 0.9·4 + 0.1·2 = 3.8
    twin = ADVANTAGES.build("adathink_med")
    twin.load_state_dict(copy.deepcopy(st))
    short = b.replace(response_mask=(torch.arange(5)[None, :] < 2).float().expand(4, 5).clone())
    for a in (ada, twin):
        a.compute(short)
    assert ada.state_dict() == twin.state_dict() and ada.state_dict()["l_exp"]["easy"] == pytest.approx(3.8)
    with pytest.raises(ConfigError, match="unknown"):
        twin.load_state_dict({"tau": 1.0})


def test_adathink_med_repetition_penalty():
    ids = torch.tensor([[1, 2, 1, 2, 1]])  # 2-grams (1,2), (2,1), (1,2)*, (2,1)* → 2 repeats
    b = B([5], rewards=[1.0], group_ids=[0], old_entropy=torch.ones(1, 5),
          extras={"correct": torch.tensor([0.0])}).replace(response_ids=ids)
    # one wrong response: c = 1, d = 1 = θ (not < θ) → hard; ρ = (5/5)·1 = 1 → len = min(1, 1 − 1) = 0; rep = −0.05·2
    assert float(ADVANTAGES.build("adathink_med", {"rep_ngram": 2}).length_scores(b)[0]) == pytest.approx(-0.1)


def test_adathink_med_shortens_confident_easy_answers_and_lengthens_uncertain_hard_ones():
    """Correct answers to an easy question: the shorter and more confident, the higher the reward; wrong answers to
    a hard question: the longer, the less they are penalised."""
    ada = ADVANTAGES.build("adathink_med")
    s = ada.length_scores(_adathink_batch())
    assert s[1] > s[0] > 0 and s[2] < 0  # row 1: shorter and more confident than row 0


# =============================================================================================== 2.15 LESS
def test_less_weights():
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 6, 7], [6, 7, 5, 5], [8, 9, 9, 9]])
    H = torch.tensor([[0.1, 0.1, 3.0, 0.1], [0.1, 0.1, 3.0, 0.2], [0.1, 0.1, 3.0, 0.2], [0.1, 0.1, 0.1, 0.1]])
    b = B([4] * 4, rewards=[1.0, 1, 0, 0], group_ids=[0] * 4, old_entropy=H,
          extras={"correct": torch.tensor([1.0, 1, 0, 0])}).replace(response_ids=ids)
    # τ (0.8-quantile): 1.26, 1.32, 1.32, 0.1 → the 3.0 tokens are high (w = 1), the rest low (default 1/2).
    # segments (μ = 2): [1, 2] in rows 0 and 1, both correct → max(½, 2/2) = 1;  [6, 7] of row 2 (wrong) also
    # in row 1 (correct) → 0;  [8, 9, 9, 9] only in row 3 (wrong) → max(½, 1/2);  single low tokens keep ½.
    expected = torch.tensor([[1.0, 1.0, 1.0, 0.5], [1.0, 1.0, 1.0, 0.5], [0.0, 0.0, 1.0, 0.5], [0.5] * 4])
    less = ADVANTAGES.build("less", {"min_len": 2})
    torch.testing.assert_close(less.weights(b), expected)
    torch.testing.assert_close(less.compute(b), expected * torch.tensor([1.0, 1, -1, -1])[:, None] * 0.866025,
                               atol=1e-5, rtol=0)
    # default μ = 5: no run is long enough, only the 1/N weighting remains
    torch.testing.assert_close(ADVANTAGES.build("less").weights(b)[0], torch.tensor([0.5, 0.5, 1.0, 0.5]))


def test_less_keeps_more_entropy_than_grpo():
    ours, base = final_entropy("less"), final_entropy("grpo")
    assert all(o > b + 0.02 for o, b in zip(ours, base)), (ours, base)


# =============================================================================================== providers
def _ids(tok, text):
    return tok.encode(text)


def _padded(tok, texts):
    rows = [_ids(tok, t) for t in texts]
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), tok.pad_token_id)
    mask = torch.zeros(len(rows), T)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


def test_phase_ids_split_at_the_marker():
    tok = CharTokenizer()
    ids, mask = _padded(tok, ["ab</think>cd", "xy<answer>z", "plain"])
    # row 0: "</think>" is one token; row 1: "<answer>" spans 8 single-character tokens; row 2: no marker
    ph = phase_ids(tok, ids, mask, ["</think>", "<answer>"])
    assert ph[0, :5].tolist() == [1, 1, 0, 2, 2] and ph[0, 5:].sum() == 0
    assert ph[1, :11].tolist() == [1, 1] + [0] * 8 + [2]
    assert ph[2, :5].tolist() == [1] * 5 and ph[2, 5:].sum() == 0
    assert phase_ids(tok, ids, mask, ["</think>"])[1, :11].tolist() == [1] * 11


def test_step_ids_split_after_each_delimiter():
    tok = CharTokenizer()
    ids, mask = _padded(tok, ["ab\n\ncd\n\ne", "a\nb\nc"])
    assert step_ids(tok, ids, mask, "\n\n")[0].tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert step_ids(tok, ids, mask, "\n")[1, :5].tolist() == [0, 0, 1, 1, 2]
    # a multi-character delimiter made of several tokens: the step starts after the token completing it
    ids2, mask2 = _padded(tok, ["ab--cd--"])
    assert step_ids(tok, ids2, mask2, "--")[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_answer_clusters_and_majority_vote():
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    answers = ["1/2", "0.5", "3", None, "7", "8", None]
    assert answer_clusters(answers, g).tolist() == [0, 0, 1, -1, 0, 1, -1]  # math-verify: 1/2 ≡ 0.5
    # group 0: majority {1/2, 0.5}; group 1: a 1–1 tie goes to the answer seen first ("7")
    assert majority_vote_rewards(answers, g).tolist() == [1, 1, 0, 0, 1, 0, 0]
    assert majority_vote_rewards([None, None], torch.tensor([0, 0])).tolist() == [0, 0]
    assert answer_clusters(["a b", "a  b", "c"], torch.zeros(3, dtype=torch.long), "exact").tolist() == [0, 0, 1]


def _ctx(texts, correct, logits=None, group_ids=None):
    n = len(texts)
    b = B([2] * n, 2, rewards=[0.0] * n, group_ids=group_ids or [0] * n)
    return RolloutContext(batch=b, texts=texts, examples=[None] * n, correct=correct, tokenizer=CharTokenizer(),
                          temperature=1.0, old_logits_fn=(lambda rows: logits[rows]) if logits is not None else None,
                          chunk_rows=1)


def test_majority_vote_reward_source_rewrites_rewards_and_correctness():
    verdict = [True, False, False]  # the verifier's own list: must not change
    texts = ["\\boxed{4}", "so \\boxed{4.0}", "\\boxed{5}"]
    scored = ScoredRollout(texts, torch.tensor([1.0, 0.0, 0.0]), verdict, torch.zeros(3, dtype=torch.long))
    rewards, correct = REWARD_SOURCES.get("majority_vote")().rewrite(scored)
    assert rewards.tolist() == [1.0, 1.0, 0.0] and correct == [True, True, False]
    assert verdict == [True, False, False]
    assert REWARD_SOURCES.get("verifier")().rewrite(scored) == (scored.rewards, verdict)
    with pytest.raises(ConfigError, match="reward source 'oracle'"):
        REWARD_SOURCES.get("oracle")
    # a correctness-reading component sees the reward source's verdict
    ctx = _ctx(texts, correct)
    assert methods.build("less").advantage.rollout_extras(ctx)["correct"].tolist() == [1.0, 1.0, 0.0]


def test_answer_clusters_use_the_components_equivalence():
    ctx = _ctx(["\\boxed{x y}", "\\boxed{x  y}", "none"], [False] * 3)
    assert methods.build("empo", equivalence="exact").advantage.rollout_extras(ctx)["answer_cluster"].tolist() \
        == [0, 0, -1]


def test_self_certainty_and_sampled_logit_extras():
    logits = torch.zeros(2, 2, 4)
    logits[0, 0] = torch.tensor([2.0, 0, 0, 0])
    ctx = _ctx(["a", "b"], [False, False], logits=logits)
    ctx.batch = ctx.batch.replace(response_ids=torch.tensor([[0, 1], [3, 3]]),
                                  response_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    out = methods.build("ucas").advantage.rollout_extras(ctx)
    L4 = math.log(4)
    torch.testing.assert_close(out["self_certainty"], torch.tensor([[1.84075, L4], [L4, 0.0]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["sampled_logit"], torch.tensor([[2.0, 0.0], [0.0, 0.0]]))


def test_reward_source_config_and_a_label_free_trainer_step(tmp_path):
    from entrolab.train.config import config_from_dict
    from entrolab.train.trainer import Trainer

    with pytest.raises(ConfigError, match="reward_source"):
        config_from_dict({"data": {"reward_source": "oracle"}})
    cfg = config_from_dict({
        "model": {"name": "tiny"}, "data": {"task": "arithmetic", "heldout_size": 2, "reward_source": "majority_vote"},
        "rollout": {"n": 2, "max_new_tokens": 4}, "algorithm": {"method": "pear"},
        "optim": {"steps": 1, "prompts_per_step": 2, "mini_batches": 1, "micro_batch_size": 4},
        "eval": {"every": 0, "size": 1}, "checkpoint": {"every": 0}, "diagnostics": {"measure_delta_h": False,
                                                                                     "law_refit_every": 0},
        "logging": {"run_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False}})
    trainer = Trainer(cfg)
    seen = {}
    original = trainer.engine.rollout

    def spy(*args):
        rollout = original(*args)
        seen.update(rollout.batch.extras)
        seen["rewards"] = rollout.batch.rewards
        seen["texts"], seen["group_ids"] = rollout.texts, rollout.batch.group_ids
        return rollout

    trainer.engine.rollout = spy
    (m,) = trainer.train()
    assert math.isfinite(m["loss/total"])
    assert {"phase", "correct"} <= set(seen)
    pseudo = majority_vote_rewards([extract_answer(t) for t in seen["texts"]], seen["group_ids"])
    torch.testing.assert_close(seen["rewards"], pseudo)  # the pseudo-labels are the rewards
    torch.testing.assert_close(seen["correct"], pseudo)  # and PEAR's correctness
