"""Catalog entries of the objective knob (issue 8, "Method catalog III"): entropy bonuses with controllers, entropy
objectives, and token selection / reweighting. Components live in ``knobs/objective/``; the shared machinery in
``knobs/controllers.py`` and ``knobs/token_select.py``. ``docs/methods-objective.md`` has formulas and toy numbers.

Toy overrides: the toy policy (8 actions, entropy ≈ 1.75 → 0.3 nats in 30 GRPO steps, Adam lr 0.1) lives far from
an LM's entropy scale and step size, so entropy targets move to ≈ 1 nat and coefficients to the toy's scale.
"""

from ..registry import Method, register_method

register_method(Method(
    name="adaptive_entropy", title="Adaptive entropy control (Skywork-OR1)", arxiv="2505.22312",
    sets={"objective": [{"name": "adaptive_entropy"}]},
    entropy_effect="holds entropy near a target: the bonus coefficient steps up while entropy is below it",
    evidence="approximate — H* 0.2, Δ 0.001, c in [0, 0.5] read in the released 7B script; c₀ = 0 and the "
             "below-target gate follow the paper's description, not re-read here",
    notes="ℓ − c_k·𝟙[H_k ≤ H*]·H, c_{k+1} = clip(c_k + Δ·sign(H* − H_k)); H_k the step's rollout entropy. "
          "We found no TRL option implementing it.",
    toy_overrides={"objective.0.target": 1.0, "objective.0.delta": 0.05},
))
register_method(Method(
    name="aer", title="AER: adaptive entropy regularisation", arxiv="2510.10959",
    sets={"objective": [{"name": "aer"}]},
    entropy_effect="keeps entropy in a band below its initial level; harder prompts get more bonus",
    evidence="approximate — formulas and values not recovered (abstract only); difficulty = 1 − group accuracy "
             "normalised to mean 1, H* = 0.5·H₀, integral gain 1e-3, α₀ 1e-3, α ≤ 1e-2 are readings",
    notes="ℓ − α_k·d_q·H; α_{k+1} = clip(α_k − η(H_k − ρH₀), 0, α_max).",
    toy_overrides={"objective.0.target_ratio": 0.6, "objective.0.gain": 0.1, "objective.0.init": 0.0,
                   "objective.0.coef_max": 1.0, "objective.0.correct_threshold": 0.75},
))
register_method(Method(
    name="aent", title="AEnt: clamped entropy with an adaptive coefficient", arxiv="2509.03493",
    sets={"objective": [{"name": "aent"}]},
    entropy_effect="holds the clamped (top-probability-set) entropy in a band; no push toward the long tail",
    notes="Needs the forward pass to add extras['clamped_entropy'] = clamped_entropy_from_logits(logits, clamp_p) "
          "with gradient (engine hook). Defaults: the OpenR1 1.5B script (code read in a third-party copy).",
    toy_overrides={"objective.0.clamp_p": 0.25, "objective.0.init": 0.0, "objective.0.ent_low": 0.9,
                   "objective.0.ent_high": 1.1, "objective.0.lr": 0.1, "objective.0.warmup": 0,
                   "objective.0.coef_min": 0.0, "objective.0.coef_max": 1.0},
))
register_method(Method(
    name="aepo_he", title="AEPO (He et al.): stage-dependent entropy against echo reflections", arxiv="2511.06380",
    sets={"objective": [{"name": "aepo_stage_entropy"}]},
    entropy_effect="raises entropy in the reflection stage and lowers it in the answer stage",
    evidence="approximate — formulas not recovered (abstract only); coefficients 1e-3 are the usual bonus scale; "
             "the RIF (information-flow filtering) half is not implemented",
    notes="Needs extras['stage'] (1 reflection, 2 answer) from the engine (stage_ids_from_answer_start).",
    toy_overrides={"objective.0.coef_reflection": 0.1, "objective.0.coef_answer": 0.1},
))
register_method(Method(
    name="epo", title="EPO: entropy smoothing toward the historical average", arxiv="2509.22576",
    sets={"objective": [{"name": "epo"}]},
    entropy_effect="raises entropy (bonus) and damps its swings: entropy outside [0.8, 1.2]× its history is pulled back",
    evidence="approximate — the released penalty is a constant with no gradient; ours is the differentiable "
             "deviation ReLU(H − κ_h·H̄) + ReLU(κ_l·H̄ − H)",
    notes="c_H = 1e-3, c_s = 1, κ = 0.8/1.2, phase weight over 150 steps (released code). Turn ids from "
          "extras['turn_id'] for multi-turn agents.",
    toy_overrides={"objective.0.coef": 0.05, "objective.0.smooth_coef": 10.0, "objective.0.total_steps": 30},
))
register_method(Method(
    name="one_shot_em", title="One-shot entropy minimisation", arxiv="2505.20282",
    sets={"objective": [{"name": "entropy_minimization"}]},
    entropy_effect="drives entropy down on purpose (unsupervised sharpening; no reward)",
    notes="Loss = token-mean H at τ = 0.5 (sample at temperature 0.5, top-p 0.95); lr 2e-5, 50 steps, one prompt. "
          "Replaces the surrogate (a composed KL knob's penalty stays); rewards are unused.",
    toy_overrides={"objective.0.coef": 0.2},
))
register_method(Method(
    name="flowrl", title="FlowRL: reward-distribution matching", arxiv="2509.15207",
    sets={"objective": [{"name": "flowrl"}], "aggregation": "seq-mean-token-sum"},
    entropy_effect="keeps probability on several rewarded modes: entropy stays above GRPO's",
    evidence="approximate — log Z is a learned per-prompt table (hashed prompt_id) instead of the paper's MLP on "
             "the prompt's hidden state; the IS weight is clipped as the paper writes (the code multiplies by the "
             "unclipped one)",
    notes="mean_i w_i·(log Z + mean log π − β·Â − mean log π_ref)², β = 15, ε = 0.2; log Z via parameters().",
    toy_overrides={"objective.0.beta": 1.0},
))
register_method(Method(
    name="forking_tokens", title="Beyond the 80/20 rule: train on high-entropy forking tokens", arxiv="2506.01939",
    sets={"objective": [{"name": "forking_tokens"}]},
    entropy_effect="updates only the top-20% entropy tokens; low-entropy tokens are left alone",
    notes="Top ⌈0.2·N⌉ entropies of the whole rollout batch (padding excluded), token-mean over the selected "
          "tokens (normalizer='selected', the reference code). The paper trains on the DAPO recipe: compose with "
          "a clip method for ε_high = 0.28.",
))
register_method(Method(
    name="dart_gui", title="DART-GUI: train on high-entropy steps", arxiv="2509.23866",
    sets={"objective": [{"name": "dart_gui"}]},
    entropy_effect="concentrates the update on uncertain steps (80/20 logic at step granularity)",
    evidence="approximate — the selection ratio was not recovered (0.2 is a reading); steps from "
             "extras['step_id'], else one step per response; truncated IS is the clip knob's",
))
register_method(Method(
    name="d3s", title="D³S: dynamic token down-sampling by abs(A)·H", arxiv="2509.22115",
    sets={"objective": [{"name": "d3s"}]},
    entropy_effect="keeps updates on uncertain, impactful tokens early, relaxing to all tokens",
    evidence="approximate — keep ratios and schedule not recovered (0.2 → 1 over 200 steps is a reading); the "
             "sample-level Var(A) down-sampling belongs to the sampling knob and is not here",
    toy_overrides={"objective.0.schedule_steps": 30},
))
register_method(Method(
    name="ulorl", title="UloRL: mask well-mastered positive tokens when entropy is low", arxiv="2507.19766",
    sets={"objective": [{"name": "ulorl"}]},
    entropy_effect="thermostat: below σ the sharpening tokens (p ≥ τ in positive samples) stop getting gradient",
    notes="τ = 0.99, σ = 0.2 (paper); per-response mean entropy; token-mean over all tokens.",
    toy_overrides={"objective.0.tau": 0.5, "objective.0.sigma": 1.0, "objective.0.positive_reward": 0.75},
))
register_method(Method(
    name="pos_adv_reweight", title="Positive-advantage reweighting (Prog-Adv-Reweight)", arxiv="2511.05993",
    sets={"objective": [{"name": "pos_adv_reweight"}]},
    entropy_effect="holds entropy near δ: positive-advantage tokens (the main entropy sink) are down-weighted",
    notes="Entropy-guided λ (δ = 0.2, Δ = 0.05, λ₀ = 0) by default; schedule='stage' or 'epoch' give the "
          "progressive variants the survey calls Prog-Adv-Reweight.",
    toy_overrides={"objective.0.target": 1.0, "objective.0.delta": 0.1},
))
register_method(Method(
    name="simko", title="SimKO: top-K smoothing at forking tokens", arxiv="2510.14807",
    sets={"objective": [{"name": "simko"}]},
    entropy_effect="spreads positive updates over the top-K candidates and penalises confident wrong top-1 tokens",
    notes="Needs top-K candidate log-probs from the engine: extras['old_topk_logprobs'] (rollout) and "
          "extras['topk_logprobs'] (update forward, same ids, with gradient). K = 3, α = 0.01, τ = 0.8, ×1.1.",
    toy_overrides={"objective.0.alpha": 0.9},
))
register_method(Method(
    name="steer", title="STEER: reweight tokens by predicted entropy change", arxiv="2510.10150",
    sets={"objective": [{"name": "steer"}]},
    entropy_effect="damps the tokens predicted (Lemma 1) to move entropy most, smoothing the entropy curve",
    notes="Ω = (A/π_old)·π(1−π)(log π + H), w = clamp(exp(−k·abs(Ω)), 0.8, 1), token-mean over all tokens.",
    toy_overrides={"objective.0.w_min": 0.01},
))
register_method(Method(
    name="entropic", title="EntroPIC: PI control of entropy via high-probability token weights", arxiv="2511.15248",
    sets={"objective": [{"name": "entropic"}]},
    entropy_effect="locks entropy to a target: positive/negative high-prob tokens weighted (1 ± α), α from a PI law",
    evidence="approximate — the target entropy has no published default (0.2 is a reading); H is measured once "
             "per step on the rollout batch (the code: per micro-batch)",
    notes="K_p = 1, K_i = 0.01, p_hi = 0.95, α in [−1, 1] (released code).",
    toy_overrides={"objective.0.target": 1.0, "objective.0.high_prob": 0.5},
))
register_method(Method(
    name="evol_rl", title="EVOL-RL: majority selects, novelty varies (label-free)", arxiv="2509.15194",
    sets={"objective": [{"name": "evol_rl_bonus"}], "clip": "clip_higher"},
    entropy_effect="novelty-shaped rewards and an entropy bonus counter the collapse of majority-vote (TTRL) rewards",
    evidence="approximate — the embedder is all-MiniLM-L6-v2 instead of Qwen3-Embedding-4B",
    notes="Rewards: majority 0.5 + 0.5·ν̂, others −1 + 0.5·ν̂, no answer −1; GRPO, clip-higher ε_high 0.28, entropy "
          "bonus 0.003 (README example). The bonus term names the evol_rl reward source (env/reward_sources.py), which "
          "the engine runs instead of the verifier; an engine without reward sources refuses the method.",
))
