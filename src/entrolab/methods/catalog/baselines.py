"""Catalog V (issue 15): every policy loss and advantage estimator that verl 0.9.1 and TRL 1.16 offer and the catalog
lacked — the baselines a head-to-head comparison needs in the same harness — including PPO with a value model.

Each entry names its ``anchor``: the function it equals on the fixed inputs of ``tests/test_methods_baselines.py``
(loss, gradient or advantages, numbers computed once from the installed anchor). Entropy effects are what the paper
(or a careful reading of the loss) says; what the toy shows against GRPO is in ``docs/methods-baselines.md``.
"""

from ..registry import Method, register_method

VERL = "verl 0.9.1 trainer/ppo/core_algos.py"
TRL = "TRL 1.16 trainer/grpo_trainer.py GRPOTrainer._compute_loss"

# ============================================================================================ policy losses
register_method(Method(
    name="gspo", title="GSPO: group sequence policy optimisation", arxiv="2507.18071",
    sets={"clip": "gspo", "aggregation": "seq-mean-token-mean"}, category="baseline",
    entropy_effect="no entropy term; clipping whole responses by their sequence ratio drops far more tokens than a "
                   "token clip, which the paper ties to stability, not to entropy",
    notes="Sequence ratio s_i = exp(mean_t log r_t), clipped at 1 ± (3e-4, 4e-4); seq-mean-token-mean as the paper.",
    anchor=f"{VERL} compute_policy_loss_gspo; {TRL} with importance_sampling_level='sequence', loss_type='grpo'",
))
register_method(Method(
    name="luspo", title="LUSPO: length-unbiased sequence policy optimisation", arxiv="2602.05261",
    sets={"clip": "gspo", "aggregation": "seq-mean-token-sum"}, category="baseline",
    entropy_effect="no entropy term; removes GSPO's bias toward short responses (each sequence's loss is scaled by its "
                   "length), which the paper shows stops response-length collapse",
    notes="GSPO's sequence-ratio clip with each response's token losses summed (seq-mean-token-sum); ε as GSPO.",
    anchor=f"{TRL} with loss_type='luspo', importance_sampling_level='sequence'",
))
register_method(Method(
    name="cispo", title="CISPO: clipped importance-sampling weight policy optimisation", arxiv="2506.13585",
    sets={"clip": "cispo"}, category="baseline",
    entropy_effect="keeps a gradient on the low-probability forking tokens PPO's clip drops after their first "
                   "update; MiniMax-M1 ties this to avoiding entropy collapse",
    notes="ℓ = −sg(clip(r, 1−ε_low, 1+ε_high))·A·log π with no lower bound and cap 5 (TRL's recommended ε_max).",
    anchor=f"{VERL} compute_policy_loss_cispo; {TRL} with loss_type='cispo' (epsilon_high = 1 + ε_high)",
))
register_method(Method(
    name="sapo", title="SAPO: soft adaptive policy optimisation", arxiv="2511.20347",
    sets={"clip": "sapo", "aggregation": "seq-mean-token-mean"}, category="baseline",
    entropy_effect="a soft gate instead of a hard clip: off-policy tokens fade instead of being dropped, and "
                   "negative tokens fade faster (τ_neg > τ_pos); the paper reports steadier training, not an "
                   "entropy target",
    notes="ℓ = −σ(τ(r − 1))·(4/τ)·A, τ = 1.0 (A > 0) / 1.05; seq-mean-token-mean as verl and TRL force it.",
    anchor=f"{VERL} compute_policy_loss_sapo; {TRL} with loss_type='sapo'",
))
register_method(Method(
    name="gmpo", title="GMPO: geometric-mean policy optimisation", arxiv="2507.20673",
    sets={"clip": "gmpo", "aggregation": "seq-mean-token-mean"}, category="baseline",
    entropy_effect="the geometric mean damps outlier token ratios, so a wider clip (e^±0.4) is safe; the paper "
                   "reports higher entropy than GRPO during training",
    notes="R_i = exp(mean_t clip_sgn(A)(log r_t, ±0.4)), loss −Â_i·R_i averaged over responses.",
    anchor=f"{VERL} compute_policy_loss_geo_mean (loss_mode=geo_mean)",
))
register_method(Method(
    name="gpg", title="GPG: group policy gradient", arxiv="2504.02546",
    sets={"clip": "gpg", "advantage": "gpg"}, category="baseline",
    entropy_effect="no entropy mechanism: plain REINFORCE (no clip, no KL) with a rescaled group baseline; every "
                   "token keeps its gradient",
    notes="ℓ = −A·log π; A = α(R − mean_G R), α = B/#(R ≠ 0) as verl counts it (the paper: B/(B − M)).",
    anchor=f"{VERL} compute_policy_loss_gpg and compute_gpg_outcome_advantage",
))
register_method(Method(
    name="dppo_tv", title="DPPO-Binary-TV: a total-variation trust region", arxiv="2602.04879",
    sets={"clip": "dppo_tv"}, category="baseline",
    entropy_effect="bounds the probability change π − π_old instead of the ratio: rare tokens may move much further "
                   "than under PPO's clip (1e-5 → 1e-3 is allowed) and confident tokens less; no entropy claim in the "
                   "paper",
    notes="Kept tokens: A > 0 and π − π_old ≤ 0.15, or A ≤ 0 and π − π_old ≥ −0.15; ℓ = −A·sg(min(r, 20))·log π.",
    anchor=f"{VERL} compute_policy_loss_dppo_tv",
))
register_method(Method(
    name="dppo_kl", title="DPPO-Binary-KL: a binary-KL trust region", arxiv="2602.04879",
    sets={"clip": "dppo_kl"}, category="baseline",
    entropy_effect="as dppo_tv with the KL of the binary distributions {π, 1 − π} (δ = 0.05): rare tokens move freely, "
                   "confident ones are bounded; no entropy claim in the paper",
    notes="Kept tokens: binary KL ≤ 0.05 or moving against the advantage; ℓ = −A·sg(min(r, 20))·log π.",
    anchor=f"{VERL} compute_policy_loss_dppo_kl",
))
register_method(Method(
    name="dro", title="DRO: policy gradient with a quadratic log-ratio penalty", arxiv="2405.19107",
    sets={"clip": "dro"}, category="baseline",
    entropy_effect="no clip: ½β(log π − log π_old)² pulls every token back to the rollout policy, a soft trust region; "
                   "no entropy claim",
    notes="ℓ = −(A·log π − ½β(log π − log π_old)²), β = 0.05.",
    anchor=f"{VERL} compute_policy_loss_dro",
))
register_method(Method(
    name="vespo", title="VESPO: variational sequence-level soft policy optimisation", arxiv="2602.10693",
    sets={"clip": "vespo", "aggregation": "token-mean"}, category="baseline",
    entropy_effect="a smooth Gamma-shaped weight of the sequence ratio replaces the hard clip (stale or runaway "
                   "sequences fade out); no entropy claim",
    notes="ℓ = −φ(w)·A·log π, φ(w) = e^λ w^k e^(−λw) with w the sequence ratio, (k, λ) = (2, 3) for A ≥ 0, (3, 2) else.",
    anchor=f"{TRL} with loss_type='vespo' (GRPOTrainer.get_gamma_weights)",
))
register_method(Method(
    name="bnpo", title="BNPO loss normalisation: token mean per micro-batch", arxiv="—",
    sets={"aggregation": "token-mean-local"}, category="baseline",
    entropy_effect="a loss normalisation only: each micro-batch's token mean, so tokens of short micro-batches weigh "
                   "more; no entropy mechanism",
    notes="TRL's loss_type='bnpo' (no paper): equals token-mean without micro-batching.",
    anchor=f"{TRL} with loss_type='bnpo'",
))

