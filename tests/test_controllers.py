"""entrolab.knobs.controllers (the one entropy controller behind adaptive_entropy, AER, AEnt, UloRL's gate,
Jin et al.'s λ and EntroPIC) and entrolab.knobs.token_select (the one selection / normaliser mechanism)."""

from __future__ import annotations

import math

import pytest
import torch
from batches import make_batch

from entrolab.errors import ConfigError
from entrolab.knobs.controllers import EntropyController, TokenMeanMeter, batch_entropy
from entrolab.knobs.token_select import normalise, top_fraction, unit_mean


# =============================================================================================== controller
def test_band_error():
    c = EntropyController(low=0.35, high=0.62)
    assert c.error(0.2) == pytest.approx(-0.15)   # below the band: H − H_low
    assert c.error(0.5) == 0.0                     # inside: no error
    assert c.error(0.7) == pytest.approx(0.08)     # above: H − H_high
    assert EntropyController(low=0.2, high=0.2).error(0.5) == pytest.approx(0.3)


def test_incremental_sign_law_steps_and_clips():
    # Skywork-OR1: c ← clip(c + Δ·sign(H* − H)) = clip(c − Δ·sign(e)), Δ = 0.1, c ∈ [0, 0.25]
    c = EntropyController(low=1.0, high=1.0, ki=-0.1, law="sign", init=0.0, lo=0.0, hi=0.25)
    seen = []
    for h in (0.5, 0.5, 0.5, 0.5, 1.0, 1.5, 1.5, 1.5):
        c.observe(h)
        seen.append(c.value())   # the actuator used by this step's update
        c.commit()
    # 0 → .1 → .2 → .25 (clipped) → .25 (H = H*: sign 0) → .15 → .05 → 0 (clipped)
    assert seen == pytest.approx([0.0, 0.1, 0.2, 0.25, 0.25, 0.25, 0.15, 0.05])
    assert c.value() == 0.0


def test_incremental_linear_with_proportional_term_and_leak():
    # u_{k+1} = u_k + kp·(e_k − e_{k−1}) + ki·e_k − leak·(u_k − u₀);  u₀ = 1, kp = 2, ki = −0.5, leak = 0.1
    c = EntropyController(low=0.0, high=0.0, kp=2.0, ki=-0.5, leak=0.1, init=1.0)
    c.observe(0.4)
    c.commit()   # e0 = .4: u = 1 + 2·.4 − .5·.4 − .1·0 = 1.6
    assert c.value() == pytest.approx(1.6)
    c.observe(0.1)
    c.commit()   # e1 = .1: u = 1.6 + 2·(.1 − .4) − .05 − .1·.6 = 0.89
    assert c.value() == pytest.approx(0.89)


def test_positional_pi_uses_current_error_and_past_integral():
    # EntroPIC: α_k = clip(kp·e_k + ki·Σ_{τ<k} e_τ, −1, 1), e = H − H*
    c = EntropyController(low=0.5, high=0.5, kp=1.0, ki=0.1, form="positional", lo=-1.0, hi=1.0)
    c.observe(0.3)
    assert c.value() == pytest.approx(-0.2)            # −.2 + 0
    c.commit()
    c.observe(0.4)
    assert c.value() == pytest.approx(-0.1 + 0.1 * -0.2)
    c.commit()
    c.observe(3.0)
    assert c.value() == 1.0                              # 2.5 − .03, clipped
    c.commit()
    assert c.state_dict()["integral"] == pytest.approx(-0.2 - 0.1 + 2.5)


def test_warmup_holds_the_initial_value_and_counts_steps():
    c = EntropyController(low=1.0, high=1.0, ki=-1.0, init=0.3, warmup=2)
    for _ in range(2):
        c.observe(0.0)
        assert c.value() == 0.3
        c.commit()
    assert c.value() == 0.3          # the first post-warm-up update happens at the next commit
    c.observe(0.0)
    c.commit()
    assert c.value() == pytest.approx(1.3)


def test_anchor_sets_the_target_from_the_first_measurement():
    c = EntropyController(low=0.0, high=0.0, anchor=0.5, ki=-1.0)
    assert math.isnan(c.band[0])
    assert c.observe(2.0) == pytest.approx(1.0)   # H* = 0.5·2 = 1
    c.commit()
    assert c.band == (1.0, 1.0)
    assert c.observe(0.4) == pytest.approx(-0.6)  # the anchor does not move
    assert c.metrics("x")["x/target"] == 1.0


def test_commit_without_observation_is_a_no_op():
    c = EntropyController(low=1.0, high=1.0, ki=-1.0)
    c.commit()
    assert c.state_dict()["steps"] == 0 and c.value() == 0.0


