"""Catalog entries of the kl knob (issue 7: method catalog II).

Toy overrides (``toy_overrides``, used by tests/test_methods_kl.py and docs/methods-clip-kl.md): the toy policy takes
Adam steps of lr 0.1 on 8 prompts × 4 positions × 8 actions, so a KL coefficient of 1e-3 (an LM's value at lr 1e-6)
does not move it within 20–30 steps, a 2e-3 token fraction selects one token of a 64-token toy mini-batch, and
a 50-step stagnation window never closes; each override below says which of these it fixes.
"""

from ..registry import Method, register_method

register_method(Method(
    name="orz", title="Open-Reasoner-Zero: no KL, undiscounted advantages", arxiv="2503.24290",
    sets={"kl": "none", "advantage": "dr_grpo"},
    entropy_effect="no KL anchor: nothing resists entropy decrease (ORZ relies on on-policy updates for stability)",
    evidence="approximate — ORZ is PPO with a learned critic and GAE λ = γ = 1 (Â_t = R − V(s_t)); without a critic "
             "V is replaced by the group-mean return, A = R − mean_G R on every token",
    notes="No KL loss, no KL reward, no entropy bonus; PPO clip 0.2; one update per rollout. A critic-based GAE "
          "advantage would slot into the advantage knob. Against GRPO (no KL either) the preset differs only in "
          "the advantage: on the toy its run is GRPO-with-dr_grpo's step for step and its entropy falls as GRPO's "
          "does (0.94–1.02 of GRPO's decline over 20 steps; 0.54–0.75 with a β = 0.05 anchor).",
))

register_method(Method(
    name="prorl", title="ProRL: prolonged RL with reference resets", arxiv="2505.24864",
    sets={"kl": "prorl_kl", "clip": {"name": "clip_higher", "eps_high": 0.4}, "sampling": "dynamic_sampling"},
    entropy_effect="the KL term slows collapse and periodic hard resets of π_ref (and the optimizer) stop it from "
                   "pinning the policy to a stale anchor, allowing sustained exploration",
    evidence="approximate — β and the reset schedule were not found: β = 1e-3 (k3) and a reset after 50 steps "
             "without a new best reward/mean are choices",
    notes="Reset requests go through pop_actions() ('reset_reference', 'reset_optimizer'); ε_low 0.2 / ε_high 0.4 "
          "and dynamic sampling from DAPO; the paper's rollout temperature 1.2 is a rollout setting.",
    # toy: β = 1e-3 leaves no visible anchor at the toy's step size (0.3 makes the anchor, and so its resets, matter);
    # a 20–30-step run never reaches 50 steps without improvement, so the stage ends on a 5-step schedule instead.
    toy_overrides={"kl.coef": 0.3, "kl.patience": 0, "kl.reset_every": 5},
))

register_method(Method(
    name="apo", title="APO: asymmetric policy optimization (View-R1)", arxiv="2506.21655",
    sets={"kl": "apo_kl", "advantage": "apo_stcr"},
    entropy_effect="weakens the KL anchor on hard prompts' positive samples so the policy can move further where it "
                   "must explore; keeps it on easy ones",
    notes="DADS: w = 1 − exp(−e·(1 − d)) on positive-advantage responses (d = group failure rate), β = 1e-3, k3. "
          "STCR: incorrect responses longer than the group's correct ones get A·(1 + 1 − 1.00001^−Δ). Toy: entropy "
          "above GRPO's on 8/8 seeds (the anchor's effect); the difficulty weights stay within 0.01 nats of a "
          "uniform KL (mean weight 0.93), so their specific claim is not resolved there.",
    # toy: β = 1e-3 leaves no visible anchor at the toy's step size; 0.05 does, so the DADS weights have something
    # to relax. (The toy's responses all have 4 tokens, so STCR's length term never fires there.)
    toy_overrides={"kl.coef": 0.05},
))

register_method(Method(
    name="sent", title="SENT: KL on low-entropy tokens, stronger on their high-covariance subset",
    arxiv="2512.04359",
    sets={"kl": "sent_kl", "sampling": "semantic_entropy_curriculum"},
    entropy_effect="anchors confident tokens, and most strongly the high-covariance ones that drive entropy down "
                   "(the central paper's entropy sink), leaving forking tokens free",
    evidence="approximate — formulas not released: k3 reference KL (β 1e-3) on tokens below the response's 0.8 "
             "entropy quantile plus KL-Cov (k 2e-3, β 1, abs(log π_θ − log π_old)) on their top-covariance subset",
    notes="With its semantic-entropy curriculum (prompts served from low to high semantic entropy in stages, the "
          "sampling knob's semantic_entropy_curriculum; `entropy_curriculum` is the curriculum alone).",
    # toy: k = 2e-3 selects max(1, ⌊0.002·64⌋) = 1 token of a toy mini-batch (64 tokens); 0.1 selects 6.
    toy_overrides={"kl.cov_k": 0.1},
))

register_method(Method(
    name="ragen", title="RAGEN / StarPO-S", arxiv="2504.20073",
    sets={"sampling": "reward_std_filter", "kl": "none", "clip": "clip_higher",
          "objective": [{"name": "entropy_bonus"}]},
    entropy_effect="delays the Echo Trap (reward-std and entropy collapse): trains only on high-variance prompts, "
                   "removes the KL pull, clip-higher and a small entropy bonus",
    notes="Keep the top 25% prompts by reward std; KL 0; ε 0.2/0.28; entropy bonus 1e-3. StarPO-S prefers a critic "
          "(GAE γ = λ = 1); the preset keeps the GRPO advantage. (2507.14843, cited for RAGEN in some lists, is a "
          "different paper.)",
))
