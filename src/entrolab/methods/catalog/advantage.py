"""Catalog entries of the advantage knob (issue 6, "Method catalog I"): entropy-shaped advantages, semantic-entropy
and label-free rewards. Components live in ``knobs/advantage/entropy.py`` and compute the extras they read themselves,
from the engine's primitives (``knobs/extras.py``). ``docs/methods-advantage.md`` has formulas, readings and toy numbers.

Any method runs label-free in ``entrolab train`` with ``data.reward_source=majority_vote`` (TTRL-style pseudo-labels);
EMPO and EM-RL are label-free by construction.
"""

from ..registry import Method, register_method

register_method(Method(
    name="entropy_advantage", title="Entropy-based advantage shaping (Reasoning with Exploration)", arxiv="2506.14758",
    sets={"advantage": "entropy_advantage"},
    entropy_effect="promotes exploration (longer reasoning, higher Pass@K): high-entropy tokens of correct responses "
                   "get more credit, of wrong ones less blame; self-limiting as entropy falls",
    notes="Â = A + min(α·sg(H), |A|/κ), α = 0.4 (GRPO; 0.1 with PPO), κ = 2 (third-party verl config). H is the "
          "rollout policy's entropy (the paper reads it in the loss pass: equal on the first mini-batch). The paper "
          "also uses clip-higher: compose with dapo's clip, e.g. [entropy_advantage, clip_cov] or clip=clip_higher.",
))

register_method(Method(
    name="rl_zvp", title="RL-ZVP: entropy-shaped advantages for zero-variance prompts", arxiv="2509.21880",
    sets={"advantage": "rl_zvp"},
    entropy_effect="all-correct groups push high-entropy forks, all-wrong groups punish confident tokens hardest; "
                   "lower entropy than GRPO without collapse in the paper",
    notes="GRPO where rewards vary; on a zero-variance group α·H (all correct) or −α·(max_t H − H) (all wrong), "
          "α = 0.1. Paper setting: clip 0.2/0.28, token-mean, no KL, replaces dynamic sampling.",
))

register_method(Method(
    name="empo", title="EMPO: semantic-entropy-minimising rewards (label-free)", arxiv="2504.05812",
    sets={"advantage": "empo", "aggregation": "seq-mean-token-mean"},
    entropy_effect="lowers entropy by design: the frequency of the response's answer cluster is its reward, so the "
                   "answer distribution concentrates",
    notes="Answers clustered per prompt (math-verify; equivalence=embedding uses the packaged MiniLM); r = p(own "
          "cluster) if H_sem < log G and an answer exists, else 0; GRPO with ε = 1e-4; seq-mean-token-mean loss, "
          "β = 0 (TRL code). Needs no labels: the verifier only feeds reward/accuracy.",
))

register_method(Method(
    name="entropy_position", title="Perplexity- and position-based advantage shaping", arxiv="2508.02260",
    sets={"advantage": "entropy_position"},
    entropy_effect="focuses updates on low-perplexity responses and late tokens, where plateau-stage learning "
                   "concentrates; meant to spend entropy more slowly",
    evidence="approximate — no code and no formulas retrieved; Â = A·max(0, 1 − α·z(log PPL)) + β·sign(A)·(t+1)/len(o) "
             "with α = β = 0.1 is our reading of the paper's two shapings",
    notes="variant=ppl or variant=position selects one of the two shapings (default both).",
))

register_method(Method(
    name="pear", title="PEAR: phase-entropy-aware reward", arxiv="2510.08026",
    sets={"advantage": "pear"},
    entropy_effect="lowers thinking-phase entropy (and length) while keeping answer-phase entropy",
    evidence="approximate — formula from a third-party digest; s and r_fmt not found (s = 1, r_fmt = the engine's "
             "reward of the wrong response)",
    notes="P = max(0, H̄_think − α·H̄_answer), α = 1; r = min(1, s − P) if correct; GRPO. The engine splits at "
          "phase_marker (default </think>; '</think>|\\boxed' for models without think tags).",
))

register_method(Method(
    name="empg", title="EMPG: entropy-modulated step gradients with a future-clarity bonus", arxiv="2509.09265",
    sets={"advantage": "empg"},
    entropy_effect="amplifies confident steps' credit and blame, attenuates uncertain ones, rewards steps leading "
                   "to low-entropy states: net entropy-reducing, stabilising",
    evidence="approximate — k, k′, ζ not found (1, 1, 0.05 are ours); steps are delimiter-split segments of one "
             "response, not the paper's agent turns",
    notes="A_mod = A·exp(−k·H_norm)/mean + ζ·exp(−k′·H_norm,next), re-centred over the batch's steps. Steps split at "
          "step_delimiter (default a blank line). Multi-turn agent environments are not implemented.",
))

register_method(Method(
    name="em_rl", title="EM-RL: negative entropy as the only reward (label-free)", arxiv="2505.15134",
    sets={"advantage": "em_rl"},
    entropy_effect="lowers entropy by design (unsupervised sharpening)",
    notes="REINFORCE-RLOO on r = −Σ_t H_t (variant=token) or r = Σ_t log π (variant=sequence); rewards unused. "
          "EM-FT, the paper's direct entropy-minimisation fine-tuning, is the em_ft entry.",
))

register_method(Method(
    name="em_ft", title="EM-FT: direct token-entropy minimisation on self-sampled outputs", arxiv="2505.15134",
    sets={"objective": [{"name": "entropy_minimization"}], "aggregation": "seq-mean-token-mean"},
    entropy_effect="lowers entropy by design (unsupervised sharpening)",
    notes="Minimises (1/N) Σ_i (1/|y_i|) Σ_t H_t: the entropy_minimization term (which replaces the policy-gradient "
          "loss) under seq-mean-token-mean. Training settings (N, lr, steps) were not found.",
    toy_overrides={"objective.0.coef": 0.2},
))

