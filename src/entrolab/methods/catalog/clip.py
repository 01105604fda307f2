"""Catalog entries of the clip knob (issue 7: method catalog II).

Toy overrides (``toy_overrides``, used by tests/test_methods_clip.py and docs/methods-clip-kl.md): the toy policy takes
Adam steps of lr 0.1 on 8 prompts × 4 positions × 8 actions, against an LM's lr 1e-6 on millions of tokens. A KL
coefficient of 1e-3 then moves nothing within 30 steps, and a quantity normalised by an LM's vocabulary (ESPO's
log|V|) sits orders of magnitude off; each override below says why it is needed. DLER, EAG-RL, BAPO and M2PO run on
the toy with the paper's values: their clip rules act on the toy's tokens as written (M2PO's budget is simply not
exceeded at the toy's staleness — its stale-data test reuses one rollout for 32 updates instead of changing τ_M2).
"""

from ..registry import Method, register_method

register_method(Method(
    name="dler", title="DLER: doing length penalty right", arxiv="2510.15110",
    sets={"sampling": "dynamic_sampling", "advantage": "reinforce_pp_baseline",
          "clip": {"name": "clip_higher", "dual_clip": 10.0}, "kl": {"name": "ref_kl", "coef": 5e-4},
          "aggregation": "token-mean"},
    entropy_effect="keeps entropy up while a hard length cap shortens outputs: clip-higher (0.28) against the "
                   "collapse that length-penalised RL suffers",
    notes="NVlabs/DLER scripts: group-mean baseline then batch whitening (REINFORCE++-baseline), DAPO clip 0.2/0.28 "
          "with dual clip 10, dynamic sampling, token-mean, KL loss 5e-4 (k3, verl's low_var_kl). The truncation "
          "penalty is the generation cap (L_max = 4000: a truncated response has no answer and scores 0) — set the "
          "trainer's max_new_tokens. Toy: the clip-higher claim is not reproduced — entropy runs below GRPO's "
          "over the first 15 steps on 8/8 seeds (mean −0.018), see docs/methods-clip-kl.md.",
))

register_method(Method(
    name="eag_rl", title="EAG-RL: entropy-aware adaptive upper clip", arxiv="2508.13579",
    sets={"clip": "eag_rl"},
    entropy_effect="high-entropy trajectories get a wider upper bound (ε_high up to 0.4), so their positive updates "
                   "are larger and collapse is resisted",
    evidence="approximate — formulas from third-party summaries only; mean entropy over all response tokens "
             "instead of the EHR key-feature tokens; normalisation scope and ε_low not found",
    notes="ε_high(τ) = 0.2 + 0.2·minmax(H̄(τ)) over the batch, ε_low = 0.2. The expert-attention reward and the "
          "MCTS/SFT stages are outside the loss. Toy: the wider bound fires but the claim is not reproduced — "
          "entropy runs below GRPO's over the first 15 steps on 8/8 seeds (mean −0.024).",
))

register_method(Method(
    name="clip_low_high", title="Clip-low raises, clip-high lowers entropy (Park et al.)", arxiv="2509.26114",
    sets={"clip": "clip_low_high"},
    entropy_effect="clip-low raises entropy and clip-high lowers it; the preset disables clip-high to stop the "
                   "entropy decline (shown on the toy under vanilla policy gradient)",
    evidence="approximate — the paper's ε settings were not retrieved; ε_low = 0.2 (standard) and no upper bound "
             "(the reviews' 'disable clip-high')",
    notes="Both bounds are knobs: eps_low (1 = no lower clip) and eps_high (None = no upper clip); clip/frac_low and "
          "clip/frac_high log the two events separately.",
))

register_method(Method(
    name="bapo", title="BAPO: balanced policy optimization with adaptive clipping", arxiv="2510.18927",
    sets={"clip": "bapo"},
    entropy_effect="admits more low-probability positive tokens (higher c_high) and filters low-probability "
                   "negatives (higher c_low), preserving entropy in off-policy training",
    notes="Code reading (WooooDyy/BAPO): value-based ρ = P/N, target 1, c_low 0.6→0.8 first then c_high 1.2→2.0, "
          "step 0.05, dual clip 3, searched per loss call. Paper reading (not implemented): positive share ≥ 0.5 "
          "(0.4 in a note), c_low ∈ [0.6, 0.9], c_high ∈ [1.2, 3.0], c_high first (δ 0.05) then c_low (δ 0.02). "
          "Acts only off-policy (stale rollouts, several updates per batch). Stateless by design: the search "
          "restarts from (0.6, 1.2) on every call, as in the code; a warm start would ratchet the bounds up, since "
          "the search only raises them. Toy: claim not reproduced — entropy below GRPO's over the first 15 steps "
          "on 8/8 seeds (mean −0.016).",
))

register_method(Method(
    name="archer", title="Archer: dual-token constraints", arxiv="2507.15778",
    sets={"clip": "archer", "kl": "archer_kl"},
    entropy_effect="top-20% entropy tokens move freely (clip 0.5, no KL) while the rest are anchored (clip 0.2, "
                   "KL 1e-3): exploration at forks without breaking knowledge tokens",
    notes="Per-response 0.8 entropy quantile; dual clip 10; KL k3 token-mean over the low-entropy tokens only. "
          "Re-implemented by semantics: the reference code's mask names are swapped.",
    # toy: β = 1e-3 on the knowledge tokens does not move the toy within 30 Adam steps of lr 0.1; 0.05 does.
    toy_overrides={"kl.coef": 0.05},
))