def test_state_round_trip_continues_the_same_trajectory():
    def make():
        return EntropyController(low=0.5, high=0.8, kp=0.3, ki=-0.2, init=0.1, lo=0.0, hi=1.0, anchor=None)

    a, b = make(), make()
    hs = [1.2, 0.3, 0.4, 0.9, 0.2, 0.6, 0.1]
    for h in hs[:4]:
        a.observe(h)
        a.commit()
    b.load_state_dict(a.state_dict())
    for h in hs[4:]:
        for c in (a, b):
            c.observe(h)
            c.commit()
        assert a.value() == b.value()
    assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize("kwargs, match", [
    (dict(low=1.0, high=0.5), "low"),
    (dict(low=0.0, high=1.0, law="cubic"), "law"),
    (dict(low=0.0, high=1.0, form="pid"), "form"),
    (dict(low=0.0, high=1.0, lo=1.0, hi=0.0), "bounds"),
    (dict(low=0.0, high=1.0, init=2.0, hi=1.0), "outside"),
    (dict(low=0.0, high=1.0, leak=2.0), "leak"),
    (dict(low=0.0, high=1.0, warmup=-1), "warmup"),
    (dict(low=0.0, high=0.0, anchor=0.0), "anchor"),
])
def test_controller_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EntropyController(**kwargs)


def test_observe_rejects_non_finite():
    with pytest.raises(ValueError, match="finite"):
        EntropyController(low=0.0, high=0.0).observe(float("nan"))


def test_measurements():
    # batch_entropy: token-mean of old_entropy over valid tokens only
    ent = torch.tensor([[1.0, 2.0, 99.0], [3.0, 99.0, 99.0]])
    b = make_batch([2, 1], 3, old_entropy=ent)
    assert batch_entropy(b) == pytest.approx(2.0)
    m = TokenMeanMeter()
    assert m.pop() is None
    m.add(ent, b.mask)
    m.add(torch.full((2, 3), 6.0), torch.tensor([[1.0, 0, 0], [0, 0, 0]]))
    assert m.pop() == pytest.approx((6.0 + 6.0) / 4)
    assert m.pop() is None


# =============================================================================================== selection
def test_top_fraction_over_the_batch_excludes_padding():
    score = torch.tensor([[0.1, 0.9, 0.5, 50.0], [0.8, 0.2, 0.3, 0.7]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]])
    # N = 7 valid, ⌈0.2·7⌉ = 2: 0.9 and 0.8 — never the padded 50
    expected = torch.tensor([[False, True, False, False], [True, False, False, False]])
    assert torch.equal(top_fraction(score, mask, 0.2), expected)
    # ⌈0.5·7⌉ = 4
    assert int(top_fraction(score, mask, 0.5).sum()) == 4
    assert int(top_fraction(score, mask, 1.0).sum()) == 7


def test_top_fraction_per_sequence_and_quantile_rule():
    score = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.8, 0.2, 0.3, 0.7]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]])
    # per response: ⌈0.5·3⌉ = 2 and ⌈0.5·4⌉ = 2
    assert torch.equal(top_fraction(score, mask, 0.5, within="sequence"),
                       torch.tensor([[False, True, True, False], [True, False, False, True]]))
    # SimKO's rule: strictly above the response's 0.5-quantile (0.5 for row 0, 0.5 for row 1)
    assert torch.equal(top_fraction(score, mask, 0.5, within="sequence", rule="quantile"),
                       torch.tensor([[False, True, False, False], [True, False, False, True]]))


def test_top_fraction_by_units():
    score = torch.tensor([[0.1, 0.9, 0.5, 9.0], [0.8, 0.2, 0.3, 0.7]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]])
    units = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 2]])
    # unit means: row 0 → {0: 0.5, 1: 0.5 (padding ignored)}, row 1 → {0: 0.8, 1: 0.25, 2: 0.7}
    torch.testing.assert_close(unit_mean(score, mask, units),
                               torch.tensor([[0.5, 0.5, 0.5, 0.0], [0.8, 0.25, 0.25, 0.7]]))
    # 5 units, ⌈0.4·5⌉ = 2 → (row 1, unit 0) and (row 1, unit 2): every token of a chosen unit
    assert torch.equal(top_fraction(score, mask, 0.4, units=units),
                       torch.tensor([[False, False, False, False], [True, False, False, True]]))


def test_normalisers():
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]])
    w = torch.tensor([[0.0, 1, 0, 1], [1, 0, 0, 0]])   # the padded 1 does not count
    torch.testing.assert_close(normalise(w, mask, "all"), torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0]]))
    torch.testing.assert_close(normalise(w, mask, "selected"), torch.tensor([[0.0, 3.5, 0, 0], [3.5, 0, 0, 0]]))
    assert normalise(torch.zeros(2, 4), mask, "selected").abs().sum() == 0
    with pytest.raises(ConfigError, match="normalizer"):
        normalise(w, mask, "some")


def test_selected_normaliser_gives_the_mean_over_selected_tokens():
    from entrolab.ops.masked import aggregate_loss
    g = torch.Generator().manual_seed(0)
    loss = torch.randn(3, 5, generator=g)
    mask = (torch.arange(5)[None] < torch.tensor([5, 3, 4])[:, None]).float()
    sel = top_fraction(torch.rand(3, 5, generator=g), mask, 0.3)
    got = aggregate_loss(loss * normalise(sel.float(), mask, "selected"), mask, "token-mean")
    assert float(got) == pytest.approx(float(loss[sel].mean()), rel=1e-6)
    got_all = aggregate_loss(loss * normalise(sel.float(), mask, "all"), mask, "token-mean")
    assert float(got_all) == pytest.approx(float(loss[sel].sum() / mask.sum()), rel=1e-6)