register_method(Method(
    name="seed_grpo", title="SEED-GRPO: semantic-entropy-scaled advantages", arxiv="2505.12346",
    sets={"advantage": "seed_grpo"},
    entropy_effect="smaller updates on semantically uncertain prompts, larger on confident ones; effect on token "
                   "entropy indirect",
    evidence="approximate — the paper leaves the scaling f open; the default Â = A/(1 + α·SE/log G), α = 0.0417, "
             "is the reference implementation as a third party reports it (official code not found)",
    notes="A = r − r̄ (Dr. GRPO); SE(q) = −(1/K) Σ_k log Σ_{o∈C_k} π_old(o|q) over the answer clusters. "
          "form=linear|exponential are the paper's Eq. 6 readings (α = 0.02 there).",
))

register_method(Method(
    name="edge_grpo", title="EDGE-GRPO: entropy-driven advantage + guided error correction", arxiv="2507.21848",
    sets={"advantage": "edge_grpo", "sampling": "edge_gec"},
    entropy_effect="confident (low-entropy) responses get larger advantages, uncertain ones smaller; GEC diversifies "
                   "groups; the paper reports maintained entropy",
    evidence="approximate — P_i carries no gradient; GEC's worked-solution half injects the gold answer instead (our "
             "tasks have no solutions); the wrong prefix of a rewritten response is context, not trained (the code "
             "trains it); no 256-token prompt guard, continuation budget = rollout.max_new_tokens (code 256)",
    notes="EDA: Â = A/(P/mean_batch P), P the mean token entropy of the response; GRPO with ε = 1e-4, β = 0, G = 8 "
          "(code). GEC (edge_gec): each wrong response, with p 0.5, gets \" Wait! Something is wrong here.\" and a "
          "new continuation, else \"...the correct answer is \\boxed{gt}.\" + EOS; injected text trained "
          "(train_injected).",
))

register_method(Method(
    name="ucas", title="UCAS: uncertainty-aware advantage shaping", arxiv="2510.10649",
    sets={"advantage": "ucas"},
    entropy_effect="sustains generation entropy: amplifies correct-but-uncertain, punishes wrong-but-confident "
                   "responses and over-confident tokens",
    notes="Self-certainty c = logsumexp(z) − mean z per token (engine extra), response z-score Ĉ; m = exp(−0.25·Ĉ) "
          "for A > 0, exp(0.35·Ĉ) otherwise; minus 0.05·minmax(sampled logit); positive trajectories never flip. "
          "Code setting: n = 16, KL loss 0.001 (compose a KL method to add it).",
))

register_method(Method(
    name="acpo", title="ACPO: attribution-based step contribution", arxiv="2510.08899",
    sets={"advantage": "acpo"},
    entropy_effect="credits the steps that resolve uncertainty; the paper claims it mitigates premature entropy "
                   "collapse",
    evidence="approximate — abstract only: step attribution = entropy resolved by the step (a mutual-information "
             "surrogate of ours), β = 0.5; the curriculum and the factorised reward of stage 2 are not implemented",
    notes="Â = A·((1 − β) + β·K·ã_k), ã_k = max(0, H̄_k − H̄_{k+1}) normalised over the response's K steps; steps "
          "split at step_delimiter like EMPG.",
))

register_method(Method(
    name="canon", title="CANON: conditional advantages over entropy-split halves", arxiv="2509.23962",
    sets={"advantage": "canon", "aggregation": "seq-mean-token-sum-norm"},
    entropy_effect="no fixed direction: the data decide whether high- or low-entropy responses are favoured",
    notes="Each group split at the median of the mean token entropy; μ = 1 compares each response with the other "
          "half's mean reward (α = 1, β = 0; code). /L_max + seq-mean-token-sum = seq-mean-token-sum-norm "
          "(norm_length, the trainer's generation budget). mu_schedule=accuracy anneals μ to the batch accuracy.",
))

register_method(Method(
    name="qae", title="QAE: quantile advantage estimation", arxiv="2509.22611",
    sets={"advantage": "qae"},
    entropy_effect="two-sided entropy safety: most responses get zero advantage, so neither explosion nor collapse",
    notes="Baseline = the group's K-quantile (K = 0.4; 0.6 against early collapse), std-normalised. Built on the "
          "DAPO recipe: compose with clip-higher, e.g. build('qae', clip='clip_higher').",
))

register_method(Method(
    name="adathink_med", title="AdaThink-Med: uncertainty-guided length calibration", arxiv="2509.24560",
    sets={"advantage": "adathink_med"},
    entropy_effect="entropy as a length controller: confident easy answers get shorter, uncertain hard ones longer",
    notes="Uncertainty = mean of the top-20% token entropies; EMA(0.9) difficulty threshold (0.7-quantile) and "
          "expected lengths per bin, checkpointed; R + 0.5·(length score + repetition penalty) → GRPO (code). "
          "The paper starts from a GRPO checkpoint.",
))

register_method(Method(
    name="less", title="LESS: low-entropy segment shaping", arxiv="2512.00908",
    sets={"advantage": "less"},
    entropy_effect="leaves high-entropy exploration tokens untouched; amplifies low-entropy patterns unique to "
                   "correct answers, suppresses those unique to errors, neutralises shared ones",
    notes="Low-entropy tokens (≤ 0.8-quantile of the response) weighted 1/N_correct or 1/N_wrong; shared runs of "
          "≥ 5 such tokens (exact token containment across the group) get 0, k_c/N_c or k_w/N_w (code).",
    toy_overrides={"advantage.min_len": 2},  # the toy's responses are 4 tokens long
))
