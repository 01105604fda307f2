"""Catalog entries of the sampling knob (issue 9, "Method catalog IV"): a controlled temperature, branching / tree
rollouts, expert-guided rollouts and a curriculum. Strategies live in ``knobs/sampling/trees.py`` on the branching
engine of ``generation/branching.py``; the advantages reading their extras in ``knobs/advantage/rollouts.py``.
``docs/methods-sampling.md`` has the formulas, defaults and where each rule fires. (The agentic ones, ARPO and
AEPO-Dong, are in ``catalog/sampling_agentic.py``.)
"""

from ..registry import Method, register_method

register_method(Method(
    name="aepo_wang", title="AEPO: arbitrary entropy policy optimisation (temperature control)", arxiv="2510.08141",
    sets={"sampling": "aepo_temperature", "advantage": "aepo_wang"},
    entropy_effect="holds entropy near H_target: REINFORCE on hotter (T 1.2) samples while entropy is low, "
                   "colder (T 0.8) ones while it is high",
    notes="Bang-bang T from the previous step's entropy (H_target 0.5, checkpointed); n extra rollouts for the first "
          "1/4 of the prompts; those with GRPO advantage > 0.05 replace the first S = 60 (S/2 when hot) rows with "
          "advantage 1. Paper runs: KL off, lr 1e-6, n = 5.",
))
register_method(Method(
    name="treerl", title="TreeRL: on-policy tree search with EPTree", arxiv="2506.11902",
    sets={"sampling": "eptree", "advantage": "treerl"},
    entropy_effect="no explicit regulariser: spends samples at uncertain forks, better exploration / pass@k than "
                   "chain sampling at equal tokens",
    notes="M = 6 roots, N = 2 forks at the highest-surprisal tokens, T = 2 branches, L = 1 (30 leaves per prompt); "
          "advantage (GA + LA)/√|L(n)| per node over RLOO-normalised leaf scores. The script samples at "
          "rollout.temperature = 1.2, top_p = 0.95.",
))
register_method(Method(
    name="fr3e", title="FR3E: first return, entropy-eliciting explore", arxiv="2507.07017",
    sets={"sampling": "fr3e", "advantage": "fr3e",
          "clip": {"name": "clip_higher", "eps_low": 0.22, "eps_high": 0.28}},
    entropy_effect="higher, more stable entropy than GRPO++: rollouts restart from high-entropy states",
    evidence="approximate — K (states) and M (rollouts per state) are not reported (2 and 4 here); the form of the "
             "value-change factor α_j was not found (ours: clip(1 − λΔV, 1 ± λ), λ = 0.5); clip [0.22, 0.28] is "
             "from reviews",
    notes="Base trajectories grouped per prompt; M continuations from each of the top-K entropy prefixes of the "
          "first base, one group per state; tied groups dropped.",
))
register_method(Method(
    name="ettrl", title="ETTRL: entropy-fork tree majority rollout + advantage reshaping", arxiv="2508.11356",
    sets={"sampling": "etmr", "advantage": "ettrl_ear"},
    entropy_effect="more diverse rollouts at a fixed budget; EAR damps over-confident early updates against "
                   "premature collapse",
    evidence="approximate — formulas from a survey note (no code); M trees default to rollout.n and the Adv-Clip β "
             "was not found",
    notes="N = 3 entropy forks × B = 2 branches per tree: M(1 + B·N) leaves. Test-time RL: run with "
          "data.reward_source=majority_vote (all leaves of a prompt vote for the pseudo-label).",
))
register_method(Method(
    name="adr", title="ADR: entropy-guided dynamic branch rollout (EDR)", arxiv="2510.10207",
    sets={"sampling": "edr"},
    entropy_effect="adds breadth where entropy rises at easy→hard transitions",
    evidence="approximate — only the EDR rollout (branch with probability α + ΔH at transitions, α = 0.5); "
             "ΔH's normalisation is a reading, the SFT cold start with <easy>/<hard> units and the EHPO reward "
             "(R_unit, R_mode; β not found) are not implemented",
    notes="Transitions = the step after a <hard> tag or a reflection keyword (Wait, However, Alternatively).",
))
register_method(Method(
    name="cure", title="CURE: critical-token re-concatenation (stage 1)", arxiv="2508.11016",
    sets={"sampling": "cure", "clip": {"name": "clip_higher", "dual_clip": 10.0}},
    entropy_effect="prevents entropy collapse in stage 1 by re-rolling from high-entropy critical tokens",
    notes="n1 = 4 (rollout.n) + n1·n2 = 12 continuations from q ⊕ o_<k, k drawn from the top-20 entropy tokens; "
          "the prefix is not trained; DAPO clip 0.2/0.28 (clip_ratio_c 10) and dynamic sampling, token-mean. Stage 2: --method dapo "
          "from the stage-1 checkpoint.",
))
register_method(Method(
    name="entropy_curriculum", title="SENT: semantic-entropy curriculum", arxiv="2512.04359",
    sets={"sampling": "semantic_entropy_curriculum"},
    entropy_effect="early training on low-semantic-entropy prompts; high-entropy prompts come in later stages",
    evidence="approximate — SENT's formulas and sizes were not recovered (abstract, README, script names): "
             "semantic entropy from 4 answers clustered by equivalence, ordered per pool of 64 prompts in 2 stages; "
             "its low-entropy-token KL part is not in this preset (compose a KL method)",
))
register_method(Method(
    name="mentor", title="MENTOR: expert guidance only at high-entropy tokens", arxiv="2510.04140",
    sets={"sampling": "mentor", "advantage": "mentor"},
    entropy_effect="slows entropy collapse relative to on-policy RL: the expert diversifies uncertain steps only",
    evidence="approximate — π_mix is sampled token by token instead of the paper's speculative sampler (same "
             "distribution); α's linear decay and R_range (over all of a prompt's rollouts) are readings",
    notes="Needs model.expert (same vocabulary). N₂ = 4 mixed rollouts per prompt besides rollout.n on-policy ones; "
          "w_t = min(1, H_t/γ₀.₉₅); mixed rows rewarded only above the on-policy mean.",
))