register_method(Method(
    name="dcpo", title="DCPO: dynamic clipping policy optimization", arxiv="2509.02333",
    sets={"clip": "dcpo", "advantage": "dcpo_sas", "aggregation": "seq-mean-token-sum"},
    entropy_effect="wider bounds for rare tokens keep their gradients (entropy preserved); far fewer tokens clipped "
                   "than GRPO/DAPO, and history-smoothed advantages leave no zero-gradient groups",
    notes="DAC bounds ½ + ½√(1 ∓ 4ε/q) from the old probability q (ε_low 0.16, ε_high 0.2, cap 10, dual clip 3); "
          "SAS smooths the step and per-prompt historical standardisations (extras['prompt_id'], checkpointed); "
          "OTM = seq-mean-token-sum, no length normalisation.",
))

register_method(Method(
    name="aspo", title="ASPO: asymmetric importance sampling", arxiv="2510.06062",
    sets={"clip": "aspo", "kl": "archer_kl"},
    entropy_effect="flipping the IS weight of positive tokens to 1/r stops over-boosting already-raised tokens, "
                   "which otherwise sharpens the policy; entropy is stabilised",
    notes="Archer2.0 code: ε 0.2 / 0.4 for low / high-entropy tokens, soft dual clip 3 on both signs, KL k3 0.001 "
          "on low-entropy tokens only, token-mean.",
    # toy: as Archer — β = 1e-3 is invisible at the toy's step size; 0.05 makes the KL half of ASPO act.
    toy_overrides={"kl.coef": 0.05},
))

register_method(Method(
    name="ce_gppo", title="CE-GPPO: gradient-preserving clipping", arxiv="2509.20712",
    sets={"clip": "ce_gppo"},
    entropy_effect="clipped tokens keep a β-scaled gradient: larger β₁ (negative, low-prob) speeds entropy decay, "
                   "larger β₂ (positive, low-prob) raises entropy; β₁ = 0.75 < β₂ = 1 avoids collapse",
    notes="ε 0.2/0.2, dual clip 10 (scripts), token-mean; the runs use DAPO dynamic sampling "
          "(build('ce_gppo', sampling='dynamic_sampling')). The 1.5B script uses β₁ = 0.5.",
))

register_method(Method(
    name="m2po", title="M2PO: second-moment trust policy optimization", arxiv="2510.01161",
    sets={"clip": "m2po"},
    entropy_effect="a stability device for stale data: bounding the second moment of log-ratios prevents entropy "
                   "spikes and collapse while clipping far fewer tokens than PPO",
    notes="τ_M2 = 0.04 over the harmful tokens (A·log r > 0); no clipping while M₂ ≤ τ_M2, else bounds from the "
          "exact τ with floors 0.3 / 0.5; no dual clip. Infini-AI-Lab/M2PO. Stateless by design: τ is solved from "
          "the current micro-batch alone (carrying it would let the bound lag the batch it constrains). Toy: at 2 "
          "epochs × 2 mini-batches M₂ stays under the budget, so M2PO is the unclipped surrogate (entropy below "
          "GRPO's); on stale data (32 updates per rollout) it prevents the unclipped collapse (+0.22 to +0.34 nats "
          "after one rollout) while clipping fewer tokens than GRPO.",
))

register_method(Method(
    name="espo", title="ESPO: entropy importance sampling policy optimization", arxiv="2512.00499",
    sets={"clip": "espo", "aggregation": "seq-mean-token-mean"},
    entropy_effect="wider trust regions for uncertain (high-entropy) token groups and tighter ones for confident "
                   "groups: a smoother, more stable entropy decay than GSPO/CISPO",
    evidence="approximate — no released code; two groups (top 20% old-policy entropy vs the rest) read from the "
             "ablation; sg[π_θ] in the token ratio (the paper writes sg[π_old])",
    notes="ε_τ = (α/log|V|)·mean entropy of the group, α = 0.02; set vocab_size to the tokenizer's (default Qwen3, "
          "151936). Group-weighted so that seq-mean-token-mean gives (1/G)Σ_i(1/K)Σ_τ(1/|τ|)Σ_t.",
    # toy: ε_τ = (α/log|V|)·H̄ with the toy's own vocabulary (8 actions), not Qwen3's 151936 tokens.
    toy_overrides={"clip.vocab_size": 8},
))

register_method(Method(
    name="erc", title="ERC: entropy ratio clipping", arxiv="2512.05591",
    sets={"clip": "erc"},
    entropy_effect="bidirectional: tokens whose update moved their local entropy by more than ±5% stop pushing, "
                   "damping both collapse and explosion",
    notes="DAPO dual-clip loss (0.2/0.28, c = 10) with the token's loss detached when H(π_θ)/H(π_old) ∉ (0.95, 1.05); "
          "needs old_entropy; acts off-policy only. The runs use DAPO dynamic sampling.",
))