# ============================================================================================ advantage estimators
register_method(Method(
    name="gae", title="GAE: generalised advantage estimation with a value model", arxiv="1506.02438",
    sets={"advantage": "gae"}, category="baseline",
    entropy_effect="a learnt per-token baseline instead of a group's: no entropy mechanism; follows the same "
                   "entropy–performance law as GRPO (2505.22617 reports PPO's collapse too)",
    notes="Â from δ_t = r_t + γV_{t+1} − V_t, γ = λ = 1, whitened; the value model is trained in the same loop "
          "(critic.kind: head or model). Composes with any clip rule; `ppo` is GAE + PPO's clip.",
    anchor=f"{VERL} compute_gae_advantage_return (advantages, returns) and compute_value_loss (the critic)",
))
register_method(Method(
    name="ppo", title="PPO with a value model (GAE + clipped surrogate)", arxiv="1707.06347",
    sets={"advantage": "gae", "clip": "ppo"}, category="baseline",
    entropy_effect="baseline: entropy collapses as under GRPO (2505.22617 Fig. 1 includes PPO)",
    notes="Classic PPO: GAE advantages from a critic (a value head on the policy by default, critic.kind=model for a "
          "separate critic), PPO clip ε = 0.2, clipped value loss (c = 0.5), critic lr 1e-5.",
    anchor=f"{VERL} compute_gae_advantage_return, compute_policy_loss_vanilla, compute_value_loss",
))
register_method(Method(
    name="reinforce_pp", title="REINFORCE++: global advantage normalisation", arxiv="2501.03262",
    sets={"advantage": "reinforce_pp"}, category="baseline",
    entropy_effect="baseline: no entropy mechanism; batch whitening instead of a group baseline (works with one "
                   "response per prompt)",
    notes="A = whiten_batch(reward-to-go), γ = 1.",
    anchor=f"{VERL} compute_reinforce_plus_plus_outcome_advantage",
))
register_method(Method(
    name="remax", title="ReMax: REINFORCE with a greedy baseline", arxiv="2310.10505",
    sets={"advantage": "remax"}, category="baseline",
    entropy_effect="baseline: no entropy mechanism; the greedy response's reward as baseline (one extra greedy "
                   "generation per prompt, no critic)",
    notes="A = R − R(greedy); the engine's greedy_rollout primitive scores the greedy response with the verifier.",
    anchor=f"{VERL} compute_remax_outcome_advantage",
))
register_method(Method(
    name="opo", title="OPO: on-policy RL with the optimal (length-weighted) baseline", arxiv="2505.23585",
    sets={"advantage": "opo"}, category="baseline",
    entropy_effect="baseline: no entropy mechanism; the paper reports more stable training and more diverse, less "
                   "repetitive outputs with exact on-policy updates",
    notes="A = R − Σ|o|R/Σ|o| over the group.",
    anchor=f"{VERL} compute_opo_outcome_advantage",
))
register_method(Method(
    name="optimal_token_baseline", title="Optimal token baseline: a variance-weighted baseline per position",
    arxiv="—", sets={"advantage": "optimal_token_baseline"}, category="baseline",
    entropy_effect="baseline: no entropy mechanism; per-position baselines weighted by accumulated score variance "
                   "(1 − 2π + Σπ²), which is large on high-entropy paths",
    notes="verl's docs (no paper); needs the rollout policy's Σπ² per position.",
    anchor=f"{VERL} compute_optimal_token_baseline_advantage",
))
register_method(Method(
    name="grpo_passk", title="Pass@k GRPO: credit only the group's best response", arxiv="2503.19595",
    sets={"advantage": "grpo_passk"}, category="baseline",
    entropy_effect="optimises pass@k: only the best response of a group is reinforced and nothing is pushed down, so "
                   "the rest of the distribution is not sharpened (the paper's motivation: keep diversity for pass@k)",
    notes="A_best = (R_max − R_2nd)/(std_G R + 1e-6), 0 elsewhere.",
    anchor=f"{VERL} compute_grpo_passk_outcome_advantage",
))
register_method(Method(
    name="gdpo", title="GDPO: group reward-decoupled normalisation", arxiv="2601.05242",
    sets={"advantage": "gdpo"}, category="baseline",
    entropy_effect="no entropy mechanism; each reward component is normalised in its group before summing, so a "
                   "dominant reward cannot drown a weaker one",
    notes="Components correct + format (\\boxed{}), weights 1, then batch whitening.",
    anchor=f"{VERL} compute_gdpo_outcome_advantage",
))
