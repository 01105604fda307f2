"""Catalog entries of the foundation: the baselines and the central paper's methods (2505.22617)."""

from ..registry import Method, register_method

register_method(Method(
    name="grpo", title="Group Relative Policy Optimization", arxiv="2402.03300",
    sets={"advantage": "grpo"}, category="baseline",
    entropy_effect="baseline: entropy falls early and monotonically (the collapse of 2505.22617)",
    notes="Group-normalised advantages, PPO clip ε = 0.2, no KL, token-mean (the verl/DAPO aggregation).",
))
register_method(Method(
    name="dr_grpo", title="Dr. GRPO (GRPO done right)", arxiv="2503.20783",
    sets={"advantage": "dr_grpo", "aggregation": "seq-mean-token-sum-norm"}, category="baseline",
    entropy_effect="no direct entropy mechanism; removes GRPO's length and difficulty biases",
    notes="No std division; each response's token sum is divided by a constant length (norm_length, default T).",
))
register_method(Method(
    name="rloo", title="REINFORCE Leave-One-Out", arxiv="2402.14740",
    sets={"advantage": "rloo"}, category="baseline",
    entropy_effect="baseline: follows the same entropy–performance law as GRPO (2505.22617 Fig. 6)",
))
register_method(Method(
    name="reinforce_pp_baseline", title="REINFORCE++ with group baseline", arxiv="2501.03262",
    sets={"advantage": "reinforce_pp_baseline"}, category="baseline",
    entropy_effect="baseline: follows the same entropy–performance law as GRPO (2505.22617 Fig. 6)",
    notes="Group-mean baseline, then whitening over all tokens of the batch (verl reinforce_plus_plus_baseline).",
))
register_method(Method(
    name="dapo", title="DAPO: decoupled clip and dynamic sampling", arxiv="2503.14476",
    sets={"clip": "clip_higher", "aggregation": "token-mean", "sampling": "dynamic_sampling"},
    entropy_effect="raises entropy vs. GRPO: ε_high = 0.28 lets rare positive-advantage tokens grow",
    notes="Clip-higher (ε_low 0.2, ε_high 0.28), token-mean loss, dynamic sampling. Overlong reward shaping is a "
          "reward-side option of the trainer, not part of this preset.",
))
register_method(Method(
    name="clip_cov", title="Clip-Cov: detach the gradient of a few high-covariance tokens", arxiv="2505.22617",
    sets={"clip": "clip_cov"},
    entropy_effect="keeps entropy higher than GRPO: removes the dominant positive-covariance (entropy-lowering) tokens",
    notes="r = 2e-4 of tokens drawn from 1 < Cov < 5, PPO-clipped tokens excluded. The released scripts also open "
          "the PPO clip (ε = 1) with dual clip 10.",
    toy_overrides={"clip.ratio": 0.05, "clip.cov_lb": 0.05, "clip.cov_ub": 50.0},
))
register_method(Method(
    name="kl_cov", title="KL-Cov: KL-anchor the top high-covariance tokens to the rollout policy", arxiv="2505.22617",
    sets={"clip": "none", "kl": "kl_cov"},
    entropy_effect="keeps entropy higher than GRPO (>10× at the baseline's plateau in the paper); acts off-policy only",
    notes="Top k = 2e-3 of tokens by Cov get β·|log π_θ − log π_old| with β = 1; no PPO clip on any token (as the "
          "reference code).",
    toy_overrides={"kl.k": 0.1},
))
register_method(Method(
    name="entropy_bonus", title="Entropy bonus (entropy regularisation)", arxiv="1602.01783",
    sets={"objective": [{"name": "entropy_bonus"}]},
    entropy_effect="raises entropy in proportion to its coefficient; 1e-2 made entropy explode in 2505.22617 §4.1",
    notes="ℓ − α·H with α = 1e-3, sharing the policy loss's mask and aggregation; the gradient flows through H.",
    toy_overrides={"objective.0.coef": 0.05},
))
